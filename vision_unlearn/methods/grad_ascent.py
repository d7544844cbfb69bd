"""Gradient ascent (GA) on the forget set.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P 2022
(arXiv 2109.13398); Graves et al., "Amnesiac Machine Learning", AAAI 2021.

What is ascended is the adapter's choice (:func:`forget_ascent_loss`): a classifier's training
loss (the cross-entropy, unbounded), or the bounded objective a detector adapter defines.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


def forget_ascent_loss(adapter: ModelAdapter, batch: Batch) -> Tensor:
    """The scalar an ascent method raises on a forget batch.

    An adapter that defines ``ascent_loss(batch) -> {"loss": Tensor, ...}`` decides it (the YOLO
    adapter: the classification term of each forget box's class on the anchors answering for the
    box, clamped so it is bounded, see :func:`vision_unlearn.adapters.yolo.bounded_class_ascent`);
    otherwise it is the adapter's training loss ``adapter.loss(batch)["loss"]`` (a classifier's
    cross-entropy).
    """
    bounded = getattr(adapter, "ascent_loss", None)
    if bounded is not None:
        return bounded(batch)["loss"]
    return adapter.loss(batch)["loss"]


@dataclass(frozen=True)
class GradAscentConfig(MethodConfig):
    """Gradient-ascent settings; a classifier's cross-entropy is unbounded, so keep ``lr`` and
    ``epochs`` small (a detector's ascent objective is bounded)."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32


@register_unlearner("grad_ascent")
class GradAscent(BaseUnlearner):
    """``min_θ −L_forget(θ)`` with ``L_forget`` from :func:`forget_ascent_loss`.

    What "forget" means:

    * classifier: raise the cross-entropy of the forget samples' labels;
    * detector: lower the score of each forget box's class on the anchors that answer for the box
      (centres inside it, and the cell holding its centre on each pyramid level), by raising the
      clamped term ``min(−log σ(z), −log τ)``; an anchor stops once its score is below ``τ``
      (``YoloModelSpec.forget_floor_prob``). Background anchors, other classes and the box
      regression are not ascended, so the retain classes are not driven into false detections.
    """

    config_class = GradAscentConfig
    epoch_over = "forget"
    needs = frozenset({"forget"})

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None
        forget_loss = forget_ascent_loss(adapter, forget)
        return StepOutput(loss=-forget_loss, logs={"forget_ce": float(forget_loss.detach())})

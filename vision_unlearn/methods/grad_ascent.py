"""Gradient ascent (GA) on the forget set.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P 2022
(arXiv 2109.13398); Graves et al., "Amnesiac Machine Learning", AAAI 2021.

What is ascended is the adapter's choice (:func:`forget_ascent_loss`): a classifier's training
loss (the cross-entropy, unbounded), or the bounded objective a detector adapter defines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor

from rfo_bench.errors import UserInputError
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner

HELDOUT = "heldout"
"""Config value of ``forget_loss_ceiling`` that the harness replaces by a number measured on held-out data
(:func:`resolve_loss_ceiling`)."""

LossCeiling = float | Literal["heldout"] | None


def forget_ascent_loss(adapter: ModelAdapter, batch: Batch, ceiling: LossCeiling = None) -> Tensor:
    """The scalar an ascent method raises on a forget batch.

    Without a ceiling: an adapter that defines ``ascent_loss(batch) -> {"loss": Tensor, ...}``
    decides it (the YOLO adapter: the classification term of each forget box's class on the anchors
    answering for the box, clamped so it is bounded, see
    :func:`vision_unlearn.adapters.yolo.bounded_class_ascent`); otherwise it is the adapter's
    training loss ``adapter.loss(batch)["loss"]`` (a classifier's cross-entropy).

    With a ceiling ``c``: the mean over samples of ``min(L_i, c)``, ``L_i`` the adapter's full
    per-sample training loss (every box, the background and the box regression of a detector). A
    sample stops being ascended once its loss reaches ``c``; with ``c`` the loss the model shows on
    data it never saw, the forget samples end up looking like non-members to a loss-based
    membership attack instead of being pushed past them (which an attack also notices, and which
    costs the classes the forget samples hold). Made for sample requests (images, patients); a
    class request wants the class gone, not its samples at a held-out loss.

    Raises:
        UserInputError: the ceiling is still ``"heldout"`` (no held-out data resolved it).
    """
    if ceiling is not None:
        if isinstance(ceiling, str):
            raise UserInputError("forget_loss_ceiling='heldout' needs held-out data to measure the loss of "
                                 "non-members (detectors: --heldout-data)", field="forget_loss_ceiling",
                                 value=ceiling)
        per_sample = adapter.loss(batch).get("per_sample")
        if per_sample is None:
            raise UserInputError("forget_loss_ceiling needs per-sample losses from the adapter",
                                 field="forget_loss_ceiling", value=ceiling)
        return per_sample.clamp(max=float(ceiling)).mean()
    bounded = getattr(adapter, "ascent_loss", None)
    if bounded is not None:
        return bounded(batch)["loss"]
    return adapter.loss(batch)["loss"]


def check_loss_ceiling(ceiling: LossCeiling) -> None:
    if isinstance(ceiling, (int, float)) and not (ceiling > 0 and ceiling < float("inf")):
        raise ValueError(f"forget_loss_ceiling must be a positive finite loss, got {ceiling}")


@dataclass(frozen=True)
class GradAscentConfig(MethodConfig):
    """Gradient-ascent settings; a classifier's cross-entropy is unbounded, so keep ``lr`` and
    ``epochs`` small (a detector's ascent objective is bounded).

    Attributes:
        forget_loss_ceiling: ``None``; or a per-sample loss at which ascent stops (see
            :func:`forget_ascent_loss`); ``"heldout"``: the median per-sample loss of the model
            before unlearning on held-out data, measured by the harness when held-out data is given.
    """

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    forget_loss_ceiling: LossCeiling = None

    def __post_init__(self) -> None:
        check_loss_ceiling(self.forget_loss_ceiling)


@register_unlearner("grad_ascent")
class GradAscent(BaseUnlearner):
    """``min_θ −L_forget(θ)`` with ``L_forget`` from :func:`forget_ascent_loss`.

    What "forget" means:

    * classifier: raise the cross-entropy of the forget samples' labels;
    * detector: lower the score of each forget box's class on the anchors that answer for the box
      (centres inside it, and the cell holding its centre on each pyramid level), by raising the
      clamped term ``min(−log σ(z), −log τ)``; an anchor stops once its score is below ``τ``
      (``YoloModelSpec.forget_floor_prob``). Background anchors, other classes and the box
      regression are not ascended, so the retain classes are not driven into false detections;
    * with ``forget_loss_ceiling`` (either model): raise each forget sample's full training loss up to
      the ceiling and no further.
    """

    config_class = GradAscentConfig
    epoch_over = "forget"
    needs = frozenset({"forget"})

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None
        cfg: GradAscentConfig = self.config  # type: ignore[assignment]
        forget_loss = forget_ascent_loss(adapter, forget, cfg.forget_loss_ceiling)
        return StepOutput(loss=-forget_loss, logs={"forget_ce": float(forget_loss.detach())})

"""Gradient ascent (GA) on the forget set.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P 2022
(arXiv 2109.13398); Graves et al., "Amnesiac Machine Learning", AAAI 2021.

What is ascended is the adapter's choice (:func:`~vision_unlearn.loss_ceiling.forget_ascent_loss`): a
classifier's training loss (the cross-entropy, unbounded), or the bounded objective a detector
adapter defines.
"""

from __future__ import annotations

from dataclasses import dataclass

from vision_unlearn.loss_ceiling import (
    HELDOUT,
    HELDOUT_MODES,
    HELDOUT_QUANTILES,
    QUANTILE_LEVELS,
    CeilingMixin,
    CeilingValue,
    HeldoutCeiling,
    LossCeiling,
    check_loss_ceiling,
    forget_ascent_loss,
    rank_matched_ceilings,
)
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner

__all__ = [
    "HELDOUT",
    "HELDOUT_MODES",
    "HELDOUT_QUANTILES",
    "QUANTILE_LEVELS",
    "CeilingMixin",
    "CeilingValue",
    "GradAscent",
    "GradAscentConfig",
    "HeldoutCeiling",
    "LossCeiling",
    "check_loss_ceiling",
    "forget_ascent_loss",
    "rank_matched_ceilings",
]
"""The method, and (re-exported from :mod:`vision_unlearn.loss_ceiling`) the ceiling it shares."""


@dataclass(frozen=True)
class GradAscentConfig(MethodConfig):
    """Gradient-ascent settings; a classifier's cross-entropy is unbounded, so keep ``lr`` and
    ``epochs`` small (a detector's ascent objective is bounded).

    Attributes:
        forget_loss_ceiling: ``None``; or a per-sample loss at which ascent stops (see
            :func:`forget_ascent_loss`); ``"heldout"``: the current model's median per-sample loss
            on held-out samples (:class:`HeldoutCeiling`), which the harness attaches;
            ``"heldout_quantiles"``: per sample, the held-out loss quantile of its rank in the
            batch (:func:`rank_matched_ceilings`).
    """

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32
    forget_loss_ceiling: LossCeiling = None

    def __post_init__(self) -> None:
        check_loss_ceiling(self.forget_loss_ceiling)


@register_unlearner("grad_ascent")
class GradAscent(CeilingMixin, BaseUnlearner):
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
        forget_loss = forget_ascent_loss(adapter, forget, self.current_ceiling(adapter, state))
        return StepOutput(loss=-forget_loss, logs={"forget_ce": float(forget_loss.detach()), **self.ceiling_logs()})

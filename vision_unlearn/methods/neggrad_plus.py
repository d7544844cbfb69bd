"""NegGrad+: gradient descent on the retain set and ascent on the forget set, weighted.

Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (arXiv 2302.09880), Sec. 5.
"""

from __future__ import annotations

from dataclasses import dataclass

from vision_unlearn.loss_ceiling import CeilingMixin, LossCeiling, check_loss_ceiling, forget_ascent_loss
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class NegGradPlusConfig(MethodConfig):
    """Attributes:
    alpha: weight of the retain loss; ``1 − alpha`` weighs the negated forget loss.
    forget_loss_ceiling: as :class:`~vision_unlearn.methods.grad_ascent.GradAscentConfig`: ascent of
        a forget sample stops at this loss (``"heldout"``: the current model's median loss on held-out
        samples the harness attaches; ``"heldout_quantiles"``: the held-out loss quantile of the
        sample's rank in its batch).
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 32
    alpha: float = 0.9
    forget_loss_ceiling: LossCeiling = None

    def __post_init__(self) -> None:
        check_loss_ceiling(self.forget_loss_ceiling)
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")


@register_unlearner("neggrad_plus")
class NegGradPlus(CeilingMixin, BaseUnlearner):
    """``min_θ α·L_retain(θ) − (1 − α)·L_forget(θ)``.

    ``L_retain`` is the adapter's training loss on the retain stream; ``L_forget`` the ascent
    objective of :func:`~vision_unlearn.loss_ceiling.forget_ascent_loss`. What "forget"
    means:

    * classifier: raise the forget samples' cross-entropy while fitting the retain samples;
    * detector: lower each forget box's class score on the anchors answering for the box (bounded:
      an anchor stops below ``YoloModelSpec.forget_floor_prob``) while training the full detection
      loss on the retain stream, where, for class and instance requests, the forgotten objects are
      unlabelled and so taught as background;
    * with ``forget_loss_ceiling``: raise each forget sample's full training loss up to the ceiling
      (the loss of unseen data) while fitting the retain stream: a sample request (a patient's
      images) then leaves its images looking like unseen ones instead of erasing their classes.
    """

    config_class = NegGradPlusConfig
    epoch_over = "forget"
    needs = frozenset({"forget", "retain"})

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None and retain is not None
        cfg: NegGradPlusConfig = self.config  # type: ignore[assignment]
        retain_loss = adapter.loss(retain)["loss"]
        forget_loss = forget_ascent_loss(adapter, forget, self.current_ceiling(adapter, state))
        loss = cfg.alpha * retain_loss - (1.0 - cfg.alpha) * forget_loss
        return StepOutput(loss=loss, logs={"retain_ce": float(retain_loss.detach()),
                                           "forget_ce": float(forget_loss.detach()), **self.ceiling_logs()})

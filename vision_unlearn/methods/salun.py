"""SalUn: random-label unlearning restricted to the weights most salient for the forget set.

Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in Both Image
Classification and Generation", ICLR 2024 (arXiv 2310.12508), Eq. (6)-(7): the saliency map is
``m = 1[|∇_θ L_forget(θ_o)| ≥ γ]`` with ``γ`` the quantile keeping a share ``mask_ratio`` of the
weights (globally over the model), and random-label training updates only ``m ⊙ θ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.methods.random_label import relabelled_forget_loss
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class SalUnConfig(MethodConfig):
    """Attributes:
    mask_ratio: share of the weights (largest forget-gradient magnitude) that may change.
    retain_weight: weight of the retain cross-entropy.
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 32
    mask_ratio: float = 0.5
    retain_weight: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_ratio <= 1.0:
            raise ValueError(f"mask_ratio must lie in (0, 1], got {self.mask_ratio}")


def saliency_masks(gradients: list[Tensor], ratio: float) -> list[Tensor]:
    """Boolean masks keeping the ``ratio`` share of entries with the largest ``|gradient|`` (global).

    Args:
        gradients: one tensor per parameter.
        ratio: share of all entries to keep, in ``(0, 1]``.

    Returns:
        Masks with the shapes of ``gradients``; ties at a non-zero threshold are kept, zero
        gradients never are.
    """
    flat = torch.cat([g.detach().abs().flatten() for g in gradients])
    keep = max(1, round(ratio * flat.numel()))
    threshold = torch.topk(flat, keep, sorted=True).values[-1]
    # A weight with zero forget gradient is never salient, even when more than ``1 - ratio`` of the
    # gradients are exactly zero (dead ReLUs, zero-initialised residual branches).
    return [(g.detach().abs() >= threshold) & (g.detach() != 0) for g in gradients]


@register_unlearner("salun")
class SalUn(BaseUnlearner):
    """Random labels on the forget set + retain loss, with gradients masked by weight saliency."""

    config_class = SalUnConfig
    epoch_over = "forget"
    needs = frozenset({"forget", "retain"})

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self._masks: list[Tensor] = []
        self._table_size = 0

    def setup(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, device: torch.device) -> None:
        assert forget is not None
        self._table_size = int(forget["index"].max()) + 1
        params = [p for _, p in adapter.trainable_parameters()]
        model = adapter.model
        was_training = model.training
        model.eval()
        totals = [torch.zeros_like(p) for p in params]
        n = int(forget["labels"].shape[0])
        for start in range(0, n, 256):
            batch = {k: v[start:start + 256] for k, v in forget.items()}
            loss = adapter.loss(batch)["per_sample"].sum() / n
            for total, grad in zip(totals, torch.autograd.grad(loss, params, allow_unused=True)):
                if grad is not None:
                    total += grad
        model.train(was_training)
        cfg: SalUnConfig = self.config  # type: ignore[assignment]
        self._masks = saliency_masks(totals, cfg.mask_ratio)

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None and retain is not None
        cfg: SalUnConfig = self.config  # type: ignore[assignment]
        forget_loss = relabelled_forget_loss(adapter, forget, state, self._table_size)
        retain_loss = adapter.loss(retain)["loss"]
        return StepOutput(loss=forget_loss + cfg.retain_weight * retain_loss,
                          logs={"relabelled_ce": float(forget_loss.detach()), "retain_ce": float(retain_loss.detach())})

    def before_optimizer_step(self, adapter: ModelAdapter, state: StepState) -> None:
        for (_, param), mask in zip(adapter.trainable_parameters(), self._masks):
            if param.grad is not None:
                param.grad.mul_(mask)

    @property
    def masks(self) -> list[Tensor]:
        return self._masks

    def state_dict(self) -> dict[str, Any]:
        return {"masks": [m.cpu() for m in self._masks], "table_size": self._table_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "masks" in state:
            device = self._masks[0].device if self._masks else torch.device("cpu")
            self._masks = [m.to(device) for m in state["masks"]]
        self._table_size = int(state.get("table_size", self._table_size))

"""ℓ1-sparse unlearning: fine-tune on the retain set with a decaying ℓ1 penalty on the weights.

Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023 (arXiv 2304.04934),
Eq. (4): ``min_θ L_retain(θ) + γ_t ‖θ‖₁`` with ``γ_t`` decaying linearly to 0 over the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class L1SparseConfig(MethodConfig):
    """Attributes:
    gamma: initial ℓ1 weight ``γ_0`` (per parameter, summed over all trainable weights).
    """

    epochs: int = 3
    lr: float = 0.05
    gamma: float = 5e-5


@register_unlearner("l1_sparse")
class L1Sparse(BaseUnlearner):
    """``min_θ L_retain(θ) + γ_0 (1 − t/T) ‖θ‖₁``."""

    config_class = L1SparseConfig
    epoch_over = "retain"
    needs = frozenset({"retain"})

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert retain is not None
        cfg: L1SparseConfig = self.config  # type: ignore[assignment]
        retain_loss = adapter.loss(retain)["loss"]
        gamma = cfg.gamma * (1.0 - state.step / max(1, state.total_steps))
        l1 = torch.stack([p.abs().sum() for _, p in adapter.trainable_parameters()]).sum()
        return StepOutput(loss=retain_loss + gamma * l1, logs={"retain_ce": float(retain_loss.detach()),
                                                              "l1": float(l1.detach())})

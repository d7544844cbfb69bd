"""SCRUB: a student moves away from the original model (teacher) on the forget set and stays close
to it on the retain set.

Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (arXiv 2302.09880), Eq. (3):
``min_θ α/N_r Σ_r KL(t(x_r) ‖ s_θ(x_r)) + γ/N_r Σ_r ℓ(s_θ(x_r), y_r) − 1/N_f Σ_f KL(t(x_f) ‖ s_θ(x_f))``
optimised by alternating *max-steps* (forget KL ascent) and *min-steps* (retain KL + CE); max-steps
stop after ``max_epochs`` epochs. Here max- and min-steps alternate step by step.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from vision_unlearn.methods._base import BaseUnlearner, kl_divergence_logits
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class ScrubConfig(MethodConfig):
    """Attributes:
    alpha: weight of the retain KL to the teacher.
    gamma: weight of the retain cross-entropy.
    temperature: softmax temperature of the KL terms.
    max_epochs: epochs during which max-steps (forget KL ascent) are taken.
    """

    epochs: int = 10
    lr: float = 0.02
    batch_size: int = 32
    alpha: float = 1.0
    gamma: float = 1.0
    temperature: float = 4.0
    max_epochs: int = 5


@register_unlearner("scrub")
class Scrub(BaseUnlearner):
    """Alternating max-steps ``min −KL_forget`` and min-steps ``min α·KL_retain + γ·CE_retain``."""

    config_class = ScrubConfig
    epoch_over = "forget"
    needs = frozenset({"forget", "retain"})

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self._teacher: torch.nn.Module | None = None

    def setup(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, device: torch.device) -> None:
        teacher = copy.deepcopy(adapter.model).to(device).eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        self._teacher = teacher

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None and retain is not None and self._teacher is not None
        cfg: ScrubConfig = self.config  # type: ignore[assignment]
        max_step = state.epoch < cfg.max_epochs and state.step % 2 == 0
        batch = forget if max_step else retain
        with torch.no_grad():
            teacher_logits = self._teacher(batch["images"])
        out = adapter.loss(batch)
        kl = kl_divergence_logits(out["logits"], teacher_logits, cfg.temperature)
        if max_step:
            return StepOutput(loss=-kl, logs={"forget_kl": float(kl.detach())})
        loss = cfg.alpha * kl + cfg.gamma * out["loss"]
        return StepOutput(loss=loss, logs={"retain_kl": float(kl.detach()), "retain_ce": float(out["loss"].detach())})

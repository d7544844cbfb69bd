"""Gradient ascent (GA) on the forget set.

Thudi et al., "Unrolling SGD: Understanding Factors Influencing Machine Unlearning", EuroS&P 2022
(arXiv 2109.13398); Graves et al., "Amnesiac Machine Learning", AAAI 2021.
"""

from __future__ import annotations

from dataclasses import dataclass

from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class GradAscentConfig(MethodConfig):
    """Gradient-ascent settings; the cross-entropy is unbounded, so keep ``lr`` and ``epochs`` small."""

    epochs: int = 5
    lr: float = 1e-3
    batch_size: int = 32


@register_unlearner("grad_ascent")
class GradAscent(BaseUnlearner):
    """``min_θ −L_forget(θ)``."""

    config_class = GradAscentConfig
    epoch_over = "forget"
    needs = frozenset({"forget"})

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None
        forget_loss = adapter.loss(forget)["loss"]
        return StepOutput(loss=-forget_loss, logs={"forget_ce": float(forget_loss.detach())})

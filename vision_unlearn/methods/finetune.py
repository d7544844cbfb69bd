"""Fine-tuning (FT) on the retain set, relying on catastrophic forgetting of the forget set.

Warnecke et al., "Machine Unlearning of Features and Labels", NDSS 2023 (arXiv 2108.11577); used as
the FT baseline in Jia et al., NeurIPS 2023 and Fan et al. (SalUn), ICLR 2024.
"""

from __future__ import annotations

from dataclasses import dataclass

from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class FinetuneConfig(MethodConfig):
    """Fine-tuning settings: a few epochs at a moderate learning rate."""

    epochs: int = 3
    lr: float = 0.05


@register_unlearner("finetune")
class Finetune(BaseUnlearner):
    """``min_θ L_retain(θ)`` starting from the original weights."""

    config_class = FinetuneConfig
    epoch_over = "retain"
    needs = frozenset({"retain"})

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert retain is not None
        return StepOutput(loss=adapter.loss(retain)["loss"])

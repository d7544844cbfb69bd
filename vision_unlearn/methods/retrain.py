"""Retrain from scratch on the retain set: the gold standard every method is measured against.

The weights are re-initialised (seeded) and trained on the retain set only, with a long schedule
(cosine decay) as in the standard CIFAR protocol of Jia et al., "Model Sparsity Can Simplify Machine
Unlearning", NeurIPS 2023 (arXiv 2304.04934). Its wall-clock time is the denominator of every
method's cost ratio, so its schedule length is part of the recorded config.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class RetrainConfig(MethodConfig):
    """Retrain settings (same fields as the original training).

    Attributes:
        init: ``fresh`` re-initialises the weights (seeded) before training: the reference trained from
            scratch without the data. ``current`` trains from the adapter's weights as they are: the
            reference of a model fine-tuned from a pretrained start that never saw the data (load that
            start into the adapter first), trained with the original's fine-tuning on the retained data.
    """

    epochs: int = 160
    lr: float = 0.1
    batch_size: int = 128
    schedule: Literal["constant", "cosine"] = "cosine"
    init: Literal["fresh", "current"] = "fresh"


@register_unlearner("retrain")
class Retrain(BaseUnlearner):
    """Train on the retain set, ``min_θ L_retain(θ)``, from a fresh initialisation (``init: fresh``) or from the
    adapter's current weights (``init: current``, a pretrained start)."""

    config_class = RetrainConfig
    epoch_over = "retain"
    needs = frozenset({"retain"})
    from_scratch = True

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert retain is not None
        return StepOutput(loss=adapter.loss(retain)["loss"])

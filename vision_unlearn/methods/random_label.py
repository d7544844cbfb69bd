"""Random labelling (RL): fine-tune with the forget samples relabelled at random, plus the retain set.

Golatkar et al., "Eternal Sunshine of the Spotless Net", CVPR 2020 (arXiv 1911.04933); in the form
used as the RL baseline by Fan et al., "SalUn", ICLR 2024 (arXiv 2310.12508).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from vision_unlearn.methods._base import BaseUnlearner, random_other_labels
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class RandomLabelConfig(MethodConfig):
    """Attributes:
    retain_weight: weight of the retain cross-entropy added to the relabelled forget loss.
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 32
    retain_weight: float = 1.0


def relabelled_forget_loss(adapter: ModelAdapter, forget: Batch, state: StepState, table_size: int) -> torch.Tensor:
    """Cross-entropy of the forget batch against random labels different from the true ones."""
    labels = random_other_labels(forget["labels"], forget["index"], adapter.num_classes, state.generator,
                                 table_size)
    return adapter.loss({**forget, "labels": labels})["loss"]


@register_unlearner("random_label")
class RandomLabel(BaseUnlearner):
    """``min_θ L(θ; D_f with random labels) + λ·L_retain(θ)``."""

    config_class = RandomLabelConfig
    epoch_over = "forget"
    needs = frozenset({"forget", "retain"})

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self._table_size = 0

    def setup(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, device: torch.device) -> None:
        assert forget is not None
        self._table_size = int(forget["index"].max()) + 1

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None and retain is not None
        cfg: RandomLabelConfig = self.config  # type: ignore[assignment]
        forget_loss = relabelled_forget_loss(adapter, forget, state, self._table_size)
        retain_loss = adapter.loss(retain)["loss"]
        return StepOutput(loss=forget_loss + cfg.retain_weight * retain_loss,
                          logs={"relabelled_ce": float(forget_loss.detach()), "retain_ce": float(retain_loss.detach())})

    def state_dict(self) -> dict[str, Any]:
        return {"table_size": self._table_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._table_size = int(state.get("table_size", self._table_size))

"""SCRUB: a student moves away from the original model (teacher) on the forget set and stays close
to it on the retain set.

Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023 (arXiv 2302.09880), Eq. (3):
``min_θ α/N_r Σ_r KL(t(x_r) ‖ s_θ(x_r)) + γ/N_r Σ_r ℓ(s_θ(x_r), y_r) − 1/N_f Σ_f KL(t(x_f) ‖ s_θ(x_f))``
optimised by alternating *max-steps* (forget KL ascent) and *min-steps* (retain KL + CE); max-steps
stop after ``max_epochs`` epochs. Here max- and min-steps alternate step by step.

Which divergence is distilled is the adapter's choice (:func:`distillation_divergence`): the KL of
a classifier's softmax outputs, or the per-anchor divergence a detector adapter defines.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from vision_unlearn.methods._base import BaseUnlearner, kl_divergence_logits
from vision_unlearn.protocols import (
    Batch,
    DistillationAdapter,
    ForgetOnlyClassesAdapter,
    MethodConfig,
    ModelAdapter,
    StepOutput,
    StepState,
)
from vision_unlearn.registry import register_unlearner


def distillation_divergence(adapter: ModelAdapter, batch: Batch, student: Mapping[str, Tensor],
                            teacher: torch.nn.Module, temperature: float, side: Literal["forget", "retain"],
                            suppressed_classes: tuple[int, ...] = ()) -> Tensor:
    """``KL(teacher ‖ student)`` on one batch, as the adapter defines it.

    An adapter with the capability :class:`~vision_unlearn.protocols.DistillationAdapter`
    (``distillation_loss(batch, student, teacher, temperature, side, suppressed_classes)``) decides
    (the YOLO adapter: class scores and box distributions of every anchor on the retain side, the
    bounded one-sided class divergence on the forget boxes' anchors on the forget side); otherwise it
    is the KL of the softened ``[B, K]`` logits, the same on both sides.

    Args:
        adapter: the student's adapter.
        batch: the batch ``student`` was computed on.
        student: ``adapter.loss(batch)``.
        teacher: the frozen original model.
        temperature: softening temperature.
        side: ``"forget"`` (max-step) or ``"retain"`` (min-step).
        suppressed_classes: classes forgotten entirely (detectors: the teacher is made not to see them
            on retain images, where those objects are unlabelled background).
    """
    if isinstance(adapter, DistillationAdapter):
        return adapter.distillation_loss(batch, dict(student), teacher, temperature, side, suppressed_classes)
    with torch.no_grad():
        teacher_logits = teacher(batch["images"])
    return kl_divergence_logits(student["logits"], teacher_logits, temperature)


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
    """Alternating max-steps ``min −KL_forget`` and min-steps ``min α·KL_retain + γ·CE_retain``.

    What "forget" means:

    * classifier: the student's softmax on forget samples moves away from the teacher's, and stays
      on it for retain samples;
    * detector: distillation is per anchor, not per image. Min-steps match the teacher's class
      scores on every anchor and its DFL box distributions (weighted by the teacher's object score)
      on the retain images, plus the retain detection loss; the teacher's scores of classes that
      only the forget stream holds are replaced by background first, so a class request is not
      distilled back from retain images that still show the objects. Max-steps lower the student's
      score of each forget box's class on the anchors answering for the box, below the teacher's
      and down to ``YoloModelSpec.forget_floor_prob`` (bounded); other classes and boxes are not
      pushed away, which would create false detections.
    """

    config_class = ScrubConfig
    epoch_over = "forget"
    needs = frozenset({"forget", "retain"})

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self._teacher: torch.nn.Module | None = None
        self._suppressed: tuple[int, ...] = ()

    def setup(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, device: torch.device) -> None:
        teacher = copy.deepcopy(adapter.model).to(device).eval()
        for param in teacher.parameters():
            param.requires_grad_(False)
        self._teacher = teacher
        self._suppressed = tuple(adapter.forget_only_classes(forget, retain)) \
            if isinstance(adapter, ForgetOnlyClassesAdapter) and forget is not None and retain is not None else ()

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None and retain is not None and self._teacher is not None
        cfg: ScrubConfig = self.config  # type: ignore[assignment]
        max_step = state.epoch < cfg.max_epochs and state.step % 2 == 0
        batch = forget if max_step else retain
        out = adapter.loss(batch)
        kl = distillation_divergence(adapter, batch, out, self._teacher, cfg.temperature,
                                     "forget" if max_step else "retain", self._suppressed)
        if max_step:
            return StepOutput(loss=-kl, logs={"forget_kl": float(kl.detach())})
        loss = cfg.alpha * kl + cfg.gamma * out["loss"]
        return StepOutput(loss=loss, logs={"retain_kl": float(kl.detach()), "retain_ce": float(out["loss"].detach())})

    def state_dict(self) -> dict[str, Any]:
        return {"suppressed_classes": list(self._suppressed)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._suppressed = tuple(int(c) for c in state.get("suppressed_classes", self._suppressed))

"""Shared defaults for methods and small loss helpers they reuse (pure tensor functions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState, StreamName


class BaseUnlearner:
    """Default implementations of the optional parts of :class:`~vision_unlearn.protocols.Unlearner`.

    Subclasses set the class attributes and implement :meth:`compute_loss` (or :meth:`owned_step`).
    """

    name: ClassVar[str] = ""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    epoch_over: ClassVar[StreamName] = "forget"
    needs: ClassVar[frozenset[str]] = frozenset({"forget"})
    owns_step: ClassVar[bool] = False
    from_scratch: ClassVar[bool] = False

    def __init__(self, config: MethodConfig) -> None:
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} expects {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def setup(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, device: torch.device) -> None:
        return None

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        raise NotImplementedError

    def before_optimizer_step(self, adapter: ModelAdapter, state: StepState) -> None:
        return None

    def owned_step(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                   state: StepState) -> StepOutput:
        raise NotImplementedError(f"{self.name} does not own its step")

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def random_other_labels(labels: Tensor, index: Tensor, num_classes: int, generator: torch.Generator,
                        table_size: int) -> Tensor:
    """A random label different from the true one for every sample, drawn reproducibly.

    One offset in ``[1, K)`` is drawn per dataset row (``table_size`` rows) from ``generator``, so
    the label of a row does not depend on how the batch was sharded across processes.

    Args:
        labels: ``int64 [B]`` true labels.
        index: ``int64 [B]`` dataset rows of the samples (``< table_size``).
        num_classes: ``K``.
        generator: CPU generator advanced by one draw of ``table_size`` numbers per call.
        table_size: number of rows the indices refer to.

    Returns:
        ``int64 [B]`` labels, ``(labels + offset) % K`` with ``offset`` in ``[1, K)``.
    """
    offsets = torch.randint(1, num_classes, (table_size,), generator=generator)
    return (labels + offsets[index.cpu()].to(labels.device)) % num_classes


def kl_divergence_logits(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Mean over the batch of ``KL(teacher || student)`` on temperature-softened ``[B, K]`` logits."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)


def log_one_minus_p_true(logits: Tensor, labels: Tensor) -> Tensor:
    """``log(1 - p_y)`` per sample, computed stably as ``logsumexp_{j != y} z_j - logsumexp_j z_j``.

    Bounded above by 0; its gradient with respect to the logits has norm at most ``sqrt(2)``.

    Args:
        logits: ``[B, K]``.
        labels: ``int64 [B]``.

    Returns:
        ``[B]`` values in ``(-inf, 0]``.
    """
    masked = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return torch.logsumexp(masked, dim=1) - torch.logsumexp(logits, dim=1)

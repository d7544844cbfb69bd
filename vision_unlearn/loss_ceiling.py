"""The forget-loss ceiling shared by the ascent methods (``grad_ascent``, ``neggrad_plus``).

Ascent on the forget samples raises their loss without limit; a *ceiling* stops each sample once its
loss reaches the loss the model shows on data it never saw, so forget samples end up looking like
non-members to a loss-based membership attack instead of being pushed past them. The ceiling is a
config value (``forget_loss_ceiling``): a fixed number, ``"heldout"`` (the current model's median
loss on held-out samples, :class:`HeldoutCeiling`) or ``"heldout_quantiles"`` (per sample, the
held-out quantile of its rank, :func:`rank_matched_ceilings`).

This module is not a method (``vision_unlearn/methods/`` holds only methods, which the registry
discovers); the methods import it: :class:`CeilingMixin` gives a method ``attach_heldout``
(:class:`~vision_unlearn.protocols.HeldoutAware`), and :func:`forget_ascent_loss` is the objective
they raise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Literal

import torch
from torch import Tensor

from toolkit_core.errors import UserInputError
from vision_unlearn.protocols import AscentLossAdapter, Batch, ModelAdapter, StepState

HELDOUT = "heldout"
"""Config value of ``forget_loss_ceiling``: follow the current model's median loss on held-out samples
(:class:`HeldoutCeiling`; the harness attaches the held-out samples with ``attach_heldout``)."""

HELDOUT_QUANTILES = "heldout_quantiles"
"""Config value of ``forget_loss_ceiling``: each forget sample's ceiling is the current model's held-out
loss quantile at the sample's rank in its batch (:func:`rank_matched_ceilings`)."""

HELDOUT_MODES = (HELDOUT, HELDOUT_QUANTILES)
"""The ceilings that need held-out samples."""

LossCeiling = float | Literal["heldout", "heldout_quantiles"] | None

CeilingValue = float | Callable[[Tensor], Tensor] | None
"""A resolved ceiling: one loss for every sample, or a function of the batch's (detached) per-sample
losses that gives each sample its own."""

QUANTILE_LEVELS = 101
"""Quantile levels the held-out tracker keeps (0, 0.01, ..., 1)."""


def rank_matched_ceilings(losses: Tensor, quantiles: Tensor) -> Tensor:
    """Per-sample ceilings: the sample of rank ``r`` (0 = lowest loss) among ``b`` gets the held-out
    quantile at level ``(r + 0.5) / b``, linearly interpolated in ``quantiles`` (the held-out loss
    quantiles at evenly spaced levels from 0 to 1).

    A single ceiling (the held-out median) gathers every forget sample at one loss, while the losses
    of unseen samples are spread out: forget samples then sit inside that spread as a point mass, below
    about half of the unseen ones, and a loss attack still separates them (measured on radiographs:
    forget quartiles 4.8 / 5.4 / 6.0 against test quartiles 4.1 / 5.8 / 7.6). Matching ranks to
    quantiles lifts the forget losses towards the held-out *distribution* instead, order preserved:
    the sample that is easiest to the model stays the easiest, and is lifted only to the low held-out
    quantiles. Ties keep their batch order.

    Args:
        losses: ``[b]`` per-sample losses (only their order is used).
        quantiles: ``[L]`` non-decreasing held-out quantiles at levels ``linspace(0, 1, L)``.
    """
    b, levels = losses.shape[0], quantiles.shape[0]
    ranks = torch.empty(b, dtype=torch.long, device=losses.device)
    ranks[torch.argsort(losses, stable=True)] = torch.arange(b, device=losses.device)
    position = (ranks.to(quantiles.dtype) + 0.5) / b * (levels - 1)
    low = position.floor().long().clamp(0, levels - 1)
    high = (low + 1).clamp(max=levels - 1)
    weight = position - low.to(quantiles.dtype)
    q = quantiles.to(losses.device)
    return q[low] * (1 - weight) + q[high] * weight


def forget_ascent_loss(adapter: ModelAdapter, batch: Batch, ceiling: LossCeiling | CeilingValue = None) -> Tensor:
    """The scalar an ascent method raises on a forget batch.

    Without a ceiling: an adapter with the capability
    :class:`~vision_unlearn.protocols.AscentLossAdapter` (``ascent_loss(batch) -> {"loss": Tensor, ...}``)
    decides it (the YOLO adapter: the classification term of each forget box's class on the anchors
    answering for the box, clamped so it is bounded, see
    :func:`vision_unlearn.adapters.yolo_losses.bounded_class_ascent`); otherwise it is the adapter's
    training loss ``adapter.loss(batch)["loss"]`` (a classifier's cross-entropy).

    With a ceiling ``c`` (a number, or a function of the detached per-sample losses giving each
    sample its own ``c_i``, :func:`rank_matched_ceilings`): the mean over samples of
    ``min(L_i, c_i)``, ``L_i`` the adapter's full
    per-sample training loss (every box, the background and the box regression of a detector). A
    sample stops being ascended once its loss reaches ``c``; with ``c`` the loss the model shows on
    data it never saw, the forget samples end up looking like non-members to a loss-based
    membership attack instead of being pushed past them (which an attack also notices, and which
    costs the classes the forget samples hold). Made for sample requests (images, patients); a
    class request wants the class gone, not its samples at a held-out loss.

    Raises:
        UserInputError: the ceiling is still ``"heldout"`` (no held-out samples were attached).
    """
    if ceiling is not None:
        if isinstance(ceiling, str):
            raise UserInputError(f"forget_loss_ceiling={ceiling!r} needs held-out data to measure the loss of "
                                 "non-members (detectors: --heldout-data)", field="forget_loss_ceiling",
                                 value=ceiling)
        per_sample = adapter.loss(batch).get("per_sample")
        if per_sample is None:
            raise UserInputError("forget_loss_ceiling needs per-sample losses from the adapter",
                                 field="forget_loss_ceiling", value=str(ceiling))
        if callable(ceiling):
            return torch.minimum(per_sample, ceiling(per_sample.detach())).mean()
        return per_sample.clamp(max=float(ceiling)).mean()
    if isinstance(adapter, AscentLossAdapter):
        return adapter.ascent_loss(batch)["loss"]
    return adapter.loss(batch)["loss"]


class HeldoutCeiling:
    """The median per-sample loss of the *current* model on held-out samples, followed during a run.

    A fixed ceiling measured before unlearning is a moving target's old position: ascent on the
    forget samples also raises the loss of unseen samples a little (shared features), so forget
    samples held at the old level end up *below* the new non-member losses, and a loss attack still
    finds them. This tracker starts from the median over all held-out samples and, at every step,
    moves an exponential average (``momentum``) towards the median of the next ``batch_size``
    held-out samples (cycled in order, so a resumed run sees the same ones). The losses are taken
    without gradients and with the model in eval mode (batch-norm running statistics are neither
    used from the batch nor updated), then every module's mode is restored.

    With ``quantiles=True`` the same average is kept for the held-out loss quantiles at
    :data:`QUANTILE_LEVELS` evenly spaced levels, and :meth:`update` returns the function that gives
    each forget sample the quantile of its rank (:func:`rank_matched_ceilings`); ``value`` is then the
    tracked median.

    Args:
        stream: held-out samples, a batch dict like the forget stream (never trained on).
        batch_size: held-out samples per step.
        momentum: weight of the previous estimate.
        quantiles: track the quantiles (``forget_loss_ceiling="heldout_quantiles"``), not only the median.
    """

    def __init__(self, stream: Mapping[str, Tensor], batch_size: int, momentum: float = 0.9,
                 quantiles: bool = False) -> None:
        self.stream = dict(stream)
        self.size = int(next(iter(self.stream.values())).shape[0])
        if self.size == 0:
            raise UserInputError("the held-out samples are empty", field="forget_loss_ceiling")
        self.batch_size = max(1, min(batch_size, self.size))
        self.momentum = momentum
        self.quantiles = quantiles
        self.levels = torch.linspace(0.0, 1.0, QUANTILE_LEVELS)
        self.value: float | None = None
        self.start_value: float | None = None
        self.quantile_values: Tensor | None = None

    @contextmanager
    def _eval_mode(self, adapter: ModelAdapter) -> Iterator[None]:
        """No gradients, every module in eval mode; each module's own mode restored afterwards."""
        modes = [(m, m.training) for m in adapter.model.modules()]
        adapter.model.eval()
        try:
            with torch.no_grad():
                yield
        finally:
            for module, mode in modes:
                module.training = mode

    def _losses(self, adapter: ModelAdapter, rows: Tensor, device: torch.device) -> Tensor:
        batch = {k: v[rows].to(device) for k, v in self.stream.items()}
        return adapter.loss(batch)["per_sample"].detach().cpu()

    def start(self, adapter: ModelAdapter, device: torch.device) -> float:
        """The median over every held-out sample (computed batch by batch); resets the average."""
        with self._eval_mode(adapter):
            values = torch.cat([self._losses(adapter, torch.arange(first, min(first + self.batch_size, self.size)),
                                             device) for first in range(0, self.size, self.batch_size)])
        self.value = self.start_value = float(values.median())
        if self.quantiles:
            self.quantile_values = torch.quantile(values.double(), self.levels.double()).float()
        return self.value

    def update(self, adapter: ModelAdapter, step: int, device: torch.device) -> CeilingValue:
        """The ceiling for step ``step``: the average moved towards this step's held-out median (or
        quantiles, returned as the per-sample function of :func:`rank_matched_ceilings`)."""
        if self.value is None:
            self.start(adapter, device)
        rows = (torch.arange(self.batch_size) + step * self.batch_size) % self.size
        with self._eval_mode(adapter):
            losses = self._losses(adapter, rows, device)
        if not self.quantiles:
            self.value = self.momentum * float(self.value) + (1.0 - self.momentum) * float(losses.median())
            return self.value
        assert self.quantile_values is not None
        current = torch.quantile(losses.double(), self.levels.double()).float()
        self.quantile_values = self.momentum * self.quantile_values + (1.0 - self.momentum) * current
        self.value = float(self.quantile_values[QUANTILE_LEVELS // 2])
        quantiles = self.quantile_values.clone()
        return lambda batch_losses: rank_matched_ceilings(batch_losses, quantiles)


class CeilingMixin:
    """Ascent methods with ``forget_loss_ceiling``: a fixed number, or ``"heldout"`` /
    ``"heldout_quantiles"`` with :meth:`attach_heldout` (the harness calls it with the held-out samples)."""

    heldout_ceiling: HeldoutCeiling | None = None

    def attach_heldout(self, stream: Mapping[str, Tensor]) -> None:
        cfg = self.config  # type: ignore[attr-defined]
        self.heldout_ceiling = HeldoutCeiling(stream, cfg.batch_size,
                                              quantiles=cfg.forget_loss_ceiling == HELDOUT_QUANTILES)

    def current_ceiling(self, adapter: ModelAdapter, state: StepState) -> LossCeiling | CeilingValue:
        ceiling = self.config.forget_loss_ceiling  # type: ignore[attr-defined]
        if ceiling in HELDOUT_MODES and self.heldout_ceiling is not None:
            return self.heldout_ceiling.update(adapter, state.step, state.device)
        return ceiling

    def ceiling_logs(self) -> dict[str, float]:
        tracker = self.heldout_ceiling
        return {} if tracker is None or tracker.value is None else {"loss_ceiling": float(tracker.value)}


def check_loss_ceiling(ceiling: LossCeiling) -> None:
    """Validate a config's ``forget_loss_ceiling``: ``None``, a mode name, or a positive finite loss.

    Raises:
        ValueError: a number that is not a positive finite loss.
    """
    if isinstance(ceiling, (int, float)) and not (ceiling > 0 and ceiling < float("inf")):
        raise ValueError(f"forget_loss_ceiling must be a positive finite loss, got {ceiling}")

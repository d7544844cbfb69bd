"""Pure tensor math of steering: erasure directions, the ridge gate detector, its thresholds, the
gated edit and the abstain prototype (tensors in, tensors out; no model, no I/O).

Notation as in :mod:`vision_unlearn.steering`: activations ``[B, C]``, ``[B, T, C]`` or
``[B, C, H, W]``; pooled activations ``[B, C]``; the erasure basis ``U`` ``[C, k]``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from vision_unlearn.steering.state import SteeringState


def channels_last(activations: Tensor) -> Tensor:
    """View activations with channels in the last axis: ``[B, C]``, ``[B, T, C]`` or ``[B, H, W, C]``.

    ``[B, C, H, W]`` maps (the timm CNN layout) are permuted; ``[B, T, C]`` token sequences (ViT
    blocks) and ``[B, C]`` vectors are returned as they are.
    """
    if activations.ndim == 4:
        return activations.permute(0, 2, 3, 1)
    if activations.ndim in (2, 3):
        return activations
    raise ValueError(f"expected activations [B, C], [B, T, C] or [B, C, H, W], got shape {tuple(activations.shape)}")


def pool_activations(activations: Tensor) -> Tensor:
    """Mean over positions / tokens: ``[B, C, H, W]`` / ``[B, T, C]`` / ``[B, C]`` -> ``[B, C]``."""
    if activations.ndim == 4:
        return activations.mean(dim=(2, 3))
    if activations.ndim == 3:
        return activations.mean(dim=1)
    return channels_last(activations)


def fit_erasure_basis(forget_features: Tensor, target_mean: Tensor, rank: int) -> Tensor:
    """Orthonormal erasure directions ``[C, k]`` from pooled forget features ``[N, C]``.

    The directions are the top-``k`` right singular vectors of ``forget_features - target_mean``
    (not centred on the forget mean, so the mean shift from target to forget is the first one).
    ``rank = 0`` returns ``[C, 0]``, meaning the whole space.
    """
    if rank == 0:
        return forget_features.new_zeros(forget_features.shape[1], 0)
    diffs = (forget_features - target_mean).double()
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    k = min(rank, vh.shape[0])
    return vh[:k].T.contiguous().to(forget_features.dtype)


def fit_ridge_detector(forget_features: Tensor, retain_features: Tensor | Sequence[Tensor], ridge: float
                       ) -> tuple[Tensor, Tensor, Tensor, float]:
    """Closed-form ridge regression separating forget (target 1) from retain (target 0) features.

    Features ``[N, C]`` are standardised with the mean / standard deviation of all rows; the forget
    set and the retain set each carry half of the total sample weight (so a small forget set is not
    drowned by the retain set). ``retain_features`` may be several groups (e.g. retain objects and
    background positions); the non-empty ones share the retain half equally. The intercept is not
    penalised. Solves ``(Z^T W Z + ridge * D) theta = Z^T W y`` with ``D`` the identity except for a
    0 on the intercept.

    Returns:
        ``(feature_mean [C], feature_scale [C], weight [C], bias)``.
    """
    groups = [retain_features] if isinstance(retain_features, Tensor) else list(retain_features)
    groups = [g for g in groups if g.shape[0] > 0]
    if forget_features.shape[0] == 0 or not groups:
        raise ValueError("the gate detector needs at least one forget and one retain row")
    features = torch.cat([forget_features, *groups]).double()
    n_f = forget_features.shape[0]
    mean = features.mean(dim=0)
    scale = features.std(dim=0, unbiased=False).clamp_min(1e-6)
    z = torch.cat([(features - mean) / scale, features.new_ones(features.shape[0], 1)], dim=1)
    sample_weight = torch.cat([features.new_full((n_f,), 0.5 / n_f),
                               *[features.new_full((g.shape[0],), 0.5 / (len(groups) * g.shape[0])) for g in groups]])
    target = torch.cat([features.new_ones(n_f), features.new_zeros(features.shape[0] - n_f)])
    penalty = torch.eye(z.shape[1], dtype=z.dtype) * ridge
    penalty[-1, -1] = 0.0
    gram = z.T @ (z * sample_weight[:, None]) + penalty
    theta = torch.linalg.solve(gram, z.T @ (sample_weight * target))
    dtype = forget_features.dtype
    return mean.to(dtype), scale.to(dtype), theta[:-1].to(dtype), float(theta[-1])


def detector_scores(pooled: Tensor, state: SteeringState) -> Tensor:
    """Gate detector score ``[B]`` of pooled activations ``[B, C]`` (higher = more forget-like).

    Computed exactly as the hook computes it (standardisation folded into the weights), so the
    thresholds fitted on these scores apply bit for bit.
    """
    kernel = fold_kernel(state, pooled)
    return pooled @ kernel.weight + kernel.bias


def upper_quantile_threshold(scores: Tensor, rate: float) -> float:
    """The smallest observed score ``t`` with at most ``rate`` of ``scores`` strictly above it.

    Hand case: scores ``[1, 2, 3, 4]`` and rate ``0.25`` give ``3`` (only ``4`` is above it).
    """
    ordered = torch.sort(scores.double().flatten()).values
    n = ordered.numel()
    index = max(math.ceil((1.0 - rate) * n - 1e-9) - 1, 0)
    return float(ordered[index])


def gate_thresholds(retain_scores: Tensor | Sequence[Tensor], forget_scores: Tensor, false_gate_rate: float,
                    gate_full_quantile: float) -> tuple[float, float]:
    """``(low, high)``: gate 0 at/below ``low`` (retain upper quantile), 1 at/above ``high``.

    With several retain groups, ``low`` is the largest of their upper quantiles, so that at most
    ``false_gate_rate`` of *each* group opens the gate. ``high`` is the ``gate_full_quantile``
    quantile of the forget scores, raised to ``low`` when the sets overlap (the gate then becomes a
    step at ``low``).
    """
    groups = [retain_scores] if isinstance(retain_scores, Tensor) else [g for g in retain_scores if g.numel()]
    low = max(upper_quantile_threshold(g, false_gate_rate) for g in groups)
    high = float(torch.quantile(forget_scores.double().flatten(), gate_full_quantile))
    return low, max(low, high)


def gate_values(scores: Tensor, low: float, high: float) -> Tensor:
    """Gate ``[B]`` in ``[0, 1]``: 0 for ``score <= low``, 1 for ``score >= high``, linear between.

    With ``high == low`` the gate is the step ``score > low``.
    """
    if high <= low:
        return (scores > low).to(scores.dtype)
    return ((scores - low) / (high - low)).clamp(0.0, 1.0)


@dataclass(frozen=True)
class GateKernel:
    """The state folded for one dtype / device: ``score = pooled @ weight + bias``."""

    weight: Tensor
    bias: Tensor
    target_mean: Tensor
    basis: Tensor


def fold_kernel(state: SteeringState, like: Tensor) -> GateKernel:
    """The state folded for the dtype and device of ``like``: standardisation moved into the weights."""
    weight = state.detector_weight / state.feature_scale
    bias = state.detector_bias - (state.feature_mean / state.feature_scale) @ state.detector_weight
    return GateKernel(weight=weight.to(like), bias=bias.to(like), target_mean=state.target_mean.to(like),
                   basis=state.basis.to(like))


def position_scores(activations: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Detector score of every position: ``[B, C, H, W] -> [B, H, W]``, ``[B, T, C] -> [B, T]``, ``[B, C] -> [B]``."""
    if activations.ndim == 4:
        return torch.einsum("bchw,c->bhw", activations, weight) + bias
    return channels_last(activations) @ weight + bias


def steer_activations(activations: Tensor, state: SteeringState, kernel: GateKernel | None = None
                      ) -> tuple[Tensor, Tensor]:
    """Apply the gated edit ``a' = a - lambda * g * U U^T (a - mu_t)`` to one block output.

    Args:
        activations: ``[B, C]``, ``[B, T, C]`` or ``[B, C, H, W]``.
        state: the fitted steering state.
        kernel: the state folded for the activations' dtype / device (computed when ``None``).

    Returns:
        ``(edited activations, same shape and layout; gate)``: the gate is ``[B]`` for an image
        gate, ``[B, H, W]`` / ``[B, T]`` for a position gate. Rows (positions) with gate 0 keep the
        input values themselves (bit for bit).
    """
    kernel = kernel or fold_kernel(state, activations)
    if state.fit.granularity == "position":
        scores = position_scores(activations, kernel.weight, kernel.bias)
    else:
        scores = pool_activations(activations) @ kernel.weight + kernel.bias
    gate = gate_values(scores, state.gate_low, state.gate_high)
    if state.fit.granularity == "position" and state.fit.gate_dilation > 0 and gate.ndim == 3:
        radius = state.fit.gate_dilation
        gate = F.max_pool2d(gate.unsqueeze(1), 2 * radius + 1, stride=1, padding=radius).squeeze(1)
    open_mask = gate > 0
    if state.strength == 0.0 or not bool(open_mask.any()):
        return activations, gate
    out = activations.clone()
    if state.fit.granularity == "position" and activations.ndim > 2:
        rows = channels_last(activations)[open_mask]  # [n_open, C]
        factor = (state.strength * gate[open_mask]).unsqueeze(1)
    else:
        open_rows = torch.nonzero(open_mask).flatten()
        rows = channels_last(activations[open_rows])
        factor = (state.strength * gate[open_rows]).reshape(-1, *([1] * (rows.ndim - 1)))
    offset = rows - kernel.target_mean
    if kernel.basis.shape[1] > 0:
        offset = (offset @ kernel.basis) @ kernel.basis.T
    edited = (rows - factor * offset).to(activations.dtype)
    if state.fit.granularity == "position" and activations.ndim > 2:
        channels_last(out)[open_mask] = edited  # writes through the view into ``out``
    else:
        if activations.ndim == 4:
            edited = edited.permute(0, 3, 1, 2)
        out[open_rows] = edited
    return out, gate


def abstain_prototype(head_weight: Tensor, head_bias: Tensor | None, point: Tensor,
                      suppressed_classes: Sequence[int] = (), margin: float = 10.0) -> Tensor:
    """The feature vector closest to ``point`` at which a linear head gives *equal* logits.

    Solves ``min ||p - point||`` subject to ``A p = c`` in closed form with the pseudo-inverse,
    ``p = point + A^+ (c - A point)``, where the rows of ``A p = c`` say: every kept class has the
    mean kept logit (a uniform softmax over the kept classes: the head abstains), and every class in
    ``suppressed_classes`` (the classes a class-wise request removes, which a retrained model would
    never predict) sits ``margin`` logits below it.

    Args:
        head_weight: ``[K, D]`` weights of the linear classifier.
        head_bias: ``[K]`` bias or ``None``.
        point: ``[D]`` the feature vector to move (e.g. the mean feature of unknown inputs).
        suppressed_classes: class ids pushed ``margin`` below the others.
        margin: logit gap of the suppressed classes.

    Returns:
        ``[D]``; exact when ``D >= K - 1`` and the constraint rows are independent.
    """
    k = head_weight.shape[0]
    suppressed = sorted({int(c) for c in suppressed_classes})
    if any(c < 0 or c >= k for c in suppressed) or len(suppressed) >= k:
        raise ValueError(f"suppressed classes {suppressed} must be fewer than and below K = {k}")
    kept = torch.ones(k, dtype=torch.bool)
    kept[suppressed] = False
    average_kept = kept.double() / float(kept.sum())
    rows = torch.eye(k, dtype=torch.float64) - average_kept  # row j: logit_j - mean kept logit
    target = torch.zeros(k, dtype=torch.float64)
    target[suppressed] = -margin
    a = rows @ head_weight.double()
    c = target - (rows @ head_bias.double() if head_bias is not None else 0.0)
    moved = point.double() + torch.linalg.pinv(a) @ (c - a @ point.double())
    return moved.to(point.dtype)


def forget_only_classes(forget_labels: Tensor, retain_labels: Tensor) -> list[int]:
    """Classes present in the forget set and absent from the retain set (a class-wise request)."""
    return sorted(set(forget_labels.flatten().tolist()) - set(retain_labels.flatten().tolist()))

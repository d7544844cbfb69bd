"""Test-time erasure by activation steering: statistics, a closed-form gate, hooks, save/load.

A forward hook on one block of a model (a CNN stage such as ``layer3`` / ``stages.2``, a ViT block
``blocks.N``) edits that block's output for inputs that look like the forget set and leaves every
other input untouched. Nothing in the model changes; removing the hook restores the model exactly.

Notation (``C`` channels of the hooked block; activations are ``[B, C]``, ``[B, T, C]`` tokens or
``[B, C, H, W]`` maps; the *pooled* activation ``z in R^C`` is the mean over tokens / positions):

* **Target** ``mu_t``: the mean pooled activation of "unknown" inputs (noise or blank images, see
  :func:`make_unknown_images`) - where the model's representation of "I have not seen this" lives.
* **Erasure subspace** ``U in R^{C x k}`` (orthonormal): the top-``k`` left singular vectors of the
  forget activations relative to the target, ``[z_f - mu_t]``. ``k = 0`` means the whole space
  (``U U^T = I``), i.e. the gated activation is moved onto the target itself.
* **Gate** ``g(x) in [0, 1]``: a ridge-regression detector ``s = w^T (z - m) / sd + b`` fitted in
  closed form (balanced forget = 1 / retain = 0 targets), with two thresholds chosen on data: below
  ``low`` (the ``1 - false_gate_rate`` quantile of retain scores) the gate is exactly 0; above
  ``high`` (a low quantile of forget scores) it is 1; linear in between.
* **Edit** at every position / token ``a``: ``a' = a - lambda * g(x) * U U^T (a - mu_t)``.

With ``g = 0`` the hook returns the block's output unchanged (bit for bit), so retain inputs below
the gate threshold see the original model. This is the vision counterpart of test-time unlearning
by activation steering (MLLMEraser, 2025): an erasure direction from contrasting activations, applied
through an input-aware gate, without any parameter update.

**Per-position gate (detectors).** A detector must forget *objects*, not images: with a class
request the images that hold the forgotten class also hold objects to keep. With
``granularity="position"`` the gate is computed at every position of a feature map from that
position's activation vector ``a in R^C`` (no pooling) and the edit applies position by position.
The detector is fitted on the positions of the hooked map whose cell centre lies inside the
central part of a forget box (``forget_box_scale``; 1) against those inside retain boxes and those
on background (0, each group half of the retain weight); ``low`` is the largest of the two retain
groups' ``1 - false_gate_rate`` quantiles. The gate may be dilated (``gate_dilation``: each cell
takes the largest gate of its neighbourhood), so that an object whose central cells open the gate
is erased as a whole. The target ``mu_t`` is the mean activation of *background* positions (cells
farther than one cell from any box): a gated position is made to look like a place without an
object. Several maps (the P3/P4/P5 neck outputs of a YOLO) are fitted one after the other in
forward order, each on the activations it receives with the earlier hooks on
(:func:`fit_position_steering`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

STEERING_FORMAT = "vision_unlearn.steering/2"
"""One or more states (one per hooked block)."""
STEERING_FORMAT_V1 = "vision_unlearn.steering/1"
"""The first format: exactly one state (still read)."""
UnknownKind = Literal["noise", "blank", "mixed"]


# --------------------------------------------------------------------------------------------- config/state
@dataclass(frozen=True)
class SteeringFit:
    """How a steering state is fitted.

    Attributes:
        rank: number of erasure directions ``k``; 0 uses the whole activation space.
        ridge: ridge penalty of the gate detector (on standardised features, ``> 0``).
        false_gate_rate: share of retain calibration inputs allowed to open the gate (``[0, 1)``).
        gate_full_quantile: forget-score quantile at which the gate is fully open (``[0, 1]``).
        target_response: ``"unknown"``: the target is the mean activation of the unknown inputs;
            ``"abstain"``: that mean moved to the nearest point where the linear classifier gives
            equal logits (:func:`abstain_prototype`), so erased inputs get a uniform prediction.
            Needs a block whose pooled output is the classifier input (``layer4``, ``norm``).
        granularity: ``"image"``: one gate per input from the pooled activation; ``"position"``: one
            gate per position / token from its own activation vector (detectors; see the module
            docstring).
        gate_dilation: with a position gate on ``[B, C, H, W]`` maps, every cell takes the largest
            gate within this many cells (a max filter), so that an object whose cells open the gate
            only in part is erased as a whole. 0 = off.
        forget_box_scale: with a position gate, the positive cells are those of the forget boxes
            scaled by this factor about their centres (the central part carries the object; the
            corners of a box around a thin or round object are background). 1 = whole boxes.
    """

    rank: int = 0
    ridge: float = 0.01
    false_gate_rate: float = 0.01
    gate_full_quantile: float = 0.1
    target_response: Literal["unknown", "abstain"] = "unknown"
    granularity: Literal["image", "position"] = "image"
    gate_dilation: int = 0
    forget_box_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.rank < 0:
            raise UserInputError("rank must be >= 0 (0 = the whole activation space)", field="rank", value=self.rank)
        if not self.ridge > 0:
            raise UserInputError("ridge must be > 0", field="ridge", value=self.ridge)
        if not 0.0 <= self.false_gate_rate < 1.0:
            raise UserInputError("false_gate_rate must lie in [0, 1)", field="false_gate_rate",
                                 value=self.false_gate_rate)
        if not 0.0 <= self.gate_full_quantile <= 1.0:
            raise UserInputError("gate_full_quantile must lie in [0, 1]", field="gate_full_quantile",
                                 value=self.gate_full_quantile)
        if self.target_response not in ("unknown", "abstain"):
            raise UserInputError("target_response must be 'unknown' or 'abstain'", field="target_response",
                                 value=self.target_response)
        if self.granularity not in ("image", "position"):
            raise UserInputError("granularity must be 'image' or 'position'", field="granularity",
                                 value=self.granularity)
        if not 0.0 < self.forget_box_scale <= 1.0:
            raise UserInputError("forget_box_scale must lie in (0, 1]", field="forget_box_scale",
                                 value=self.forget_box_scale)
        if self.gate_dilation < 0:
            raise UserInputError("gate_dilation must be >= 0 (cells)", field="gate_dilation", value=self.gate_dilation)


@dataclass(frozen=True)
class SteeringState:
    """Everything a steering hook needs; small, saved alone (:func:`save_steering`).

    Attributes:
        layer: the hooked module's name in ``model.named_modules()``.
        strength: ``lambda``; 1 moves gated activations fully onto the target within ``U``.
        basis: ``[C, k]`` orthonormal erasure directions; ``[C, 0]`` means the whole space.
        target_mean: ``[C]`` pooled mean activation of the unknown inputs.
        feature_mean: ``[C]`` standardisation mean of the gate detector.
        feature_scale: ``[C]`` standardisation scale (> 0).
        detector_weight: ``[C]`` ridge weights on standardised features.
        detector_bias: detector intercept.
        gate_low: score at and below which the gate is 0.
        gate_high: score at and above which the gate is 1 (``>= gate_low``).
        fit: the fitting settings (for records).
    """

    layer: str
    strength: float
    basis: Tensor
    target_mean: Tensor
    feature_mean: Tensor
    feature_scale: Tensor
    detector_weight: Tensor
    detector_bias: float
    gate_low: float
    gate_high: float
    fit: SteeringFit

    @property
    def channels(self) -> int:
        return int(self.target_mean.shape[0])

    def tensors(self) -> dict[str, Tensor]:
        """The tensors of the state (float32, CPU, contiguous)."""
        names = ("basis", "target_mean", "feature_mean", "feature_scale", "detector_weight")
        return {n: getattr(self, n).detach().float().cpu().contiguous() for n in names}

    def scalars(self) -> dict[str, Any]:
        """The plain values of the state (JSON-serialisable)."""
        return {"layer": self.layer, "strength": self.strength, "detector_bias": self.detector_bias,
                "gate_low": self.gate_low, "gate_high": self.gate_high, "fit": asdict(self.fit)}

    def with_strength(self, strength: float) -> SteeringState:
        """A copy with another ``lambda``."""
        return SteeringState(**{**self.__dict__, "strength": float(strength)})

    @classmethod
    def from_parts(cls, tensors: dict[str, Tensor], scalars: dict[str, Any]) -> SteeringState:
        """Inverse of :meth:`tensors` + :meth:`scalars`."""
        return cls(layer=str(scalars["layer"]), strength=float(scalars["strength"]),
                   basis=tensors["basis"], target_mean=tensors["target_mean"],
                   feature_mean=tensors["feature_mean"], feature_scale=tensors["feature_scale"],
                   detector_weight=tensors["detector_weight"], detector_bias=float(scalars["detector_bias"]),
                   gate_low=float(scalars["gate_low"]), gate_high=float(scalars["gate_high"]),
                   fit=SteeringFit(**scalars["fit"]))


# --------------------------------------------------------------------------------------------- pure math
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
    kernel = _kernel(state, pooled)
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
class _Kernel:
    """The state folded for one dtype / device: ``score = pooled @ weight + bias``."""

    weight: Tensor
    bias: Tensor
    target_mean: Tensor
    basis: Tensor


def _kernel(state: SteeringState, like: Tensor) -> _Kernel:
    weight = state.detector_weight / state.feature_scale
    bias = state.detector_bias - (state.feature_mean / state.feature_scale) @ state.detector_weight
    return _Kernel(weight=weight.to(like), bias=bias.to(like), target_mean=state.target_mean.to(like),
                   basis=state.basis.to(like))


def position_scores(activations: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
    """Detector score of every position: ``[B, C, H, W] -> [B, H, W]``, ``[B, T, C] -> [B, T]``, ``[B, C] -> [B]``."""
    if activations.ndim == 4:
        return torch.einsum("bchw,c->bhw", activations, weight) + bias
    return channels_last(activations) @ weight + bias


def steer_activations(activations: Tensor, state: SteeringState, kernel: _Kernel | None = None
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
    kernel = kernel or _kernel(state, activations)
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


def linear_head(model: nn.Module) -> nn.Linear:
    """The model's classifier as an ``nn.Linear`` (timm ``get_classifier()``).

    Raises:
        UserInputError: the model has no linear classifier head.
    """
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    if not isinstance(head, nn.Linear):
        raise UserInputError("an 'abstain' target needs a model whose classifier is one linear layer "
                             "(timm get_classifier())", field="target_response", value=type(head).__name__)
    return head


# --------------------------------------------------------------------------------------------- model access
def hookable_layer_names(model: nn.Module) -> list[str]:
    """Names of the blocks a user would hook: top-level children and the items of top-level
    sequential containers (``layer3``, ``layer3.0``, ``stages.2``, ``blocks.5``). A model that wraps
    a single sub-model (the YOLO adapter's ``detector``) is looked through: ``detector.model.15``."""
    names: list[str] = []
    children = list(model.named_children())
    if len(children) == 1 and not isinstance(children[0][1], (nn.Sequential, nn.ModuleList)):
        name, only = children[0]
        inner = hookable_layer_names(only)
        return [name, *(f"{name}.{n}" for n in inner)] if inner else [name]
    for name, child in children:
        names.append(name)
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
    return names


MAX_LISTED_LAYERS = 16
"""Layer names an error message lists at most."""


def feature_layer_names(model: nn.Module) -> list[str]:
    """The modules of the model's ``feature_info`` (timm stages; the YOLO neck outputs P3, P4, P5),
    in order; empty when the model has none."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    try:
        return [str(entry["module"]) for entry in info]
    except (TypeError, KeyError):
        return [str(m) for m in info.module_name()] if hasattr(info, "module_name") else []


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module called ``layer`` in ``model.named_modules()``.

    Raises:
        UserInputError: no such module; the message lists valid block names (the feature stages
            first, at most :data:`MAX_LISTED_LAYERS`).
    """
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        features = feature_layer_names(model)
        hookable = hookable_layer_names(model)
        inside = [n for n in hookable if n.rsplit(".", 1)[0] in features]
        names = list(dict.fromkeys([*features, *inside, *[n for n in hookable if "." not in n], *hookable]))
        shown = ", ".join(names[:MAX_LISTED_LAYERS]) + (", ..." if len(names) > MAX_LISTED_LAYERS else "")
        raise UserInputError(f"unknown layer; valid block names include: {shown} (any name of "
                             f"model.named_modules() is accepted)", field="layer", value=layer)
    return modules[layer]


def default_layer(model: nn.Module) -> str:
    """The second-to-last feature stage of a timm model (``layer3`` of a ResNet, ``blocks.N-2`` of
    a ViT, ``stages.2`` of a ConvNeXt); the last hookable block otherwise."""
    modules = feature_layer_names(model)
    if len(modules) >= 2:
        return modules[-2]
    if modules:
        return modules[-1]
    names = hookable_layer_names(model)
    if not names:
        raise UserInputError("the model has no sub-modules to hook", field="layer")
    return names[-1]


def forward_order(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """``layers`` without duplicates, in the order of ``model.named_modules()`` (the order of a
    sequential forward pass, as in a YOLO ``DetectionModel``).

    Raises:
        UserInputError: an unknown layer (see :func:`resolve_layer`).
    """
    for layer in layers:
        resolve_layer(model, layer)
    position = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(dict.fromkeys(layers), key=position.__getitem__)


def _device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.no_grad()
def collect_pooled_activations(model: nn.Module, layer: str, images: Tensor, batch_size: int = 256) -> Tensor:
    """Pooled activations ``[N, C]`` (float32, CPU) of block ``layer`` for ``[N, C_in, H, W]`` images.

    The model runs in eval mode (restored afterwards) on its own device.

    Raises:
        UserInputError: unknown layer, or a block whose output is not a tensor.
    """
    module = resolve_layer(model, layer)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise UserInputError("the block's output is not a single tensor; choose another layer",
                                 field="layer", value=layer)
        captured.append(pool_activations(output).float().cpu())

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    try:
        for start in range(0, images.shape[0], batch_size):
            model(images[start:start + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured) if captured else torch.empty(0, 0)


def make_unknown_images(like: Tensor, count: int, kind: UnknownKind, seed: int) -> Tensor:
    """Images no class owns, shaped like ``like[0]`` (``[count, C, H, W]`` in ``[0, 1]``).

    ``"noise"``: i.i.d. uniform pixels; ``"blank"``: constant images at uniformly drawn grey levels;
    ``"mixed"``: half of each. Drawn from a private generator seeded with ``seed``.
    """
    if like.ndim != 4 or like.shape[0] == 0:
        raise ValueError(f"need at least one [C, H, W] image to copy the shape of, got {tuple(like.shape)}")
    if kind not in ("noise", "blank", "mixed"):
        raise UserInputError("unknown-input kind must be noise, blank or mixed", field="target", value=kind)
    generator = torch.Generator().manual_seed(seed)
    shape = (count, *like.shape[1:])
    noise = torch.rand(shape, generator=generator)
    blank = torch.rand(count, 1, 1, 1, generator=generator).expand(shape).clone()
    if kind == "noise":
        return noise
    if kind == "blank":
        return blank
    half = count // 2
    return torch.cat([noise[:half], blank[half:]])


@torch.no_grad()
def check_feeds_head(model: nn.Module, layer: str, head: nn.Module, images: Tensor) -> None:
    """Check that the pooled output of ``layer`` is the input of ``head`` (on ``images``).

    Raises:
        UserInputError: it is not (another block must be chosen for an ``abstain`` target).
    """
    captured: dict[str, Tensor] = {}

    def block_hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            captured["block"] = pool_activations(output).float()

    def head_hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured["head"] = inputs[0].float()

    handles = [resolve_layer(model, layer).register_forward_hook(block_hook), head.register_forward_pre_hook(head_hook)]
    was_training = model.training
    model.eval()
    try:
        model(images.to(_device_of(model)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    block, head_input = captured.get("block"), captured.get("head")
    if block is None or head_input is None or block.shape != head_input.shape or \
            not torch.allclose(block, head_input, rtol=1e-4, atol=1e-5):
        raise UserInputError("an 'abstain' target needs the block whose pooled output feeds the classifier "
                             "(e.g. layer4 of a ResNet, norm of a ViT with average pooling)", field="layer",
                             value=layer)


def fit_steering(model: nn.Module, layer: str, forget_images: Tensor, retain_images: Tensor, target_images: Tensor,
                 fit: SteeringFit | None = None, strength: float = 1.0, batch_size: int = 256,
                 suppressed_classes: Sequence[int] = ()) -> SteeringState:
    """Fit a steering state for block ``layer`` of ``model`` (no parameter is changed).

    Args:
        model: the model to steer (its own device; eval mode during the fit).
        layer: block name (see :func:`hookable_layer_names`).
        forget_images: ``[N_f, C, H, W]`` inputs to erase (>= 1).
        retain_images: ``[N_r, C, H, W]`` inputs to leave alone; calibrate the gate (>= 1).
        target_images: ``[N_t, C, H, W]`` "unknown" inputs whose mean activation is the target (>= 1).
        fit: fitting settings.
        strength: ``lambda``.
        batch_size: images per forward pass.
        suppressed_classes: with an ``abstain`` target, classes put 10 logits below the others
            (the classes of a class-wise request).

    Raises:
        UserInputError: an empty image set, an unknown layer, a non-tensor block output.
    """
    fit = fit or SteeringFit()
    for name, images in (("forget", forget_images), ("retain", retain_images), ("target", target_images)):
        if images.ndim != 4 or images.shape[0] == 0:
            raise UserInputError(f"cannot fit steering on an empty {name} set; it needs at least one image "
                                 f"[N, C, H, W]", field=name, value=tuple(images.shape))
    resolve_layer(model, layer)
    forget_features = collect_pooled_activations(model, layer, forget_images, batch_size)
    retain_features = collect_pooled_activations(model, layer, retain_images, batch_size)
    target_features = collect_pooled_activations(model, layer, target_images, batch_size)
    target_mean = target_features.mean(dim=0)
    if fit.target_response == "abstain":
        head = linear_head(model)
        check_feeds_head(model, layer, head, target_images[:4])
        target_mean = abstain_prototype(head.weight.detach().cpu(), None if head.bias is None
                                        else head.bias.detach().cpu(), target_mean, suppressed_classes)
    basis = fit_erasure_basis(forget_features, target_mean, fit.rank)
    mean, scale, weight, bias = fit_ridge_detector(forget_features, retain_features, fit.ridge)
    partial = SteeringState(layer=layer, strength=float(strength), basis=basis, target_mean=target_mean,
                            feature_mean=mean, feature_scale=scale, detector_weight=weight, detector_bias=bias,
                            gate_low=0.0, gate_high=0.0, fit=fit)
    low, high = gate_thresholds(detector_scores(retain_features, partial), detector_scores(forget_features, partial),
                                fit.false_gate_rate, fit.gate_full_quantile)
    state = SteeringState(**{**partial.__dict__, "gate_low": low, "gate_high": high})
    forget_gate = gate_values(detector_scores(forget_features, state), low, high)
    retain_gate = gate_values(detector_scores(retain_features, state), low, high)
    forget_open = float((forget_gate > 0).float().mean())
    logger.info("steering on %s (C=%d, k=%s): gate open for %.1f%% of forget and %.2f%% of retain inputs",
                layer, state.channels, basis.shape[1] or "all", 100 * forget_open,
                100 * float((retain_gate > 0).float().mean()))
    if forget_open < 0.5:
        logger.warning("the gate on %s separates the forget set poorly (open for %.0f%% of it); try another layer, "
                       "a smaller ridge or a larger false_gate_rate", layer, 100 * forget_open)
    return state


# --------------------------------------------------------------------------------------------- per-position fit
def box_position_mask(boxes_xyxy: Tensor, box_valid: Tensor, feature_hw: tuple[int, int], image_hw: tuple[int, int],
                      expand_cells: float = 0.0) -> Tensor:
    """Which cells of a feature map belong to the boxes: bool ``[B, h, w]``.

    A cell ``(i, j)`` of an ``h x w`` map over an ``H x W`` input has stride ``(H / h, W / w)`` and
    centre ``((j + 0.5) W / w, (i + 0.5) H / h)``; it belongs to a box when its centre lies in the
    box grown by ``expand_cells`` strides on every side (the anchor rule of YOLO's task-aligned
    assigner for ``expand_cells = 0``). The cell holding a box's centre always belongs to it, so
    a box smaller than a cell still has one.

    Args:
        boxes_xyxy: ``[B, K, 4]`` boxes in input pixels (x right, y down).
        box_valid: bool ``[B, K]`` (``False`` = padding).
        feature_hw: ``(h, w)`` of the map.
        image_hw: ``(H, W)`` of the input.
        expand_cells: margin in strides.

    Hand case: a 4 x 4 map over a 16 x 16 input (stride 4) and the box ``(0, 0, 6, 6)``: centres
    at 2 and 6 are inside, so cells ``(0..1, 0..1)`` belong; with ``expand_cells = 1`` also row and
    column 2 (centre 10 <= 6 + 4).
    """
    h, w = feature_hw
    height, width = image_hw
    stride_y, stride_x = height / h, width / w
    device = boxes_xyxy.device
    cy = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) * stride_y  # [h]
    cx = (torch.arange(w, device=device, dtype=torch.float64) + 0.5) * stride_x  # [w]
    boxes = boxes_xyxy.double()
    x1 = boxes[..., 0] - expand_cells * stride_x
    y1 = boxes[..., 1] - expand_cells * stride_y
    x2 = boxes[..., 2] + expand_cells * stride_x
    y2 = boxes[..., 3] + expand_cells * stride_y
    inside_y = (cy.view(1, 1, h) >= y1.unsqueeze(-1)) & (cy.view(1, 1, h) <= y2.unsqueeze(-1))  # [B, K, h]
    inside_x = (cx.view(1, 1, w) >= x1.unsqueeze(-1)) & (cx.view(1, 1, w) <= x2.unsqueeze(-1))  # [B, K, w]
    inside = inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)  # [B, K, h, w]
    row = ((boxes[..., 1] + boxes[..., 3]) / 2 / stride_y).floor().long().clamp(0, h - 1)
    col = ((boxes[..., 0] + boxes[..., 2]) / 2 / stride_x).floor().long().clamp(0, w - 1)
    centre = (torch.arange(h, device=device).view(1, 1, h, 1) == row[..., None, None]) & \
        (torch.arange(w, device=device).view(1, 1, 1, w) == col[..., None, None])
    return ((inside | centre) & box_valid.bool()[..., None, None]).any(dim=1)


def scale_boxes(boxes_xyxy: Tensor, factor: float) -> Tensor:
    """Boxes ``[..., 4]`` scaled by ``factor`` about their centres (1 = unchanged)."""
    if factor == 1.0:
        return boxes_xyxy
    centre = (boxes_xyxy[..., :2] + boxes_xyxy[..., 2:]) / 2
    half = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]) * (factor / 2)
    return torch.cat([centre - half, centre + half], dim=-1)


@dataclass(frozen=True)
class BoxedImages:
    """Images with boxes, the input of :func:`fit_position_steering`.

    Attributes:
        images: ``[N, C, H, W]``.
        boxes_xyxy: ``[N, K, 4]`` input pixels; ``box_valid`` bool ``[N, K]`` (``False`` = padding).
        ignore_xyxy: ``[N, J, 4]`` regions that count neither as object nor as background (e.g. the
            forgotten objects of a class request inside retain images); ``ignore_valid`` ``[N, J]``.
    """

    images: Tensor
    boxes_xyxy: Tensor
    box_valid: Tensor
    ignore_xyxy: Tensor | None = None
    ignore_valid: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.boxes_xyxy.shape[:1] != (n,) or self.boxes_xyxy.shape[-1:] != (4,) or \
                self.box_valid.shape != self.boxes_xyxy.shape[:2]:
            raise ValueError(f"expected images [N, C, H, W], boxes [N, K, 4] and valid [N, K], got "
                             f"{tuple(self.images.shape)}, {tuple(self.boxes_xyxy.shape)}, "
                             f"{tuple(self.box_valid.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def boxed_images(batch: Mapping[str, Any], ignore: Mapping[str, Any] | None = None) -> BoxedImages:
    """The images and boxes of a detection stream or batch (keys ``images``, ``boxes_xyxy``,
    ``box_labels``; ``-1`` = padding).

    With ``ignore`` (the forget stream), the forget boxes of every image that is also in ``ignore``
    (same pixels: a class or instance request keeps the image in the retain stream without those
    boxes) become ignore regions: they are neither retained objects nor background.
    """
    images = batch["images"]
    boxes, valid = batch["boxes_xyxy"], batch["box_labels"] >= 0
    if ignore is None:
        return BoxedImages(images, boxes, valid)
    ignore_boxes = torch.zeros(images.shape[0], ignore["boxes_xyxy"].shape[1], 4, dtype=boxes.dtype,
                               device=boxes.device)
    ignore_valid = torch.zeros(images.shape[0], ignore["boxes_xyxy"].shape[1], dtype=torch.bool, device=boxes.device)
    for row, match in _same_images(images, ignore["images"]).items():
        ignore_boxes[row] = ignore["boxes_xyxy"][match].to(boxes)
        ignore_valid[row] = (ignore["box_labels"][match] >= 0).to(boxes.device)
    return BoxedImages(images, boxes, valid, ignore_boxes, ignore_valid)


def _same_images(images: torch.Tensor, others: torch.Tensor) -> dict[int, int]:
    """``{row of images: row of others}`` for the images whose pixels are identical."""
    def fingerprint(x: torch.Tensor) -> list[tuple[float, float]]:
        flat = x.flatten(1).double()
        ramp = torch.linspace(0.5, 1.5, flat.shape[1], dtype=torch.float64, device=flat.device)
        return list(zip(flat.sum(1).tolist(), (flat * ramp).sum(1).tolist(), strict=True))

    index: dict[tuple[float, float], list[int]] = {}
    for j, key in enumerate(fingerprint(others)):
        index.setdefault(key, []).append(j)
    matches: dict[int, int] = {}
    for i, key in enumerate(fingerprint(images)):
        for j in index.get(key, []):
            if torch.equal(images[i], others[j].to(images.device)):
                matches[i] = j
                break
    return matches


@torch.no_grad()
def collect_position_features(model: nn.Module, layer: str, data: BoxedImages, batch_size: int = 32,
                              background_per_image: int = 0, generator: torch.Generator | None = None,
                              background_margin: float = 1.0, object_scale: float = 1.0) -> dict[str, Tensor]:
    """Activation vectors ``[n, C]`` (float32, CPU) of block ``layer`` at object and background positions.

    ``"object"``: cells of the boxes scaled by ``object_scale`` about their centres
    (:func:`box_position_mask`, :func:`scale_boxes`) outside the ignore regions;
    ``"background"``: cells farther than ``background_margin`` strides from any box or ignore
    region, at most ``background_per_image`` per image (0 = all; drawn with ``generator``). Hooks
    already on the model (earlier steering layers) act as usual.
    """
    module = resolve_layer(model, layer)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise UserInputError("a per-position gate needs a block whose output is one [B, C, H, W] map",
                                 field="layer", value=layer)
        captured.append(output.detach().float())

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    device = _device_of(model)
    image_hw = (int(data.images.shape[2]), int(data.images.shape[3]))
    objects: list[Tensor] = []
    backgrounds: list[Tensor] = []
    try:
        for start in range(0, len(data), batch_size):
            rows = slice(start, start + batch_size)
            captured.clear()
            model(data.images[rows].to(device))
            maps = captured[-1]
            feature_hw = (int(maps.shape[2]), int(maps.shape[3]))
            boxes, valid = data.boxes_xyxy[rows].to(device), data.box_valid[rows].to(device)
            in_box = box_position_mask(scale_boxes(boxes, object_scale), valid, feature_hw, image_hw)
            near = box_position_mask(boxes, valid, feature_hw, image_hw, expand_cells=background_margin)
            if data.ignore_xyxy is not None and data.ignore_valid is not None and data.ignore_xyxy.shape[1] > 0:
                ignore_boxes, ignore_valid = data.ignore_xyxy[rows].to(device), data.ignore_valid[rows].to(device)
                in_box &= ~box_position_mask(ignore_boxes, ignore_valid, feature_hw, image_hw)
                near |= box_position_mask(ignore_boxes, ignore_valid, feature_hw, image_hw,
                                          expand_cells=background_margin)
            last = channels_last(maps)
            objects.append(last[in_box].cpu())
            background = ~near
            if background_per_image > 0:
                for b in range(background.shape[0]):
                    cells = torch.nonzero(background[b].flatten()).flatten()
                    if cells.numel() > background_per_image:
                        keep = torch.randperm(cells.numel(), generator=generator)[:background_per_image]
                        chosen = torch.zeros_like(background[b].flatten())
                        chosen[cells[keep.to(cells.device)]] = True
                        background[b] = chosen.view_as(background[b])
            backgrounds.append(last[background].cpu())
    finally:
        handle.remove()
        model.train(was_training)
    channels = int(objects[0].shape[1]) if objects else 0
    return {"object": torch.cat(objects) if objects else torch.empty(0, channels),
            "background": torch.cat(backgrounds) if backgrounds else torch.empty(0, channels)}


def fit_position_steering(model: nn.Module, layers: Sequence[str], forget: BoxedImages, retain: BoxedImages,
                          fit: SteeringFit | None = None, strength: float = 1.0, batch_size: int = 32,
                          max_background: int = 20000, seed: int = 0) -> list[SteeringState]:
    """Fit per-position steering states for the feature maps ``layers`` (see the module docstring).

    The layers are fitted in forward order; each one sees the activations its input receives with
    the earlier layers' hooks on, as at inference. No parameter changes and no hook stays on.

    Args:
        model: the detector (its own device; eval mode during the fit).
        layers: blocks whose outputs are ``[B, C, H, W]`` maps (the YOLO neck outputs).
        forget: images with the boxes to forget (positives).
        retain: images with the boxes to keep (negatives), their background (the target and more
            negatives) and ``ignore`` regions (forget boxes inside retain images).
        fit: fitting settings (``granularity`` is set to ``"position"``).
        strength: ``lambda``.
        batch_size: images per forward pass.
        max_background: background positions kept per layer at most (spread evenly over images).
        seed: seed of the background subsampling.

    A map so coarse that every cell lies within one stride of a box takes the cells outside the
    boxes as background; a map without any such cell is not steered (a warning says so).

    Raises:
        UserInputError: no forget box, no retain image, no background position in any map, an
            unknown layer.
    """
    fit = replace(fit or SteeringFit(), granularity="position")
    if len(forget) == 0 or not bool(forget.box_valid.any()):
        raise UserInputError("cannot fit steering on an empty forget set; it needs at least one forget box",
                             field="forget", value=tuple(forget.boxes_xyxy.shape))
    if len(retain) == 0:
        raise UserInputError("steering needs retain images to calibrate its gate", field="retain",
                             value=tuple(retain.images.shape))
    ordered = forward_order(model, layers)
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, math.ceil(max_background / len(retain)))
    states: list[SteeringState] = []
    steerer: ActivationSteerer | None = None
    try:
        for layer in ordered:
            positives = collect_position_features(model, layer, forget, batch_size,
                                                  object_scale=fit.forget_box_scale)["object"]
            negatives = collect_position_features(model, layer, retain, batch_size, per_image, generator)
            background, kept_objects = negatives["background"], negatives["object"]
            if background.shape[0] == 0:
                background = collect_position_features(model, layer, retain, batch_size, per_image, generator,
                                                       background_margin=0.0)["background"]
            if background.shape[0] == 0:
                logger.warning("%s: every cell of every retain image lies in a box; this map is not steered", layer)
                continue
            target_mean = background.mean(dim=0)
            basis = fit_erasure_basis(positives, target_mean, fit.rank)
            groups = [g for g in (kept_objects, background) if g.shape[0] > 0]
            mean, scale, weight, bias = fit_ridge_detector(positives, groups, fit.ridge)
            partial = SteeringState(layer=layer, strength=float(strength), basis=basis, target_mean=target_mean,
                                    feature_mean=mean, feature_scale=scale, detector_weight=weight,
                                    detector_bias=bias, gate_low=0.0, gate_high=0.0, fit=fit)
            low, high = gate_thresholds([detector_scores(g, partial) for g in groups],
                                        detector_scores(positives, partial), fit.false_gate_rate,
                                        fit.gate_full_quantile)
            state = SteeringState(**{**partial.__dict__, "gate_low": low, "gate_high": high})
            opened = {name: float((gate_values(detector_scores(rows, state), low, high) > 0).float().mean())
                      if rows.shape[0] else math.nan
                      for name, rows in (("forget", positives), ("retain object", kept_objects),
                                         ("background", background))}
            logger.info("position steering on %s (C=%d, k=%s): gate open at %s of the positions", layer,
                        state.channels, basis.shape[1] or "all",
                        ", ".join(f"{100 * v:.1f}% {name}" for name, v in opened.items()))
            if opened["forget"] < 0.5:
                logger.warning("the gate on %s opens at only %.0f%% of the forget-box positions; try a smaller "
                               "ridge or a larger false_gate_rate", layer, 100 * opened["forget"])
            states.append(state)
            if steerer is not None:
                steerer.remove()
            steerer = ActivationSteerer(states).attach(model)
    finally:
        if steerer is not None:
            steerer.remove()
    if not states:
        raise UserInputError("no background position in the retain images of any map; steering a detector needs "
                             "object-free regions", field="retain")
    return states


# --------------------------------------------------------------------------------------------- hooks
class ActivationSteerer:
    """Forward hooks that apply one :class:`SteeringState` per block of a model.

    Example:
        >>> steerer = ActivationSteerer(state).attach(model)  # doctest: +SKIP
        >>> steerer.disable()  # the model answers exactly as before
        >>> steerer.enable()
        >>> steerer.remove()   # hooks gone

    Args:
        states: one state, or several for different blocks (the YOLO neck levels).

    Attributes:
        states: the steering states, one per hooked block.
        enabled: whether the hooks edit activations (a disabled hook returns the block output as is).
        last_gates: block name -> gate of the most recent forward pass (``[B]`` image gates,
            ``[B, H, W]`` position gates).
    """

    def __init__(self, states: SteeringState | Sequence[SteeringState]) -> None:
        self.states: tuple[SteeringState, ...] = (states,) if isinstance(states, SteeringState) else tuple(states)
        layers = [state.layer for state in self.states]
        if not layers or len(set(layers)) != len(layers):
            raise ValueError(f"need one steering state per block, got blocks {layers}")
        self.enabled = True
        self.last_gates: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._kernels: dict[int, tuple[tuple[Any, ...], _Kernel]] = {}

    @property
    def state(self) -> SteeringState:
        """The state of the first (or only) block."""
        return self.states[0]

    @property
    def last_gate(self) -> Tensor | None:
        """The gate of the first (or only) block in the most recent forward pass (``None`` before any)."""
        return self.last_gates.get(self.states[0].layer)

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self, model: nn.Module) -> ActivationSteerer:
        """Register one hook per state on ``model``'s blocks (replacing an earlier attachment).

        Raises:
            UserInputError: the model has no such block (nothing is registered then).
        """
        modules = [resolve_layer(model, state.layer) for state in self.states]
        self.remove()
        for index, module in enumerate(modules):
            self._handles.append(module.register_forward_hook(functools.partial(self._hook, index)))
        return self

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def remove(self) -> None:
        """Unregister the hooks (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def set_strength(self, strength: float) -> None:
        """Set ``lambda`` of every block."""
        self.states = tuple(state.with_strength(strength) for state in self.states)

    def _hook(self, index: int, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not self.enabled:
            return None
        state = self.states[index]
        if not isinstance(output, Tensor):
            raise UserInputError("the steered block's output is not a single tensor", field="layer",
                                 value=state.layer)
        channels = output.shape[1] if output.ndim in (2, 4) else output.shape[-1]
        if channels != state.channels:
            raise UserInputError(f"the steering state has {state.channels} channels but block "
                                 f"{state.layer} outputs {channels}; was it fitted on another model?",
                                 field="layer", value=state.layer)
        key = (output.dtype, output.device, id(state))
        cached = self._kernels.get(index)
        if cached is None or cached[0] != key:
            cached = (key, _kernel(state, output.detach()))
            self._kernels[index] = cached
        edited, gate = steer_activations(output, state, cached[1])
        self.last_gates[state.layer] = gate.detach()
        return edited


# --------------------------------------------------------------------------------------------- save / load
def save_steering(path: str | os.PathLike[str], states: SteeringState | Sequence[SteeringState],
                  extra: dict[str, Any] | None = None) -> Path:
    """Write steering states alone to a ``.safetensors`` file (tensors + JSON metadata).

    Args:
        path: destination; its directory is created; written atomically.
        states: one state, or one per hooked block.
        extra: JSON-serialisable description stored with it (model, forget request, ...).
    """
    from safetensors.torch import save

    states = (states,) if isinstance(states, SteeringState) else tuple(states)
    tensors = {f"{i}.{name}": value for i, state in enumerate(states) for name, value in state.tensors().items()}
    metadata = {"format": STEERING_FORMAT, "states": json.dumps([state.scalars() for state in states], sort_keys=True),
                "extra": json.dumps(extra or {}, sort_keys=True)}
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return Path(path)


def load_steering(path: str | os.PathLike[str]) -> tuple[tuple[SteeringState, ...], dict[str, Any]]:
    """Read a file written by :func:`save_steering`; return ``(states, extra)``.

    Files of the first format (one state, ``vision_unlearn.steering/1``) are read too.

    Raises:
        UserInputError: missing file, or a file that is not a readable steering state.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load

    file = Path(path)
    if not file.is_file():
        raise UserInputError("steering file not found", file=file)
    raw = file.read_bytes()
    try:
        tensors = load(raw)
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8:8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserInputError(f"not a readable steering file ({type(err).__name__})", file=file) from None
    kind = metadata.get("format")
    if kind not in (STEERING_FORMAT, STEERING_FORMAT_V1):
        raise UserInputError(f"not a {STEERING_FORMAT} file", file=file, field="format", value=kind)
    try:
        if kind == STEERING_FORMAT_V1:
            states: tuple[SteeringState, ...] = (SteeringState.from_parts(tensors, json.loads(metadata["state"])),)
        else:
            scalars = json.loads(metadata["states"])
            states = tuple(SteeringState.from_parts(
                {k.split(".", 1)[1]: v for k, v in tensors.items() if k.split(".", 1)[0] == str(i)}, entry)
                for i, entry in enumerate(scalars))
        extra = json.loads(metadata.get("extra") or "{}")
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as err:
        raise UserInputError(f"steering file is incomplete ({type(err).__name__}: {err})", file=file) from None
    if not states:
        raise UserInputError("steering file holds no state", file=file, field="states")
    return states, extra


# --------------------------------------------------------------------------------------------- overhead
@torch.no_grad()
def measure_overhead(model: nn.Module, images: Tensor, steerer: ActivationSteerer, repeats: int = 20,
                     warmup: int = 3, clock: Callable[[], float] | None = None) -> dict[str, float]:
    """Time per batch of ``model(images)`` with the hook enabled vs disabled (interleaved runs).

    Each repeat times one pass without and one with the hook back to back (alternating which goes
    first), so both see the same load of a shared machine; the overhead is the median of the
    per-pair ratios, which is robust to load that drifts between pairs. On the CPU the default
    clock is this process's CPU time (:func:`time.process_time`), which other processes do not
    inflate; on a GPU it is the wall clock with a synchronisation after each pass.

    Returns:
        ``{"ms_per_batch_off", "ms_per_batch_on", "overhead", "fastest_ms_off", "fastest_ms_on"}``:
        median and fastest times, and ``overhead = median(on_i / off_i) - 1`` (0.05 means 5 %
        slower). The hook is left enabled afterwards.
    """
    was_training = model.training
    model.eval()
    images = images.to(_device_of(model))
    if clock is None:
        clock = time.perf_counter if images.is_cuda else time.process_time
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for i in range(warmup + repeats):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                steerer.enabled = on
                start = clock()
                model(images)
                if images.is_cuda:
                    torch.cuda.synchronize(images.device)
                if i >= warmup:
                    times[on].append(clock() - start)
    finally:
        steerer.enabled = True
        model.train(was_training)
    off, on = torch.tensor(times[False], dtype=torch.float64), torch.tensor(times[True], dtype=torch.float64)
    return {"ms_per_batch_off": float(off.median()) * 1e3, "ms_per_batch_on": float(on.median()) * 1e3,
            "overhead": float((on / off).median()) - 1.0, "fastest_ms_off": float(off.min()) * 1e3,
            "fastest_ms_on": float(on.min()) * 1e3}

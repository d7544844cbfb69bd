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
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from rfo_bench.errors import UserInputError
from rfo_bench.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

STEERING_FORMAT = "vision_unlearn.steering/1"
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
    """

    rank: int = 0
    ridge: float = 0.01
    false_gate_rate: float = 0.01
    gate_full_quantile: float = 0.1
    target_response: Literal["unknown", "abstain"] = "unknown"

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


def fit_ridge_detector(forget_features: Tensor, retain_features: Tensor, ridge: float
                       ) -> tuple[Tensor, Tensor, Tensor, float]:
    """Closed-form ridge regression separating forget (target 1) from retain (target 0) features.

    Features ``[N, C]`` are standardised with the mean / standard deviation of both sets; both sets
    carry half of the total sample weight (so a small forget set is not drowned by the retain set);
    the intercept is not penalised. Solves ``(Z^T W Z + ridge * D) theta = Z^T W y`` with ``D`` the
    identity except for a 0 on the intercept.

    Returns:
        ``(feature_mean [C], feature_scale [C], weight [C], bias)``.
    """
    features = torch.cat([forget_features, retain_features]).double()
    n_f, n_r = forget_features.shape[0], retain_features.shape[0]
    mean = features.mean(dim=0)
    scale = features.std(dim=0, unbiased=False).clamp_min(1e-6)
    z = torch.cat([(features - mean) / scale, features.new_ones(n_f + n_r, 1)], dim=1)
    sample_weight = torch.cat([features.new_full((n_f,), 0.5 / n_f), features.new_full((n_r,), 0.5 / n_r)])
    target = torch.cat([features.new_ones(n_f), features.new_zeros(n_r)])
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


def gate_thresholds(retain_scores: Tensor, forget_scores: Tensor, false_gate_rate: float,
                    gate_full_quantile: float) -> tuple[float, float]:
    """``(low, high)``: gate 0 at/below ``low`` (retain upper quantile), 1 at/above ``high``.

    ``high`` is the ``gate_full_quantile`` quantile of the forget scores, raised to ``low`` when the
    two sets overlap (the gate then becomes a step at ``low``).
    """
    low = upper_quantile_threshold(retain_scores, false_gate_rate)
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


def steer_activations(activations: Tensor, state: SteeringState, kernel: _Kernel | None = None
                      ) -> tuple[Tensor, Tensor]:
    """Apply the gated edit ``a' = a - lambda * g * U U^T (a - mu_t)`` to one block output.

    Args:
        activations: ``[B, C]``, ``[B, T, C]`` or ``[B, C, H, W]``.
        state: the fitted steering state.
        kernel: the state folded for the activations' dtype / device (computed when ``None``).

    Returns:
        ``(edited activations, same shape and layout; gate [B])``. Rows with gate 0 are the input
        values themselves (bit for bit).
    """
    kernel = kernel or _kernel(state, activations)
    scores = pool_activations(activations) @ kernel.weight + kernel.bias
    gate = gate_values(scores, state.gate_low, state.gate_high)
    if state.strength == 0.0 or not bool((gate > 0).any()):
        return activations, gate
    open_rows = torch.nonzero(gate > 0).flatten()
    last = channels_last(activations[open_rows])
    offset = last - kernel.target_mean
    if kernel.basis.shape[1] > 0:
        offset = (offset @ kernel.basis) @ kernel.basis.T
    factor = (state.strength * gate[open_rows]).reshape(-1, *([1] * (last.ndim - 1)))
    edited = last - factor * offset
    if activations.ndim == 4:
        edited = edited.permute(0, 3, 1, 2)
    out = activations.clone()
    out[open_rows] = edited.to(activations.dtype)
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
    sequential containers (``layer3``, ``layer3.0``, ``stages.2``, ``blocks.5``)."""
    names: list[str] = []
    for name, child in model.named_children():
        names.append(name)
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
    return names


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module called ``layer`` in ``model.named_modules()``.

    Raises:
        UserInputError: no such module; the message lists the valid block names.
    """
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        valid = ", ".join(hookable_layer_names(model))
        raise UserInputError(f"unknown layer; valid block names: {valid} (any name of model.named_modules() "
                             f"is accepted)", field="layer", value=layer)
    return modules[layer]


def default_layer(model: nn.Module) -> str:
    """The second-to-last feature stage of a timm model (``layer3`` of a ResNet, ``blocks.N-2`` of
    a ViT, ``stages.2`` of a ConvNeXt); the last hookable block otherwise."""
    info = getattr(model, "feature_info", None)
    modules: list[str] = []
    if info is not None:
        try:
            modules = [entry["module"] for entry in info]
        except (TypeError, KeyError):
            modules = list(info.module_name()) if hasattr(info, "module_name") else []
    if len(modules) >= 2:
        return modules[-2]
    if modules:
        return modules[-1]
    names = hookable_layer_names(model)
    if not names:
        raise UserInputError("the model has no sub-modules to hook", field="layer")
    return names[-1]


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


# --------------------------------------------------------------------------------------------- hooks
class ActivationSteerer:
    """Forward hook that applies a :class:`SteeringState` to one block of a model.

    Example:
        >>> steerer = ActivationSteerer(state).attach(model)  # doctest: +SKIP
        >>> steerer.disable()  # the model answers exactly as before
        >>> steerer.enable()
        >>> steerer.remove()   # hook gone

    Attributes:
        state: the steering state.
        enabled: whether the hook edits activations (a disabled hook returns the block output as is).
        last_gate: ``[B]`` gate values of the most recent forward pass (``None`` before any).
    """

    def __init__(self, state: SteeringState) -> None:
        self.state = state
        self.enabled = True
        self.last_gate: Tensor | None = None
        self._handle: torch.utils.hooks.RemovableHandle | None = None
        self._model: nn.Module | None = None
        self._kernel_cache: _Kernel | None = None
        self._kernel_key: tuple[Any, ...] | None = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def attach(self, model: nn.Module) -> ActivationSteerer:
        """Register the hook on ``model``'s block ``state.layer`` (replacing an earlier attachment).

        Raises:
            UserInputError: the model has no such block.
        """
        module = resolve_layer(model, self.state.layer)
        self.remove()
        self._handle = module.register_forward_hook(self._hook)
        self._model = model
        return self

    def enable(self) -> None:
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def remove(self) -> None:
        """Unregister the hook (idempotent)."""
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
            self._model = None

    def set_strength(self, strength: float) -> None:
        self.state = self.state.with_strength(strength)

    def _hook(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        if not self.enabled:
            return None
        if not isinstance(output, Tensor):
            raise UserInputError("the steered block's output is not a single tensor", field="layer",
                                 value=self.state.layer)
        channels = output.shape[1] if output.ndim in (2, 4) else output.shape[-1]
        if channels != self.state.channels:
            raise UserInputError(f"the steering state has {self.state.channels} channels but block "
                                 f"{self.state.layer} outputs {channels}; was it fitted on another model?",
                                 field="layer", value=self.state.layer)
        key = (output.dtype, output.device, id(self.state))
        if self._kernel_key != key:
            self._kernel_cache = _kernel(self.state, output.detach())
            self._kernel_key = key
        edited, gate = steer_activations(output, self.state, self._kernel_cache)
        self.last_gate = gate.detach()
        return edited


# --------------------------------------------------------------------------------------------- save / load
def save_steering(path: str | os.PathLike[str], state: SteeringState, extra: dict[str, Any] | None = None) -> Path:
    """Write the steering state alone to a ``.safetensors`` file (tensors + JSON metadata).

    Args:
        path: destination; its directory is created; written atomically.
        state: the state to save.
        extra: JSON-serialisable description stored with it (model, forget request, ...).
    """
    from safetensors.torch import save

    metadata = {"format": STEERING_FORMAT, "state": json.dumps(state.scalars(), sort_keys=True),
                "extra": json.dumps(extra or {}, sort_keys=True)}
    atomic_write_bytes(path, save(state.tensors(), metadata=metadata))
    return Path(path)


def load_steering(path: str | os.PathLike[str]) -> tuple[SteeringState, dict[str, Any]]:
    """Read a file written by :func:`save_steering`; return ``(state, extra)``.

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
    if metadata.get("format") != STEERING_FORMAT:
        raise UserInputError(f"not a {STEERING_FORMAT} file", file=file, field="format", value=metadata.get("format"))
    try:
        state = SteeringState.from_parts(tensors, json.loads(metadata["state"]))
        extra = json.loads(metadata.get("extra") or "{}")
    except (KeyError, TypeError, json.JSONDecodeError) as err:
        raise UserInputError(f"steering file is incomplete ({type(err).__name__}: {err})", file=file) from None
    return state, extra


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

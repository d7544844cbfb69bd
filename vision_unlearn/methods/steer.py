"""``steer``: training-free test-time erasure by gated activation steering.

Vision counterpart of MLLMEraser (test-time unlearning of multimodal LLMs by input-aware activation
steering, 2025). :meth:`Steer.setup` fits, from the original model, an erasure subspace (forget
activations vs the activations of "unknown" inputs), a closed-form ridge gate calibrated on retain
inputs, and hooks them on one block (see :mod:`vision_unlearn.steering`). The run takes **zero
optimizer steps** (``epochs = 0``): the weights never change, and :meth:`Steer.hooks_disabled` /
:meth:`Steer.detach` (the :class:`~vision_unlearn.protocols.TestTimeMethod` protocol) give back the
original model exactly. The state is saved alone with
:meth:`Steer.save` and re-applied with :meth:`Steer.from_file`.

On a detector (batches with ``boxes_xyxy``) the gate is *per position* by default: it is fitted on
the neck feature maps (every ``feature_info`` level: P3, P4, P5 of a YOLO) at the cells inside the
forget boxes against the cells inside retain boxes and on background, and a gated cell is moved to
the mean background activation, so a class request erases only the places that look like the
forgotten class while the other objects of the same images are kept. For an image or instance
request the forget boxes' cells are fitted against the retained objects of the other images: the
gate erases what it can tell apart from them (objects of a class that stays are served only as far
as they look different; the fit logs how many retain-object cells open the gate).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner
from vision_unlearn.steering import (
    ActivationSteerer,
    SteeringFit,
    SteeringState,
    boxed_images,
    check_feeds_head,
    default_layer,
    feature_layer_names,
    fit_position_steering,
    fit_steering,
    forget_only_classes,
    linear_head,
    load_steering,
    make_unknown_images,
    resolve_layer,
    save_steering,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SteerConfig(MethodConfig):
    """Settings of ``steer`` (the optimisation fields of :class:`MethodConfig` are unused).

    Attributes:
        epochs: must stay 0: steering trains nothing.
        layer: block to hook (``layer3``, ``stages.2``, ``blocks.4``), or several separated by
            commas for a per-position gate; ``"auto"`` picks the second-to-last feature stage of a
            timm model (image gate) or every feature stage (position gate: the YOLO neck outputs).
        strength: ``lambda`` (1 = move gated activations fully onto the target within the subspace).
        rank: erasure directions ``k``; 0 = the whole activation space.
        ridge: ridge penalty of the gate detector.
        false_gate_rate: share of retain inputs allowed to open the gate.
        gate_full_quantile: forget-score quantile at which the gate is fully open.
        target: the "unknown" inputs defining the target activation: ``noise``, ``blank`` or ``mixed``.
        target_response: ``unknown`` (the unknown inputs' mean activation), ``abstain`` (that mean
            moved to where the linear head gives equal logits, classes only the forget set holds
            10 logits lower; needs the block feeding the head) or ``auto``: ``abstain`` at the block
            feeding the head when the model has a linear head and ``layer`` is ``auto`` or names that
            block, ``unknown`` (at the second-to-last feature stage for ``layer=auto``) otherwise.
            ``abstain`` is the default because it matched retraining on both digits and RFO patches
            where ``unknown`` failed on one seed of three (see docs/honesty.md).
        target_count: how many unknown inputs to draw.
        target_seed: seed of the unknown inputs.
        max_retain: at most this many retain inputs (evenly spaced) calibrate the gate; 0 = all.
        granularity: ``image`` (one gate per input), ``position`` (one gate per feature-map cell,
            fitted on boxes; needs detection batches) or ``auto`` (``position`` for detection
            batches, else ``image``). With ``position`` the target is the mean background activation
            (``target``, ``target_response`` and ``target_count`` are not used).
        max_background: background cells per layer at most in a position fit.
        gate_dilation: position gate only: a cell takes the largest gate within this many cells.
        forget_box_scale: position gate only: the forget boxes are scaled by this factor about
            their centres to choose the positive cells.
    """

    epochs: int = 0
    layer: str = "auto"
    strength: float = 1.0
    rank: int = 0
    ridge: float = 0.01
    false_gate_rate: float = 0.01
    gate_full_quantile: float = 0.1
    target: Literal["noise", "blank", "mixed"] = "mixed"
    target_response: Literal["auto", "unknown", "abstain"] = "auto"
    target_count: int = 256
    target_seed: int = 0
    max_retain: int = 4096
    granularity: Literal["auto", "image", "position"] = "auto"
    max_background: int = 20000
    gate_dilation: int = 1
    forget_box_scale: float = 0.5

    def __post_init__(self) -> None:
        if self.epochs != 0:
            raise UserInputError("steer takes no training steps; leave epochs at 0", field="epochs",
                                 value=self.epochs)
        if self.target_count < 1:
            raise UserInputError("target_count must be >= 1", field="target_count", value=self.target_count)
        if self.max_retain < 0:
            raise UserInputError("max_retain must be >= 0", field="max_retain", value=self.max_retain)
        if self.granularity not in ("auto", "image", "position"):
            raise UserInputError("granularity must be auto, image or position", field="granularity",
                                 value=self.granularity)
        if self.max_background < 1:
            raise UserInputError("max_background must be >= 1", field="max_background", value=self.max_background)
        if not self.layer.strip() or any(not part.strip() for part in self.layer.split(",")):
            raise UserInputError("layer must name a block (or several, separated by commas) or be 'auto'",
                                 field="layer", value=self.layer)
        self.fit_settings()

    def fit_settings(self, granularity: Literal["image", "position"] = "image",
                     target_response: Literal["unknown", "abstain"] | None = None) -> SteeringFit:
        """The fit's settings; ``target_response`` resolves ``auto`` (``unknown`` when not given)."""
        response = target_response or ("unknown" if self.target_response == "auto" else self.target_response)
        return SteeringFit(rank=self.rank, ridge=self.ridge, false_gate_rate=self.false_gate_rate,
                           gate_full_quantile=self.gate_full_quantile, target_response=response,
                           granularity=granularity, gate_dilation=self.gate_dilation if granularity == "position" else 0,
                           forget_box_scale=self.forget_box_scale if granularity == "position" else 1.0)

    def layers(self) -> list[str]:
        """The named blocks (empty for ``"auto"``)."""
        return [] if self.layer == "auto" else [part.strip() for part in self.layer.split(",")]


def _evenly_spaced(n: int, limit: int) -> torch.Tensor:
    if limit == 0 or n <= limit:
        return torch.arange(n)
    return torch.linspace(0, n - 1, limit).round().long().unique()


@register_unlearner("steer")
class Steer(BaseUnlearner):
    """Gated activation steering on one block; zero training steps."""

    config_class: ClassVar[type[MethodConfig]] = SteerConfig
    epoch_over = "forget"
    needs = frozenset({"forget", "retain"})

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.config: SteerConfig = config  # type: ignore[assignment]
        self.steerer: ActivationSteerer | None = None
        self._model: torch.nn.Module | None = None

    # --- fitting ------------------------------------------------------------------------------
    def setup(self, adapter: ModelAdapter, forget: Batch, retain: Batch, device: torch.device) -> None:
        """Fit the steering state on the original model and hook it (see the module docstring).

        Raises:
            UserInputError: an empty forget or retain set, an unknown layer name, a position gate
                without boxes.
        """
        if forget is None or int(forget["images"].shape[0]) == 0:
            raise UserInputError("cannot fit steering on an empty forget set", field="forget")
        if retain is None or int(retain["images"].shape[0]) == 0:
            raise UserInputError("steering needs retain inputs to calibrate its gate", field="retain")
        model = adapter.model
        named = self.config.layers()
        for layer in named:
            resolve_layer(model, layer)
        boxed = "boxes_xyxy" in forget and "boxes_xyxy" in retain
        granularity = self.config.granularity
        if granularity == "auto":
            granularity = "position" if boxed else "image"
        retain_rows = _evenly_spaced(int(retain["images"].shape[0]), self.config.max_retain).to(retain["images"].device)
        if granularity == "position":
            if not boxed:
                raise UserInputError("a per-position gate is fitted on boxes; it needs a detection data stream",
                                     field="granularity", value=granularity)
            layers = named or feature_layer_names(model) or [default_layer(model)]
            retain_subset = {k: v[retain_rows] for k, v in retain.items() if isinstance(v, torch.Tensor)}
            states = fit_position_steering(
                model, layers, boxed_images(forget), boxed_images(retain_subset, ignore=forget),
                self.config.fit_settings("position"), strength=self.config.strength,
                batch_size=max(self.config.batch_size, 32), max_background=self.config.max_background,
                seed=self.config.target_seed)
            self._attach(model, states)
            return
        if len(named) > 1:
            raise UserInputError("an image gate hooks one block; name one layer (several need granularity=position)",
                                 field="layer", value=self.config.layer)
        layer, response = self._image_layer_and_response(model, named, forget["images"][:2])
        retain_images = retain["images"][retain_rows]
        target = make_unknown_images(forget["images"][:1].cpu(), self.config.target_count, self.config.target,
                                     self.config.target_seed).to(forget["images"].device)
        state = fit_steering(model, layer, forget["images"], retain_images, target,
                             self.config.fit_settings("image", response),
                             strength=self.config.strength, batch_size=max(self.config.batch_size, 256),
                             suppressed_classes=forget_only_classes(forget["labels"], retain["labels"]))
        self._attach(model, [state])

    def _image_layer_and_response(self, model: torch.nn.Module, named: Sequence[str], probe: torch.Tensor
                                  ) -> tuple[str, Literal["unknown", "abstain"]]:
        """The hooked block and the target response of an image gate, resolving ``auto``."""
        wanted = self.config.target_response
        if wanted != "auto":
            return (named[0] if named else default_layer(model)), wanted
        try:
            head = linear_head(model)
        except UserInputError:
            return (named[0] if named else default_layer(model)), "unknown"
        stages = feature_layer_names(model)
        layer = named[0] if named else (stages[-1] if stages else default_layer(model))
        try:
            check_feeds_head(model, layer, head, probe)
        except UserInputError:
            return (named[0] if named else default_layer(model)), "unknown"
        return layer, "abstain"

    def _attach(self, model: torch.nn.Module, states: Sequence[SteeringState]) -> None:
        if self.steerer is not None:
            self.steerer.remove()
        self.steerer = ActivationSteerer(states).attach(model)
        self._model = model

    # --- the loop's interface (never called with epochs = 0) ----------------------------------
    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        raise RuntimeError("steer takes no training steps (epochs must be 0)")

    def owned_step(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                   state: StepState) -> StepOutput:
        raise RuntimeError("steer takes no training steps (epochs must be 0)")

    def state_dict(self) -> dict[str, Any]:
        if self.steerer is None:
            return {}
        return {"states": [{"tensors": state.tensors(), "scalars": state.scalars()} for state in self.steerer.states]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        entries = state["states"] if "states" in state else [state]
        loaded = [SteeringState.from_parts(dict(entry["tensors"]), dict(entry["scalars"])) for entry in entries]
        if self._model is not None:
            self._attach(self._model, loaded)
        else:
            self.steerer = ActivationSteerer(loaded)

    # --- switching ----------------------------------------------------------------------------
    def _require_steerer(self) -> ActivationSteerer:
        if self.steerer is None:
            raise RuntimeError("steer is not fitted: run it (setup) or load a steering file first")
        return self.steerer

    def enable(self) -> None:
        """Switch the erasure on."""
        self._require_steerer().enable()

    def disable(self) -> None:
        """Switch the erasure off: the model answers exactly as the original."""
        self._require_steerer().disable()

    def remove(self) -> None:
        """Unregister the hook from the model."""
        self._require_steerer().remove()

    # --- the TestTimeMethod protocol (vision_unlearn.protocols) ---------------------------------
    @contextlib.contextmanager
    def hooks_disabled(self) -> Iterator[None]:
        """The model answers exactly as the original inside the block; the erasure is back after it."""
        if self.steerer is None:  # nothing fitted, nothing hooked
            yield
            return
        self.steerer.disable()
        try:
            yield
        finally:
            self.steerer.enable()

    def detach(self) -> None:
        """Remove the hooks from the model for good (a no-op when nothing is hooked)."""
        if self.steerer is not None:
            self.steerer.remove()

    def save(self, path: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> Path:
        """Save the steering states alone (``.safetensors``, a few kB per block) with this config."""
        info = {"method": "steer", "config": asdict(self.config), **dict(extra or {})}
        return save_steering(path, self._require_steerer().states, info)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], adapter: ModelAdapter | None = None) -> Steer:
        """Rebuild from :meth:`save`; attach to ``adapter.model`` when given.

        Raises:
            UserInputError: unreadable file, or a model without the saved layer.
        """
        states, extra = load_steering(path)
        saved = {k: v for k, v in dict(extra.get("config") or {}).items() if k in SteerConfig.__dataclass_fields__}
        method = cls(SteerConfig(**saved) if saved else SteerConfig(layer=",".join(s.layer for s in states)))
        if adapter is not None:
            method._attach(adapter.model, states)
        else:
            method.steerer = ActivationSteerer(states)
        return method


STEERING_FILE = "steering.safetensors"
"""Name of the steering state that ``vision-unlearn run --method steer`` writes next to the model."""


def save_steering_state(method: Any, path: str | os.PathLike[str], extra: Mapping[str, Any]) -> Path | None:
    """Write the steering state of a fitted ``steer`` run to ``path``; ``None`` for any other method.

    Load it back onto a model with ``Steer.from_file(path, adapter)`` (it hooks ``adapter.model``).
    """
    if not isinstance(method, Steer) or method.steerer is None:
        return None
    return method.save(path, extra=dict(extra))

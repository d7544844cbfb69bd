"""The hook object: :class:`ActivationSteerer` applies fitted states to a model's blocks, can be
disabled (the model answers exactly as before) and removed."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from vision_unlearn.steering.algebra import GateKernel, fold_kernel, steer_activations
from vision_unlearn.steering.layers import resolve_layer
from vision_unlearn.steering.state import SteeringState


class ActivationSteerer:
    """Forward hooks that apply one :class:`~vision_unlearn.steering.SteeringState` per block of a model.

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
        self._kernels: dict[int, tuple[tuple[Any, ...], GateKernel]] = {}

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
            cached = (key, fold_kernel(state, output.detach()))
            self._kernels[index] = cached
        edited, gate = steer_activations(output, state, cached[1])
        self.last_gates[state.layer] = gate.detach()
        return edited

"""Saving and loading steering states alone, as ``.safetensors`` (tensors + JSON metadata)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes
from vision_unlearn.steering.state import SteeringState

STEERING_FORMAT = "vision_unlearn.steering/2"
"""One or more states (one per hooked block)."""
STEERING_FORMAT_V1 = "vision_unlearn.steering/1"
"""The first format: exactly one state (still read)."""


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

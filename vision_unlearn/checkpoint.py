"""Checkpoint files: written atomically, read with ``torch.load(weights_only=True)``.

Two kinds of files share one container (a dict of tensors and plain values):

* a *model file* (``kind="model"``): the weights plus the JSON description of the model
  (:meth:`~vision_unlearn.protocols.ModelAdapter.describe`) so it can be rebuilt without guessing;
* a *run checkpoint* (``kind="run"``): model, optimizer, method and RNG states and the position in
  the data order, so that :mod:`vision_unlearn.loop` resumes to the same final weights.

A file that cannot be read, or is not one of ours, raises
:class:`~toolkit_core.errors.UserInputError` naming the file.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

FORMAT = "vision_unlearn/1"


def _refused_global(err: BaseException) -> str | None:
    """The global a ``weights_only`` load refused (``"posix.system"``), read from torch's message."""
    match = re.search(r"\bGLOBAL (\S+)", str(err))  # torch: "Unsupported global: GLOBAL io.open ..."
    return match.group(1) if match else None


def save_checkpoint(path: str | os.PathLike[str], kind: str, payload: dict[str, Any],
                    meta: dict[str, Any] | None = None) -> Path:
    """Atomically write ``payload`` (tensors, numbers, strings, nested dicts/lists) to ``path``.

    Args:
        path: destination file; its directory is created.
        kind: ``"model"`` or ``"run"``; checked again on load.
        payload: what to save; must be loadable with ``weights_only=True``.
        meta: JSON-serialisable description stored as text next to the payload.

    Returns:
        The path written.
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "kind": kind, "meta": json.dumps(meta or {}, sort_keys=True),
                "payload": payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_checkpoint(path: str | os.PathLike[str], kind: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Read a file written by :func:`save_checkpoint`; return ``(payload, meta)``.

    Raises:
        UserInputError: missing, truncated or corrupted file, a file that is not a
            ``vision_unlearn`` checkpoint, or one of the wrong kind.
    """
    file = Path(path)
    if not file.is_file():
        raise UserInputError("checkpoint file not found", file=file)
    try:
        data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        reason = _refused_global(err)
        what = f"refused: it names {reason}, which a checkpoint never holds" if reason else "corrupted checkpoint"
        raise UserInputError(f"{what} (UnpicklingError)", file=file) from None
    except Exception as err:  # torch raises many types (RuntimeError, EOFError, struct.error, ...) for damaged files
        raise UserInputError(f"corrupted or unreadable checkpoint ({type(err).__name__})", file=file) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserInputError(f"not a {FORMAT} checkpoint", file=file)
    if data.get("kind") != kind:
        raise UserInputError(f"expected a {kind!r} checkpoint", file=file, field="kind", value=data.get("kind"))
    try:
        meta = json.loads(data.get("meta") or "{}")
    except json.JSONDecodeError:
        raise UserInputError("checkpoint metadata is corrupted", file=file) from None
    return data["payload"], meta


def save_model(path: str | os.PathLike[str], state_dict: dict[str, torch.Tensor], description: dict[str, Any],
               extra: dict[str, Any] | None = None) -> Path:
    """Save model weights with the description needed to rebuild the model."""
    meta = {"model": description, **(extra or {})}
    return save_checkpoint(path, "model", {"state_dict": {k: v.detach().cpu() for k, v in state_dict.items()}},
                           meta)


def load_model_file(path: str | os.PathLike[str]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a model file; return ``(state_dict, meta)`` where ``meta["model"]`` describes the model."""
    payload, meta = load_checkpoint(path, "model")
    state = payload.get("state_dict") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or "model" not in meta:
        raise UserInputError("model file lacks weights or model description", file=path)
    return state, meta

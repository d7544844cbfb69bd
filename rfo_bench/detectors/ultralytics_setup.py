"""Ultralytics set-up, and the one check every YOLO checkpoint a user passes in goes through.

Ultralytics reads ``.pt`` files with ``torch.load(weights_only=False)``: un-pickling a crafted
checkpoint runs any code it names. Ultralytics (8.4.190 and later) has a restricted mode, switched on
by ``ULTRALYTICS_SAFE_LOAD``: checkpoints are read with ``torch.load(weights_only=True)`` and an
allow-list of Ultralytics and torch model classes, and model yamls are built without ``eval``.
:func:`import_ultralytics` turns that mode on for the whole process before Ultralytics is used, so it
also covers the loads the library makes by itself (``YOLO(path)``, the trainer's ``model``,
``pretrained`` and ``resume``). :func:`check_yolo_checkpoint` reads a user's file that way before
it is handed to Ultralytics and turns every refusal into one :class:`UserInputError` naming the file.

Ultralytics is AGPL-licensed; it is imported only by the YOLO code and only through
:func:`import_ultralytics` (nothing happens when this module is imported).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError

SAFE_LOAD_ENV = "ULTRALYTICS_SAFE_LOAD"
"""Environment variable that switches Ultralytics to restricted (``weights_only``) checkpoint loading."""

CHECKPOINT_SUFFIXES = (".pt",)
"""Suffixes of the YOLO model files accepted from a user (exported formats such as TorchScript, ONNX or
TensorRT would be handed to other loaders, which this toolkit does not vet)."""

MAX_CHECKPOINT_BYTES = 4 << 30
"""Largest YOLO checkpoint read (4 GiB). YOLO11x with its optimizer state is about 0.3 GiB; a torch zip
archive is stored uncompressed, so reading a file costs about its size in memory."""


def import_ultralytics() -> Any:
    """Prepare the offline set-up, switch on restricted checkpoint loading, and return ``ultralytics``.

    Call it before any other Ultralytics import. The restricted mode stays on for the process (and
    the processes it starts): every checkpoint Ultralytics reads afterwards is read with
    ``weights_only=True`` against its allow-list.

    Raises:
        RuntimeError: the installed Ultralytics or torch cannot load checkpoints restrictedly.
    """
    import torch

    from toolkit_core.offline import prepare_offline

    prepare_offline()
    os.environ[SAFE_LOAD_ENV] = "1"  # read at import; also inherited by worker processes
    import ultralytics
    import ultralytics.utils
    from ultralytics.nn import tasks

    if not hasattr(tasks, "SAFE_LOAD") or not hasattr(torch.serialization, "get_unsafe_globals_in_checkpoint"):
        raise RuntimeError(f"ultralytics {ultralytics.__version__} with torch {torch.__version__} cannot load "
                           "checkpoints without running their code; install ultralytics>=8.4.190 and torch>=2.6")
    # Ultralytics was imported before the variable was set (by another caller in this process): the
    # module-level flags are what its loaders read.
    ultralytics.utils.SAFE_LOAD = True
    tasks.SAFE_LOAD = True
    return ultralytics


def _refused_global(err: BaseException) -> str | None:
    """The global a ``weights_only`` load refused (``"io.open"``), from torch's message, if any."""
    for candidate in (err, err.__cause__, err.__context__):
        if candidate is None:
            continue
        match = re.search(r"\bGLOBAL (\S+)", str(candidate))  # torch: "Unsupported global: GLOBAL io.open ..."
        if match:
            return match.group(1)
        match = re.search(r"WeightsUnpickler error: ([^\n]+)", str(candidate))
        if match:
            return match.group(1).strip()
    return None


def check_checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """Check that ``path`` is a regular ``.pt`` file of a plausible size; return it.

    Raises:
        UserInputError: missing, not a file, wrong suffix or too large.
    """
    file = Path(path)
    if not file.is_file():
        raise UserInputError("YOLO checkpoint not found (models are never downloaded; give a local file)", file=file)
    if file.suffix.lower() not in CHECKPOINT_SUFFIXES:
        raise UserInputError(f"a YOLO checkpoint must be a PyTorch {'/'.join(CHECKPOINT_SUFFIXES)} file",
                             file=file, value=file.suffix)
    size = file.stat().st_size
    if size > MAX_CHECKPOINT_BYTES:
        raise UserInputError(f"YOLO checkpoint is {size / 2**30:.1f} GiB, more than the "
                             f"{MAX_CHECKPOINT_BYTES / 2**30:.0f} GiB a detection model can need", file=file)
    return file


def load_yolo_checkpoint(path: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """Read a user's YOLO checkpoint restrictedly; return ``(model in float32 eval mode, checkpoint dict)``.

    Nothing in the file is executed: it is un-pickled with ``weights_only=True`` and Ultralytics'
    allow-list of model classes, whatever the process-wide setting.

    Raises:
        UserInputError: missing, wrongly named, oversized, damaged or foreign file, or one that names
            Python objects outside the allow-list (named in the message).
    """
    file = check_checkpoint_file(path)
    import_ultralytics()
    from ultralytics.nn import tasks

    if not tasks.SAFE_LOAD:  # pragma: no cover - import_ultralytics sets it; never load without it
        raise RuntimeError("Ultralytics restricted loading is off")
    try:
        return tasks.load_checkpoint(str(file), device="cpu")
    except Exception as err:  # every byte of the file is the user's: whatever fails to read is the file's fault
        refused = _refused_global(err)
        if refused is not None:
            raise UserInputError(f"refused: the checkpoint names Python objects outside the Ultralytics model "
                                 f"allow-list ({refused}); loading it could run code", file=file) from None
        if isinstance(err, ModuleNotFoundError):
            raise UserInputError(f"refused: the checkpoint needs the module {err.name!r}, outside the Ultralytics "
                                 "model allow-list", file=file) from None
        text = str(err)
        if "TorchScript" in text:
            detail = "a TorchScript archive, not an Ultralytics checkpoint"
        elif "outside the supported" in text:
            detail = "no Ultralytics model inside"
        else:
            detail = f"damaged, truncated or not a PyTorch checkpoint ({type(err).__name__})"
        raise UserInputError(f"not a readable Ultralytics checkpoint: {detail}", file=file) from None


def check_yolo_checkpoint(path: str | os.PathLike[str]) -> Path:
    """Vet a user's YOLO checkpoint before its path is handed to Ultralytics (``YOLO(path)``).

    The file is read once restrictedly (:func:`load_yolo_checkpoint`); with the process-wide
    restricted mode on, Ultralytics' own read of the same path is restricted too.

    Returns:
        The path, unchanged.

    Raises:
        UserInputError: see :func:`load_yolo_checkpoint`.
    """
    load_yolo_checkpoint(path)
    return Path(path)

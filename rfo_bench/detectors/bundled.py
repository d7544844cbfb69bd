"""The detector the project ships inside the package (its embedded default, as ``yolov8n.pt`` is Ultralytics').

The shipped recipe (``configs/shipped_detector.yaml``, ``make shipped-detector``) trains a detector into a
run folder. :func:`bundle_detector` copies what a user needs from a *finished* run into the package's
``rfo_bench/assets/shipped_detector/`` (``rfo-bench bundle --model-dir RUN``): its record (``detector.json``: command, seeds, data hash, compute,
held-out metrics) and the weights file the record names, byte for byte. Nothing else is accepted: the
record must be complete and the weights must match its SHA-256, so the bundle holds only weights the
recorded command produced. :func:`bundled_detector` finds that folder (``None`` in an installation without
it); loading goes through the same checks as any recipe-trained detector
(:func:`rfo_bench.detectors.shipped.load_shipped_detector`: hash first, then the restricted loader).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError

BUNDLE_NAME = "shipped_detector"
"""Folder of the bundled detector under ``rfo_bench/assets``."""

REQUIRED_FIELDS = ("command", "recipe_sha256", "data_seeds", "data_sha256", "compute", "held_out_metrics",
                   "film_px", "weights_sha256")
"""What a record must state before its detector is bundled (the issue of trust: how it was made, on what, at
what cost, and how good it is on data it never saw)."""


def bundle_location() -> Path:
    """Where the bundled detector lives inside the installed package (it may not exist)."""
    return Path(__file__).resolve().parent.parent / "assets" / BUNDLE_NAME


def detector_name(folder: str | Path) -> str:
    """How commands and reports name a detector folder: ``shipped`` for the bundled one (where an installation
    keeps it differs between machines; ``shipped`` is what ``--detector``/``--model-dir``/``start:`` accept),
    else the folder as given."""
    try:
        return "shipped" if Path(folder).resolve() == bundle_location() else str(folder)
    except (OSError, RuntimeError):
        return str(folder)


def bundled_detector(location: str | Path | None = None) -> Path | None:
    """The bundled detector's folder when this installation holds one (record and weights), else ``None``.

    The weights are not read here; :func:`rfo_bench.detectors.shipped.load_shipped_detector` checks them.
    """
    from rfo_bench.detectors.api import RECORD_NAME

    folder = Path(location) if location is not None else bundle_location()
    record = folder / RECORD_NAME
    if not record.is_file():
        return None
    try:
        weights = json.loads(record.read_text(encoding="utf-8")).get("weights")
    except (OSError, ValueError, AttributeError):
        return folder  # a damaged bundle is reported by the loader, with the file named
    return folder if isinstance(weights, str) and (folder / weights).is_file() else None


def require_bundled_detector(field: str) -> Path:
    """The bundled detector's folder (for a command's ``shipped`` value).

    Raises:
        UserInputError: this installation holds none (naming ``field``).
    """
    location = bundled_detector()
    if location is None:
        raise UserInputError("this installation holds no shipped detector (train it with make shipped-detector, "
                             "then rfo-bench bundle --model-dir runs/shipped)", file=bundle_location(), field=field,
                             value="shipped")
    return location


def check_finished_run(run_dir: str | Path) -> dict[str, Any]:
    """The record of a finished recipe run whose weights match it, with every :data:`REQUIRED_FIELDS` present.

    Raises:
        UserInputError: not a finished recipe run, a field missing, or weights that differ from the record.
    """
    from rfo_bench.detectors.api import RECORD_NAME, read_record, record_weights_path
    from rfo_bench.detectors.provenance import verify_weights

    record = read_record(run_dir)
    path = Path(run_dir) / RECORD_NAME
    for field in REQUIRED_FIELDS:
        if record.get(field) in (None, "", {}, []):
            raise UserInputError("not a finished recipe run (rfo-bench train --config); its record lacks this",
                                 file=path, field=field)
    weights = record_weights_path(run_dir, record)
    verify_weights(weights, record["weights_sha256"], required=True)
    return record


def bundle_detector(run_dir: str | Path, location: str | Path | None = None) -> Path:
    """Copy a finished recipe run's record and weights into the bundle (replacing an earlier bundle).

    Returns:
        The bundle folder.

    Raises:
        UserInputError: see :func:`check_finished_run`.
    """
    from rfo_bench.detectors.api import RECORD_NAME
    from rfo_bench.detectors.provenance import verify_weights
    from toolkit_core.output_dirs import swap_in

    record = check_finished_run(run_dir)
    target = Path(location) if location is not None else bundle_location()
    if target.is_symlink() or target.exists() and not _only_a_bundle(target):
        raise UserInputError("refusing to replace: it is not a bundled detector (only its record and weights)",
                             file=target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        weights = staging / record["weights"]
        weights.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(run_dir) / record["weights"], weights)
        shutil.copyfile(Path(run_dir) / RECORD_NAME, staging / RECORD_NAME)
        verify_weights(weights, record["weights_sha256"], required=True)  # the copy, byte for byte
        swap_in(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own temporary folder; gone after a successful swap
    return target


def _only_a_bundle(folder: Path) -> bool:
    """True when ``folder`` holds a bundled detector and nothing else: its record and the folder of its weights."""
    from rfo_bench.detectors.api import RECORD_NAME

    if bundled_detector(folder) is None:
        return False
    try:
        weights = json.loads((folder / RECORD_NAME).read_text(encoding="utf-8"))["weights"]
        kept = {RECORD_NAME, Path(weights).parts[0]}
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return False  # a damaged record: nothing says what the folder holds
    return {p.name for p in folder.iterdir()} <= kept

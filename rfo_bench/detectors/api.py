"""The one door in: train a registered detector, reload it, predict.

A trained detector is a directory holding ``detector.json`` (model name, family, the full
:class:`~rfo_bench.detectors.config.TrainConfig`, the category table, training sources, history and
seconds) and its weights. :func:`load_detector` returns an object with
``predict(pixels) -> Detections`` whatever the family, so prediction, evaluation and the leaderboard
never branch on the model type.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rfo_bench.detectors.config import RUNTIME_FIELDS, TrainConfig
from rfo_bench.detectors.data import CategoryMap, category_map, count_objects, require_trainable
from rfo_bench.detectors.detections import Detections
from rfo_bench.detectors.registry import get_detector
from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_output, atomic_write_bytes, seed_everything, sha256_text

logger = logging.getLogger(__name__)

MAX_WEIGHTS_BYTES = 4 << 30
"""Largest weights file read (4 GiB; the largest baseline, Faster R-CNN ResNet-50, is about 0.17 GiB)."""

RECORD_NAME = "detector.json"
MAX_RECORD_BYTES = 16 << 20
"""Largest ``detector.json`` read (a record with its training history is a few hundred KiB)."""
RECORD_FORMAT = "rfo-detector/1"


class TrainedDetector(Protocol):
    """What prediction needs from a trained model of any family."""

    categories: CategoryMap

    def predict(self, pixels: np.ndarray) -> Detections:
        """Detect on one ``float32 [H, W]`` image in ``[0, 1]`` (bright = dense)."""
        ...


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train_detector`.

    Attributes:
        run_dir: the trained detector's directory (pass to :func:`load_detector`).
        train_seconds: wall-clock seconds spent training (data preparation included), over every segment of a
            resumed run.
        record: the content of ``detector.json``.
    """

    run_dir: Path
    train_seconds: float
    record: dict[str, Any]


COMPUTE_LEDGER = "compute.json"
"""Compute of earlier, interrupted segments of a resumable run (summed into the final record)."""

RUN_SETTINGS = "settings.json"
"""What a run was started with (its settings without the runtime fields, and its data hash): ``--resume``
refuses other settings. The Ultralytics trainer would otherwise finish the schedule stored in its own
checkpoint and the record would state the new one."""

CHECKPOINT_NAME = "checkpoint.pt"
"""Resumable state of a torchvision run (weights, optimiser, schedule, position in the data)."""


def train_detector(
    config: TrainConfig,
    train_sets: Sequence[DetectionDataset],
    out_dir: str | Path,
    *,
    val_set: DetectionDataset | None = None,
    progress: bool = True,
    resume: bool = False,
    command: str | None = None,
    extra_record: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``config.model`` on the union of ``train_sets`` and save it under ``out_dir``.

    With ``config.tiling`` the films are first cut into tiles at native spacing
    (:func:`~rfo_bench.detectors.tiling.write_tile_dataset`, into a hidden folder of ``out_dir`` that is
    removed afterwards) and the detector trains on those; :func:`load_detector` then predicts sliced.

    Args:
        config: model, recipe, seed, backbone, optional local weights, device, tiling, checkpoints.
        train_sets: one or more datasets (e.g. real + synthetic) trained on together.
        out_dir: output directory (created).
        val_set: optional validation data (used by the Ultralytics trainer for its best-epoch choice).
        progress: show progress bars.
        resume: continue an interrupted run in ``out_dir`` from its checkpoint (same config and data).
        command: the command line, kept in the record.
        extra_record: more entries for ``detector.json`` (e.g. a recipe's data seeds).

    Raises:
        UserInputError: unknown model, no images / no positive image in the training data, a checkpoint
            of another configuration.
    """
    from rfo_bench.detectors.provenance import ComputeMeter, dataset_sha256

    spec = get_detector(config.model)
    require_trainable(train_sets)
    categories = category_map(train_sets)
    if config.weights and spec.family != "torchvision":
        from rfo_bench.detectors.ultralytics_setup import check_yolo_checkpoint

        check_yolo_checkpoint(config.weights)  # a refused file: nothing written, not even the output folder
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)  # the Ultralytics trainer is told again (it resets the count)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meter = ComputeMeter(config.device)
    earlier = _read_ledger(out) if resume else {}
    seed_everything(config.seed)
    positives, objects = count_objects(train_sets)
    logger.info("training %s (%s) on %d images (%d positive, %d objects), seed %d", spec.name, spec.family,
                sum(len(d) for d in train_sets), positives, objects, config.seed)
    data_sha256 = meter.data_sha256 = dataset_sha256(train_sets)
    settings = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_FIELDS}
    fingerprint = sha256_text(json.dumps([settings, data_sha256], sort_keys=True))
    done = _finished_record(out, settings, data_sha256) if resume else None
    if done is not None:  # a --resume of a finished run: nothing to cut or train again
        logger.info("the run in %s has finished; nothing to resume", out)
        return TrainResult(run_dir=out, train_seconds=float(done.get("train_seconds", 0.0)), record=done)
    _keep_run_settings(out, settings, data_sha256, resume=resume)
    start = time.perf_counter()
    finished = False
    with _ledger_kept(out, meter, earlier), \
            _tiled(config, train_sets, val_set, categories, out, spec.family, fingerprint) as (fit_sets, fit_val, tile_counts):
        try:
            if spec.family == "torchvision":
                if fit_val is not None:
                    logger.info("validation data is not used by the torchvision loop (it trains for the recipe's epochs)")
                weights, history = _train_torchvision(spec.builder, config, fit_sets, categories, out, progress,
                                                      resume=resume, fingerprint=fingerprint)
            else:
                from rfo_bench.detectors.yolo import train_ultralytics

                weights, history = train_ultralytics(spec.builder, config, fit_sets, categories, out,
                                                     val_set=fit_val, resume=resume, progress=progress)
            finished = True
        finally:
            if not finished:  # an interrupted segment: its compute is added when the run is resumed
                _write_ledger(out, meter.report(earlier))
    compute = meter.report(earlier)
    # every segment's wall time: a resumed run's last segment alone may be seconds (it found the run finished)
    seconds = time.perf_counter() - start + float(earlier.get("wall_seconds", 0.0))
    from toolkit_core.utils import sha256_file

    record = {
        "format": RECORD_FORMAT,
        "model": spec.name,
        "family": spec.family,
        "config": config.to_dict(),
        "categories": categories.to_list(),
        "weights": weights,
        "weights_sha256": sha256_file(out / weights),
        "train_seconds": seconds,
        "compute": compute,
        "command": command,
        "data_sha256": data_sha256,
        "train_sources": [d.source for d in train_sets],
        "train_images": sum(len(d) for d in train_sets),
        "train_positive_images": positives,
        "train_objects": objects,
        "tiles": tile_counts,
        "history": history,
        **(extra_record or {}),
    }
    atomic_write_bytes(out / RECORD_NAME, json.dumps(record, indent=2).encode("utf-8"))
    if (out / COMPUTE_LEDGER).is_file():
        (out / COMPUTE_LEDGER).unlink()  # written by this run (a fixed name inside its output folder)
    logger.info("trained %s in %.1f s -> %s", spec.name, seconds, out)
    return TrainResult(run_dir=out, train_seconds=seconds, record=record)


def _finished_record(out: Path, settings: dict[str, Any], data_sha256: str) -> dict[str, Any] | None:
    """The record of a finished run of these settings on this data in ``out`` whose weights match it, else ``None``."""
    from rfo_bench.detectors.provenance import verify_weights

    try:
        record = read_record(out)
        stated = {k: v for k, v in record["config"].items() if k not in RUNTIME_FIELDS}
        if stated != json.loads(json.dumps(settings)) or record.get("data_sha256") != data_sha256:  # as stored
            return None
        verify_weights(out / record["weights"], record.get("weights_sha256"), required=True)
    except (UserInputError, KeyError, TypeError, AttributeError):
        return None
    return record


def _first_difference(started: Any, asked: Any, path: str = "") -> str | None:
    """The dotted path of the first setting where ``asked`` differs from ``started`` (``None``: equal)."""
    if isinstance(started, dict) and isinstance(asked, dict):
        for key in sorted(set(started) | set(asked)):
            found = _first_difference(started.get(key), asked.get(key), f"{path}.{key}" if path else key)
            if found is not None:
                return found
        return None
    return None if started == asked else path


def _keep_run_settings(out: Path, settings: dict[str, Any], data_sha256: str, *, resume: bool) -> None:
    """Write what a fresh run starts with; on ``resume``, refuse settings other than those (:data:`RUN_SETTINGS`).

    A run started by a release that wrote no settings file is resumed as asked, and the file written then.
    Other data is resumed with a warning, not refused: films rendered again on another machine may differ by
    rounding in a few pixels, and each segment's record states the data it trained on.

    Raises:
        UserInputError: ``resume`` with settings other than the run's, naming the first that differs.
    """
    path = out / RUN_SETTINGS
    asked = json.loads(json.dumps(settings))  # as stored: tuples become lists
    if resume and path.is_file():
        try:
            started = json.loads(path.read_text(encoding="utf-8")) if path.stat().st_size <= 1 << 20 else None
        except (OSError, ValueError):
            started = None
        if not isinstance(started, dict) or not isinstance(started.get("settings"), dict):
            raise UserInputError("unreadable; resume needs the settings the run started with", file=path)
        field = _first_difference(started["settings"], asked)
        if field is not None:
            raise UserInputError(
                f"the run was started with {_setting(started['settings'], field)}, this command asks for "
                f"{_setting(asked, field)}; resume it with its own settings or train into a new folder",
                file=path, field=field)
        if started.get("data_sha256") != data_sha256:
            logger.warning("resuming %s on other training data than it started on (SHA-256 %.12s, now %.12s); the "
                           "record states each segment's", out, started.get("data_sha256"), data_sha256)
        return
    atomic_write_bytes(path, json.dumps({"settings": asked, "data_sha256": data_sha256}, indent=2).encode("utf-8"))


def _setting(settings: dict[str, Any], field: str) -> str:
    value: Any = settings
    for key in field.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return f"{field}={json.dumps(value)}"


def _read_ledger(out: Path) -> dict[str, Any]:
    path = out / COMPUTE_LEDGER
    if not path.is_file() or path.stat().st_size > 1 << 16:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_ledger(out: Path, compute: dict[str, Any]) -> None:
    atomic_write_bytes(out / COMPUTE_LEDGER, json.dumps(compute).encode("utf-8"))


LEDGER_SECONDS = 60.0
"""How often a running segment writes its compute so far: a run killed outright (no ``finally``) still
counts all but the last minute of what it spent when it is resumed."""


@contextmanager
def _ledger_kept(out: Path, meter: Any, earlier: dict[str, Any]) -> Iterator[None]:
    """Write the run's compute so far to the ledger every :data:`LEDGER_SECONDS` while the block runs."""
    import threading

    stop = threading.Event()

    def keep() -> None:
        while not stop.wait(LEDGER_SECONDS):
            try:
                _write_ledger(out, meter.report(earlier))
            except OSError:  # pragma: no cover - a full disk must not stop training; the final write reports it
                logger.warning("could not write %s", out / COMPUTE_LEDGER)

    writer = threading.Thread(target=keep, name="compute-ledger", daemon=True)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join()


@contextmanager
def _tiled(config: TrainConfig, train_sets: Sequence[DetectionDataset], val_set: DetectionDataset | None,
           categories: CategoryMap, out: Path, family: str, fingerprint: str
           ) -> Iterator[tuple[list, Any, dict[str, int] | None]]:
    """The training (and validation) data as the detector sees it: the sets themselves, or their tiles.

    Tiles are cut once per run and kept in the output folder until training finishes, so a resumed run
    does not cut them again (:mod:`rfo_bench.detectors.tile_cache`). Ultralytics reads 8 bits, so its
    tiles are 8-bit PNGs with the rounding its prediction path uses; the torchvision family reads 16-bit tiles.
    """
    if config.tiling is None:
        yield list(train_sets), val_set, None
        return
    from rfo_bench.detectors.provenance import dataset_sha256
    from rfo_bench.detectors.tile_cache import run_tiles, tile_key

    depth = 8 if family == "ultralytics" else 16
    val_sha = dataset_sha256([val_set]) if val_set is not None and len(val_set) else None
    with run_tiles(config.tiling, train_sets, val_set, out=out, seed=config.seed, bit_depth=depth, workers=config.workers,
                   categories=categories.categories, key=tile_key(fingerprint, val_sha, depth)) as (tiles, val, counts):
        yield [tiles], val, counts


def _train_torchvision(builder, config: TrainConfig, train_sets: Sequence[DetectionDataset],
                       categories: CategoryMap, out: Path, progress: bool, *, resume: bool = False,
                       fingerprint: str = "") -> tuple[str, list[dict[str, Any]]]:
    import torch

    from rfo_bench.detectors.data import DetectionSamples, build_transform
    from rfo_bench.detectors.loop import train_torchvision

    recipe = config.recipe
    model = builder(categories.num_classes + 1, config)
    transform = build_transform(recipe.imgsz, hflip_p=recipe.hflip_p, intensity_jitter=recipe.intensity_jitter,
                                seed=config.seed)
    samples = DetectionSamples(train_sets, categories, transform)
    history = train_torchvision(model, samples, recipe, seed=config.seed, device=config.device, progress=progress,
                                amp=config.use_amp, checkpoint=out / CHECKPOINT_NAME,
                                checkpoint_every=config.checkpoint_every, resume=resume, fingerprint=fingerprint)
    with atomic_output(out / "model.pt") as tmp:  # a killed run never leaves a half-written model.pt
        torch.save(model.state_dict(), tmp)
    return "model.pt", history


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """The ``detector.json`` of a trained detector directory.

    Raises:
        UserInputError: no such directory or record, or a record of another format.
    """
    path = Path(run_dir) / RECORD_NAME
    if not path.is_file():
        raise UserInputError(f"not a trained detector directory (no {RECORD_NAME})", file=run_dir)
    if path.stat().st_size > MAX_RECORD_BYTES:
        raise UserInputError(f"detector record larger than {MAX_RECORD_BYTES >> 20} MiB", file=path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserInputError(f"corrupt detector record: {err.msg}", file=path) from None
    if not isinstance(record, dict) or record.get("format") != RECORD_FORMAT:
        raise UserInputError(f"unsupported detector record; expected format {RECORD_FORMAT}", file=path,
                             field="format", value=record.get("format") if isinstance(record, dict) else None)
    for key, kind in (("model", str), ("weights", str), ("config", dict), ("categories", list)):
        if not isinstance(record.get(key), kind):
            raise UserInputError(f"corrupt detector record: expected a {kind.__name__}", file=path, field=key,
                                 value=record.get(key))
    return record


def load_detector(run_dir: str | Path, *, device: str | None = None, slicing=None,
                  require_hash: bool = False) -> TrainedDetector:
    """Reload a trained detector for prediction (weights from its directory, nothing downloaded).

    A detector trained on tiles comes back as a
    :class:`~rfo_bench.detectors.sliced.SlicedDetector`: its ``predict`` takes whole films.

    Args:
        run_dir: the directory written by :func:`train_detector`.
        device: torch device (default: the training device).
        slicing: a :class:`~rfo_bench.detectors.sliced.SliceConfig` (default: the record's ``slicing``, how
            the detector was evaluated, else the defaults; :func:`recorded_slicing`).
        require_hash: refuse a record without ``weights_sha256``.

    Raises:
        UserInputError: no or a corrupt record, missing or oversized weights, weights whose SHA-256
            differs from the record, or weights that do not fit the recorded model.
    """
    detector = _load_unsliced(run_dir, device=device, require_hash=require_hash)
    tiling = detector.config.tiling
    if tiling is None:
        return detector
    from rfo_bench.detectors.sliced import SlicedDetector

    return SlicedDetector(detector, tiling, slicing if slicing is not None else recorded_slicing(run_dir))


def recorded_slicing(run_dir: str | Path):
    """The :class:`~rfo_bench.detectors.sliced.SliceConfig` a detector's record states (its held-out evaluation's),
    or the defaults for a record without one. A field the record leaves out takes its default, except
    ``extent``: a record written before merged boxes could span only the whole views states none, and its
    detector was evaluated with the union of every member (``extent="union"``), so that is what it gets.

    Raises:
        UserInputError: naming ``detector.json`` and the field, for a ``slicing`` entry that is not a valid one.
    """
    from rfo_bench.detectors.sliced import SliceConfig
    from toolkit_core.errors import dataclass_from

    record = read_record(run_dir)
    stated = record.get("slicing")
    path = Path(run_dir) / RECORD_NAME
    if stated is None:
        return SliceConfig()
    if not isinstance(stated, dict):
        raise UserInputError("corrupt detector record: expected a mapping", file=path, field="slicing", value=stated)
    return dataclass_from(SliceConfig, {"extent": "union", **stated}, file=path, key="slicing")


def record_weights_path(run_dir: str | Path, record: dict[str, Any]) -> Path:
    """The weights file a detector record names, refused unless it is a file inside the run folder.

    A record is a user's file: ``weights: ../../elsewhere.pt`` must not make a loader read outside the folder.

    Raises:
        UserInputError: the path leaves the folder, or names no file (missing weights).
    """
    folder = Path(run_dir)
    relative = record["weights"]
    candidate = (folder / relative).resolve()
    if not candidate.is_relative_to(folder.resolve()):
        raise UserInputError("weights path leaves the run folder", file=folder / RECORD_NAME, field="weights",
                             value=relative)
    if not candidate.is_file():
        raise UserInputError("weights file of the trained detector is missing", file=folder / relative)
    return candidate


def _load_unsliced(run_dir: str | Path, *, device: str | None, require_hash: bool):
    from rfo_bench.detectors.provenance import verify_weights

    record = read_record(run_dir)
    weights = record_weights_path(run_dir, record)
    spec = get_detector(record["model"])
    config = TrainConfig.from_dict(record["config"], file=Path(run_dir) / RECORD_NAME)
    if device is not None:
        config = TrainConfig(**{**config.__dict__, "device": device})
    categories = CategoryMap.from_list(record["categories"])
    if weights.stat().st_size > MAX_WEIGHTS_BYTES:
        raise UserInputError(f"weights file is larger than {MAX_WEIGHTS_BYTES >> 30} GiB", file=weights)
    verify_weights(weights, record.get("weights_sha256"), required=require_hash)
    if spec.family == "torchvision":
        return TorchvisionDetector(spec.builder, config, categories, weights)
    from rfo_bench.detectors.yolo import UltralyticsDetector

    return UltralyticsDetector(config, categories, weights)


def _read_state_dict(path: Path, expected: dict[str, Any]) -> dict[str, Any]:
    """Read a ``state_dict`` with ``weights_only=True`` and check it fits ``expected`` (keys and shapes).

    Raises:
        UserInputError: a damaged file, not a state dict, or one of another model (names the first key).
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise UserInputError(f"damaged or unreadable weights file ({type(err).__name__})", file=path) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError("the weights file is not a state dict of tensors", file=path)
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        key = (wrong or missing or unexpected)[0]
        what = "wrong shape" if wrong else "missing" if missing else "unexpected"
        raise UserInputError(f"the weights do not fit the recorded model ({what})", file=path, field=key)
    return state


class TorchvisionDetector:
    """A trained torchvision detector; see :class:`TrainedDetector`."""

    def __init__(self, builder, config: TrainConfig, categories: CategoryMap, weights: Path) -> None:
        import torch

        from rfo_bench.detectors.data import build_transform

        self.config = config
        self.categories = categories
        self.device = torch.device(config.device)
        # the backbone weights come from model.pt, so the local timm checkpoint is not needed again
        build_config = TrainConfig(**{**config.__dict__, "weights": None})
        self.model = builder(categories.num_classes + 1, build_config)
        self.model.load_state_dict(_read_state_dict(weights, self.model.state_dict()))
        self.model.to(self.device).eval()
        self.resize = build_transform(config.recipe.imgsz)

    def predict(self, pixels: np.ndarray) -> Detections:
        import torch

        height, width = pixels.shape[:2]
        resized = self.resize(image=np.asarray(pixels, dtype=np.float32), bboxes=np.zeros((0, 4)), labels=[])["image"]
        scale_x, scale_y = width / resized.shape[1], height / resized.shape[0]
        with torch.inference_mode():
            out = self.model([torch.from_numpy(np.ascontiguousarray(resized))[None].to(self.device)])[0]
        # RetinaNet / FCOS score index 0 too (torchvision keeps it as an untrained background slot); drop it
        keep = out["labels"] > 0
        boxes = out["boxes"][keep].cpu().numpy().astype(np.float32)
        boxes *= np.array([scale_x, scale_y, scale_x, scale_y], dtype=np.float32)
        ids = np.array([self.categories.category_id(int(k)) for k in out["labels"][keep]], dtype=np.int64)
        return Detections(boxes, out["scores"][keep].cpu().numpy().astype(np.float32), ids)

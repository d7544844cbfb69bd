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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rfo_bench.detectors.config import TrainConfig
from rfo_bench.detectors.data import CategoryMap, category_map, count_objects, require_trainable
from rfo_bench.detectors.registry import get_detector
from rfo_bench.errors import UserInputError
from rfo_bench.io.records import DetectionDataset
from rfo_bench.utils import atomic_output, atomic_write_bytes, seed_everything

logger = logging.getLogger(__name__)

MAX_WEIGHTS_BYTES = 4 << 30
"""Largest weights file read (4 GiB; the largest baseline, Faster R-CNN ResNet-50, is about 0.17 GiB)."""

RECORD_NAME = "detector.json"
RECORD_FORMAT = "rfo-detector/1"


@dataclass(frozen=True)
class Detections:
    """Detections on one image, in that image's pixel coordinates.

    Attributes:
        boxes_xyxy: ``float32 [N, 4]`` ``x1, y1, x2, y2`` in pixels.
        scores: ``float32 [N]`` confidence in ``[0, 1]``.
        category_ids: ``int64 [N]`` COCO category ids of the training data.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


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
        train_seconds: wall-clock seconds spent training (data preparation included).
        record: the content of ``detector.json``.
    """

    run_dir: Path
    train_seconds: float
    record: dict[str, Any]


def train_detector(
    config: TrainConfig,
    train_sets: Sequence[DetectionDataset],
    out_dir: str | Path,
    *,
    val_set: DetectionDataset | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``config.model`` on the union of ``train_sets`` and save it under ``out_dir``.

    Args:
        config: model, recipe, seed, backbone, optional local weights and device.
        train_sets: one or more datasets (e.g. real + synthetic) trained on together.
        out_dir: output directory (created).
        val_set: optional validation data (used by the Ultralytics trainer for its best-epoch choice).
        progress: show progress bars.

    Raises:
        UserInputError: unknown model, no images / no positive image in the training data.
    """
    spec = get_detector(config.model)
    require_trainable(train_sets)
    categories = category_map(train_sets)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    positives, objects = count_objects(train_sets)
    logger.info("training %s (%s) on %d images (%d positive, %d objects), seed %d", spec.name, spec.family,
                sum(len(d) for d in train_sets), positives, objects, config.seed)
    start = time.perf_counter()
    if spec.family == "torchvision":
        if val_set is not None:
            logger.info("validation data is not used by the torchvision loop (it trains for the recipe's epochs)")
        weights, history = _train_torchvision(spec.builder, config, train_sets, categories, out, progress)
    else:
        from rfo_bench.detectors.yolo import train_ultralytics

        weights, history = train_ultralytics(spec.builder, config, train_sets, categories, out, val_set=val_set)
    seconds = time.perf_counter() - start
    record = {
        "format": RECORD_FORMAT,
        "model": spec.name,
        "family": spec.family,
        "config": config.to_dict(),
        "categories": categories.to_list(),
        "weights": weights,
        "train_seconds": seconds,
        "train_sources": [d.source for d in train_sets],
        "train_images": sum(len(d) for d in train_sets),
        "train_positive_images": positives,
        "train_objects": objects,
        "history": history,
    }
    atomic_write_bytes(out / RECORD_NAME, json.dumps(record, indent=2).encode("utf-8"))
    logger.info("trained %s in %.1f s -> %s", spec.name, seconds, out)
    return TrainResult(run_dir=out, train_seconds=seconds, record=record)


def _train_torchvision(builder, config: TrainConfig, train_sets: Sequence[DetectionDataset],
                       categories: CategoryMap, out: Path, progress: bool) -> tuple[str, list[dict[str, Any]]]:
    import torch

    from rfo_bench.detectors.data import DetectionSamples, build_transform
    from rfo_bench.detectors.loop import train_torchvision

    recipe = config.recipe
    model = builder(categories.num_classes + 1, config)
    transform = build_transform(recipe.imgsz, hflip_p=recipe.hflip_p, intensity_jitter=recipe.intensity_jitter,
                                seed=config.seed)
    samples = DetectionSamples(train_sets, categories, transform)
    history = train_torchvision(model, samples, recipe, seed=config.seed, device=config.device, progress=progress)
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


def load_detector(run_dir: str | Path, *, device: str | None = None) -> TrainedDetector:
    """Reload a trained detector for prediction (weights from its directory, nothing downloaded)."""
    record = read_record(run_dir)
    spec = get_detector(record["model"])
    config = TrainConfig.from_dict(record["config"])
    if device is not None:
        config = TrainConfig(**{**config.__dict__, "device": device})
    categories = CategoryMap.from_list(record["categories"])
    weights = Path(run_dir) / record["weights"]
    if not weights.is_file():
        raise UserInputError("weights file of the trained detector is missing", file=weights)
    if weights.stat().st_size > MAX_WEIGHTS_BYTES:
        raise UserInputError(f"weights file is larger than {MAX_WEIGHTS_BYTES >> 30} GiB", file=weights)
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

"""Ultralytics YOLO baselines (YOLOv8 / YOLO11, n and s) trained by the Ultralytics trainer.

Models are built from their architecture yaml (random initialisation) or, when
``TrainConfig.weights`` names a local ``.pt``, from that file; nothing is downloaded
(:func:`rfo_bench.offline.prepare_offline` runs before Ultralytics is imported).

The Ultralytics data pipeline decodes images with OpenCV as 8-bit 3-channel arrays, so the training
cache written here stores each image as an 8-bit grayscale PNG (rounded from the float32 pixels the
shared reader returns; DICOM and 16-bit PNG included). This is the one place where precision drops
to 8 bits, and it is a property of the Ultralytics trainer, recorded in the model's record.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rfo_bench.detectors.api import Detections
from rfo_bench.detectors.config import TrainConfig
from rfo_bench.detectors.data import CategoryMap, load_pixels, record_boxes, record_category_ids
from rfo_bench.detectors.registry import register_detector
from rfo_bench.errors import UserInputError
from rfo_bench.io.images import write_png8
from rfo_bench.io.records import DetectionDataset

logger = logging.getLogger(__name__)


def _yaml_builder(yaml_name: str):
    def builder() -> str:
        return yaml_name

    builder.__name__ = f"build_{yaml_name.removesuffix('.yaml')}"
    return builder


for _name, _yaml, _text in (
    ("yolov8n", "yolov8n.yaml", "YOLOv8 nano (Ultralytics), anchor-free one-stage"),
    ("yolov8s", "yolov8s.yaml", "YOLOv8 small (Ultralytics), anchor-free one-stage"),
    ("yolo11n", "yolo11n.yaml", "YOLO11 nano (Ultralytics), anchor-free one-stage"),
    ("yolo11s", "yolo11s.yaml", "YOLO11 small (Ultralytics), anchor-free one-stage"),
):
    register_detector(_name, family="ultralytics", description=_text)(_yaml_builder(_yaml))


def write_training_layout(
    sources: dict[str, Sequence[DetectionDataset]], categories: CategoryMap, root: Path, *, progress: bool = True
) -> Path:
    """Write the Ultralytics layout the trainer reads and return its ``data.yaml``.

    Args:
        sources: split name (``train``, ``val``) -> datasets whose images go into that split.
        categories: class order (YOLO class ``k`` is ``categories.categories[k]``).
        root: directory to write (``images/<split>``, ``labels/<split>``, ``data.yaml``).
    """
    import yaml

    for split, datasets in sources.items():
        image_dir, label_dir = root / "images" / split, root / "labels" / split
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        items = [(i, d, r) for i, d in enumerate(datasets) for r in d.images]
        for source_index, dataset, record in tqdm(items, desc=f"yolo layout {split}", disable=not progress,
                                                  leave=False):
            pixels = load_pixels(dataset, record)
            height, width = pixels.shape[:2]
            stem = f"s{source_index}_{record.image_id:08d}"
            write_png8(image_dir / f"{stem}.png", pixels)
            lines = []
            for box, category_id in zip(record_boxes(record), record_category_ids(record), strict=True):
                x1, y1, x2, y2 = np.clip(box, 0, [width, height, width, height])
                if x2 <= x1 or y2 <= y1:
                    continue
                cls = categories.label(category_id) - 1
                lines.append(f"{cls} {(x1 + x2) / 2 / width:.6f} {(y1 + y2) / 2 / height:.6f} "
                             f"{(x2 - x1) / width:.6f} {(y2 - y1) / height:.6f}")
            (label_dir / f"{stem}.txt").write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    data = {
        "path": str(root.resolve()),
        "train": "images/train",
        "val": "images/val" if "val" in sources else "images/train",
        "names": {k: c.name for k, c in enumerate(categories.categories)},
    }
    target = root / "data.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def train_ultralytics(
    builder, config: TrainConfig, train_sets: Sequence[DetectionDataset], categories: CategoryMap, out: Path,
    *, val_set: DetectionDataset | None = None,
) -> tuple[str, list[dict[str, Any]]]:
    """Train one YOLO model with the Ultralytics trainer; returns ``(weights path relative to out, history)``."""
    from rfo_bench.offline import prepare_offline

    prepare_offline()
    from ultralytics import YOLO

    recipe = config.recipe
    layout = out / "yolo_data"
    if layout.exists():
        shutil.rmtree(layout)
    sources: dict[str, Sequence[DetectionDataset]] = {"train": train_sets}
    if val_set is not None and len(val_set):
        sources["val"] = [val_set]
    data_yaml = write_training_layout(sources, categories, layout)
    if config.weights is not None:
        if not Path(config.weights).is_file():
            raise UserInputError("YOLO weights file does not exist", file=config.weights, field="weights")
        model = YOLO(str(config.weights))
    else:
        model = YOLO(builder())
    model.train(
        data=str(data_yaml), epochs=recipe.epochs, imgsz=recipe.imgsz, batch=recipe.batch_size, workers=0,
        device=config.device, seed=config.seed, deterministic=True, optimizer="SGD", lr0=recipe.lr,
        lrf=recipe.lr_gamma, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
        fliplr=recipe.hflip_p, hsv_v=recipe.intensity_jitter, hsv_h=0.0, hsv_s=0.0,
        project=str(out.resolve()), name="ultralytics", exist_ok=True, amp=False, plots=False, verbose=False,
        val="val" in sources, pretrained=config.weights is not None,
    )
    run = out / "ultralytics"
    best, last = run / "weights" / "best.pt", run / "weights" / "last.pt"
    weights = best if best.is_file() else last
    history = _read_results_csv(run / "results.csv")
    shutil.rmtree(layout, ignore_errors=True)
    return os.path.relpath(weights, out), history


def _read_results_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    history = []
    for row in rows:
        record: dict[str, Any] = {}
        for key, value in row.items():
            try:
                record[key.strip()] = float(value)
            except (TypeError, ValueError):
                record[key.strip()] = value
        history.append(record)
    return history


class UltralyticsDetector:
    """A trained YOLO model; see :class:`rfo_bench.detectors.api.TrainedDetector`."""

    def __init__(self, config: TrainConfig, categories: CategoryMap, weights: Path) -> None:
        from rfo_bench.offline import prepare_offline

        prepare_offline()
        from ultralytics import YOLO

        self.config = config
        self.categories = categories
        self.model = YOLO(str(weights))

    def predict(self, pixels: np.ndarray) -> Detections:
        gray = np.round(np.clip(np.asarray(pixels, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
        bgr = np.repeat(gray[:, :, None], 3, axis=2)
        recipe = self.config.recipe
        result = self.model.predict(bgr, imgsz=recipe.imgsz, conf=recipe.score_threshold,
                                    max_det=recipe.max_detections, device=self.config.device, verbose=False)[0]
        if result.boxes is None or len(result.boxes) == 0:
            return Detections.empty()
        boxes = result.boxes.xyxy.cpu().numpy().astype(np.float32)
        scores = result.boxes.conf.cpu().numpy().astype(np.float32)
        classes = result.boxes.cls.cpu().numpy().astype(np.int64)
        ids = np.array([self.categories.categories[int(k)].id for k in classes], dtype=np.int64)
        return Detections(boxes, scores, ids)

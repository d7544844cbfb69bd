"""Run a trained detector over a dataset and write its predictions in the benchmark formats.

Three files, one per consumer:

* ``predictions.json`` - COCO results (``image_id``, ``category_id``, ``bbox`` ``[x, y, w, h]``,
  ``score``), read by the COCO-style evaluator.
* ``localization.csv`` - the object-CXR / Hopkins RFO localization format: ``image_path,prediction``
  with ``prediction`` = ``"prob x y;prob x y;..."`` (one point per detection: its box centre in
  pixels), used by FROC.
* ``classification.csv`` - ``image_path,prediction`` with the image-level probability that a
  critical RFO is present, used by AUROC.

The image-level probability is the highest detection score among critical categories (categories
whose criticality is unknown count as critical; when the model has no critical category at all, every
detection counts); 0 when there is none.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from rfo_bench.detectors.api import Detections, TrainedDetector
from rfo_bench.detectors.data import CategoryMap, load_pixels
from rfo_bench.io.records import DetectionDataset, ImageRecord
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

PREDICTIONS_JSON = "predictions.json"
LOCALIZATION_CSV = "localization.csv"
CLASSIFICATION_CSV = "classification.csv"


@dataclass(frozen=True)
class ImagePrediction:
    """Detections on one image of a dataset."""

    record: ImageRecord
    detections: Detections


def predict_dataset(detector: TrainedDetector, dataset: DetectionDataset, *, progress: bool = True
                    ) -> list[ImagePrediction]:
    """Detections for every image of ``dataset`` (read through the shared image reader)."""
    out = []
    for record in tqdm(dataset.images, desc="predict", disable=not progress, leave=False):
        out.append(ImagePrediction(record, detector.predict(load_pixels(dataset, record))))
    return out


def coco_results(predictions: Sequence[ImagePrediction]) -> list[dict[str, Any]]:
    """COCO results entries, boxes converted from ``xyxy`` to ``[x, y, w, h]``, highest score first per image."""
    results: list[dict[str, Any]] = []
    for item in predictions:
        det = item.detections
        for index in np.argsort(-det.scores, kind="stable"):
            x1, y1, x2, y2 = (float(v) for v in det.boxes_xyxy[index])
            results.append({
                "image_id": int(item.record.image_id),
                "category_id": int(det.category_ids[index]),
                "bbox": [round(x1, 3), round(y1, 3), round(x2 - x1, 3), round(y2 - y1, 3)],
                "score": round(float(det.scores[index]), 6),
            })
    return results


def critical_mask(detections: Detections, categories: CategoryMap) -> np.ndarray:
    """Boolean ``[N]``: which detections count towards the image-level RFO probability."""
    flags = {c.id: c.critical for c in categories.categories}
    if not any(v is not False for v in flags.values()):
        return np.ones(len(detections), dtype=bool)
    return np.array([flags.get(int(c)) is not False for c in detections.category_ids], dtype=bool)


def image_probability(detections: Detections, categories: CategoryMap) -> float:
    """Highest critical-detection score (0 when none); see the module docstring."""
    mask = critical_mask(detections, categories)
    return float(detections.scores[mask].max()) if mask.any() else 0.0


def localization_text(detections: Detections, categories: CategoryMap) -> str:
    """``"prob x y;prob x y"`` of the critical detections (box centres, pixels), highest score first."""
    mask = critical_mask(detections, categories)
    boxes, scores = detections.boxes_xyxy[mask], detections.scores[mask]
    parts = []
    for index in np.argsort(-scores, kind="stable"):
        x1, y1, x2, y2 = boxes[index]
        parts.append(f"{scores[index]:.6f} {(x1 + x2) / 2:.2f} {(y1 + y2) / 2:.2f}")
    return ";".join(parts)


def _csv_bytes(rows: Sequence[tuple[str, str]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_path", "prediction"])
    writer.writerows(rows)
    return buffer.getvalue().encode("utf-8")


def write_predictions(
    predictions: Sequence[ImagePrediction], categories: CategoryMap, out_dir: str | Path,
    *, coco_category_ids: set[int] | None = None,
) -> dict[str, Path]:
    """Write ``predictions.json``, ``localization.csv`` and ``classification.csv`` into ``out_dir``.

    Args:
        predictions: detections per image.
        categories: the detector's classes (criticality decides the CSV contents).
        out_dir: output directory.
        coco_category_ids: when given (the ground truth's category ids), COCO results of other
            categories are left out of ``predictions.json``: COCO AP cannot score a class the ground
            truth does not define. The CSVs are class-agnostic and keep every critical detection.

    Returns:
        ``{"coco": ..., "localization": ..., "classification": ...}`` paths.
    """
    out = Path(out_dir)
    paths = {"coco": out / PREDICTIONS_JSON, "localization": out / LOCALIZATION_CSV,
             "classification": out / CLASSIFICATION_CSV}
    results = coco_results(predictions)
    if coco_category_ids is not None:
        kept = [r for r in results if r["category_id"] in coco_category_ids]
        if len(kept) < len(results):
            logger.info("left out %d COCO results of categories absent from the ground truth",
                        len(results) - len(kept))
        results = kept
    atomic_write_bytes(paths["coco"], json.dumps(results).encode("utf-8"))
    atomic_write_bytes(paths["localization"], _csv_bytes(
        [(p.record.file_name, localization_text(p.detections, categories)) for p in predictions]))
    atomic_write_bytes(paths["classification"], _csv_bytes(
        [(p.record.file_name, f"{image_probability(p.detections, categories):.6f}") for p in predictions]))
    logger.info("wrote predictions for %d images to %s", len(predictions), out)
    return paths

"""Prediction files: COCO results, Hopkins localization and classification CSVs, read back by the evaluator's readers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.detectors.api import Detections
from rfo_bench.detectors.data import CategoryMap
from rfo_bench.detectors.predict import (
    ImagePrediction,
    coco_results,
    image_probability,
    localization_text,
    write_predictions,
)
from rfo_bench.io.coco import read_coco
from rfo_bench.io.records import Category

CATEGORIES = CategoryMap((Category(3, "needle", True), Category(9, "button", False)))


def _detections() -> Detections:
    return Detections(
        boxes_xyxy=np.array([[10, 20, 30, 60], [0, 0, 4, 2], [5, 5, 15, 25]], dtype=np.float32),
        scores=np.array([0.5, 0.95, 0.8], dtype=np.float32),
        category_ids=np.array([3, 9, 3]),
    )


def test_coco_results_are_xywh_and_sorted_by_score() -> None:
    from rfo_bench.io.records import ImageRecord

    results = coco_results([ImagePrediction(ImageRecord("a.png", 7), _detections())])
    assert [r["score"] for r in results] == [0.95, 0.8, 0.5]
    assert results[0] == {"image_id": 7, "category_id": 9, "bbox": [0.0, 0.0, 4.0, 2.0], "score": 0.95}
    assert results[2]["bbox"] == [10.0, 20.0, 20.0, 40.0]


def test_image_probability_and_points_use_critical_classes_only() -> None:
    detections = _detections()
    assert image_probability(detections, CATEGORIES) == pytest.approx(0.8)  # the 0.95 button is not critical
    # centres of the two needles, highest score first
    assert localization_text(detections, CATEGORIES) == "0.800000 10.00 15.00;0.500000 20.00 40.00"
    assert image_probability(Detections.empty(), CATEGORIES) == 0.0
    assert localization_text(Detections.empty(), CATEGORIES) == ""
    only_non_critical = CategoryMap((Category(9, "button", False),))
    assert image_probability(detections, only_non_critical) == pytest.approx(0.95)


def test_written_files_are_read_by_the_evaluator(tmp_path: Path) -> None:
    from rfo_bench.predictions import read_classification_csv, read_coco_results, read_localization_csv
    from tests.rfo_bench.test_detectors_data import write_tiny_coco

    gt = read_coco(write_tiny_coco(tmp_path / "gt", n=3))
    predictions = [ImagePrediction(r, _detections() if r.image_id == 1 else Detections.empty()) for r in gt.images]
    paths = write_predictions(predictions, CATEGORIES, tmp_path / "pred", coco_category_ids={3})
    assert [r["category_id"] for r in json.loads(paths["coco"].read_text())] == [3, 3]  # button: not in the GT
    lines = paths["localization"].read_text().splitlines()
    assert lines[0] == "image_path,prediction" and lines[1].startswith("images/0.png,0.800000 10.00 15.00;")
    boxes = read_coco_results(paths["coco"], gt)
    points = read_localization_csv(paths["localization"], gt)
    scores = read_classification_csv(paths["classification"], gt)
    assert len(boxes) == 2 and len(points) == 2
    assert np.allclose(scores, [0.8, 0.0, 0.0])

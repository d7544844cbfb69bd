"""COCO bbox metrics: hand-computed cases and agreement with pycocotools / faster-coco-eval.

The native evaluator performs pycocotools' float64 operations in the same order, so on this machine the
two agree bit for bit; a test still allows 1e-12, since another CPU or NumPy build may round a
reduction differently. A precision value is a ratio of counts below 1e4, so a real matching difference
moves a number by far more than 1e-12 (at least 1 / (101 * 10 * K * 1e4) in an average).
"""

from __future__ import annotations

import numpy as np
import pytest

from rfo_bench.metrics import coco_eval as ce


def _gt(boxes_per_image: list[list[list[float]]], category: int = 1) -> dict:
    images, anns = [], []
    for i, boxes in enumerate(boxes_per_image):
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 100, "height": 80})
        for b in boxes:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": category, "bbox": b,
                         "area": b[2] * b[3], "iscrowd": 0})
    return {"images": images, "annotations": anns, "categories": [{"id": category, "name": "sponge"}]}


def test_box_iou_matches_hand_computation():
    dt = np.array([[0.0, 0.0, 10.0, 10.0]])
    gt = np.array([[5.0, 5.0, 10.0, 10.0], [20.0, 20.0, 5.0, 5.0], [0.0, 0.0, 10.0, 10.0]])
    iou = ce.box_iou_xywh(dt, gt)
    assert iou.shape == (1, 3)
    assert iou[0, 0] == pytest.approx(25.0 / 175.0)
    assert iou[0, 1] == 0.0
    assert iou[0, 2] == 1.0


def test_hand_computed_ap_tp_fp_tp():
    # two objects; detections by score: TP (0.9), FP (0.8), TP (0.7)
    # precision/recall points (0.5, 1), (0.5, 1/2), (1, 2/3): the envelope is 1 up to recall 0.5
    # (51 of the 101 thresholds) and 2/3 above it (50 thresholds), at every IoU threshold.
    gt = _gt([[[10, 10, 20, 20]], [[40, 40, 20, 20]]])
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [70, 60, 5, 5], "score": 0.8},
        {"image_id": 2, "category_id": 1, "bbox": [40, 40, 20, 20], "score": 0.7},
    ]
    expected = (51 * 1.0 + 50 * (2.0 / 3.0)) / 101
    result = ce.native_coco_eval(ce.coco_arrays(gt, results))
    assert result.stats["AP"] == pytest.approx(expected, abs=1e-12)
    assert result.stats["AP50"] == pytest.approx(expected, abs=1e-12)
    assert result.stats["AR100"] == 1.0
    assert result.stats["AR1"] == 1.0  # one detection per image suffices here
    assert result.stats["APs"] == pytest.approx(expected, abs=1e-12)  # 400 px² < 32²: all small
    assert result.stats["APm"] == -1.0 and result.stats["APl"] == -1.0


def test_hand_computed_iou_thresholds_split_ap():
    # one object [0,0,10,10], one detection shifted by 2 px: IoU = 80/120 = 2/3,
    # so it is a TP at thresholds 0.50..0.65 (4 of 10) and AP = 0.4, AP50 = 1, AP75 = 0
    gt = _gt([[[0, 0, 10, 10]]])
    results = [{"image_id": 1, "category_id": 1, "bbox": [2, 0, 10, 10], "score": 0.5}]
    stats = ce.native_coco_eval(ce.coco_arrays(gt, results)).stats
    # precision is tp / (tp + fp + eps) in COCO, hence approx
    assert stats["AP"] == pytest.approx(0.4)
    assert stats["AP50"] == pytest.approx(1.0)
    assert stats["AP75"] == 0.0


def test_no_detection_gives_zero_and_no_ground_truth_gives_minus_one():
    gt = _gt([[[0, 0, 10, 10]], []])
    stats = ce.native_coco_eval(ce.coco_arrays(gt, [])).stats
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0
    empty = _gt([[], []])
    stats = ce.native_coco_eval(ce.coco_arrays(empty, [
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.3}])).stats
    assert stats["AP"] == -1.0


def test_max_dets_keeps_highest_scores():
    # 3 detections on one object: only the best one (rank 0) counts for AR1
    gt = _gt([[[0, 0, 10, 10]]])
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [50, 50, 10, 10], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10], "score": 0.5},
    ]
    stats = ce.native_coco_eval(ce.coco_arrays(gt, results)).stats
    assert stats["AR1"] == 0.0
    assert stats["AR10"] == 1.0


TOLERANCE = 1e-12
"""Two float64 code paths of the same formulas; see the module docstring."""


def _assert_same_result(native: ce.CocoResult, reference: ce.CocoResult) -> None:
    assert list(native.stats) == list(reference.stats)
    np.testing.assert_allclose(list(native.stats.values()), list(reference.stats.values()), rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(native.precision, reference.precision, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(native.recall, reference.recall, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("seed", range(8))
def test_agrees_with_pycocotools_on_random_cases(coco_problem, seed):
    gt, results = coco_problem(seed, integer=seed % 2 == 1)
    reference = ce.reference_coco_eval(gt, results, "pycocotools")
    native = ce.native_coco_eval(ce.coco_arrays(gt, results))
    _assert_same_result(native, reference)


def _with_crowd(gt: dict, seed: int, share: float = 0.3) -> dict:
    rng = np.random.default_rng(1000 + seed)
    for ann in gt["annotations"]:
        ann["iscrowd"] = int(rng.random() < share)
    return gt


def test_crowd_box_iou_is_intersection_over_detection_area():
    dt = np.array([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 4.0, 5.0]])
    gt = np.array([[5.0, 5.0, 100.0, 100.0], [5.0, 5.0, 100.0, 100.0]])
    iou = ce.box_iou_xywh(dt, gt, np.array([True, False]))
    # detection 0: 25 px² of its 100 inside; detection 1 lies fully inside: 1 for the crowd box,
    # 20 / 10000 as an ordinary box
    np.testing.assert_allclose(iou, [[0.25, 25.0 / (100 + 10000 - 25)], [1.0, 20.0 / 10000]], rtol=0, atol=1e-15)


def test_crowd_box_matches_several_detections_and_is_ignored():
    # one crowd region and one sponge; three detections inside the crowd region are neither TP nor FP,
    # the detection on the sponge is the only TP: AP = AR = 1. Without crowd handling the crowd box
    # would be a missed object (AR 0.5) and two of the three detections false positives.
    gt = _gt([[[0, 0, 60, 60], [70, 10, 20, 20]]])
    gt["annotations"][0]["iscrowd"] = 1
    results = [
        {"image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 20], "score": 0.9},
        {"image_id": 1, "category_id": 1, "bbox": [30, 30, 20, 20], "score": 0.8},
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 60, 60], "score": 0.7},
        {"image_id": 1, "category_id": 1, "bbox": [70, 10, 20, 20], "score": 0.6},
    ]
    arrays = ce.coco_arrays(gt, results)
    table = ce.match_detections(arrays)
    t50 = 0
    assert table.ignored[0, t50].tolist() == [True, True, True, False]
    assert table.matched[0, t50].tolist() == [True, True, True, True]
    assert table.gt_count[0].sum() == 1  # the crowd region is not an object to find
    stats = ce.native_coco_eval(arrays, table).stats
    assert stats["AP"] == pytest.approx(1.0) and stats["AR100"] == 1.0
    _assert_same_result(ce.native_coco_eval(arrays, table), ce.reference_coco_eval(gt, results, "pycocotools"))


@pytest.mark.parametrize("seed", range(6))
def test_crowd_boxes_agree_with_pycocotools(coco_problem, seed):
    gt, results = coco_problem(40 + seed, integer=seed % 2 == 1)
    gt = _with_crowd(gt, seed)
    assert any(a["iscrowd"] for a in gt["annotations"])
    reference = ce.reference_coco_eval(gt, results, "pycocotools")
    arrays = ce.coco_arrays(gt, results)
    _assert_same_result(ce.native_coco_eval(arrays), reference)


@pytest.mark.parametrize("seed", range(4))
def test_faster_coco_eval_agrees(coco_problem, seed):
    gt, results = coco_problem(100 + seed, integer=seed % 2 == 0)
    fast = ce.reference_coco_eval(gt, results, "faster_coco_eval")
    native = ce.native_coco_eval(ce.coco_arrays(gt, results))
    # faster-coco-eval sums in another order: equal up to the last bits
    np.testing.assert_allclose(list(fast.stats.values()), list(native.stats.values()), rtol=0, atol=1e-12)
    np.testing.assert_allclose(fast.precision, native.precision, rtol=0, atol=1e-12)


def test_reference_backends_handle_empty_results(coco_problem):
    gt, _ = coco_problem(3)
    for backend in ("pycocotools", "faster_coco_eval"):
        assert ce.reference_coco_eval(gt, [], backend).stats["AP"] == 0.0


@pytest.mark.slow
def test_agrees_with_pycocotools_at_benchmark_scale(coco_problem):
    gt, results = coco_problem(7, num_images=1500, num_categories=6, max_dets=30)
    reference = ce.reference_coco_eval(gt, results, "pycocotools")
    native = ce.native_coco_eval(ce.coco_arrays(gt, results))
    _assert_same_result(native, reference)

"""Evaluation from memory: COCO dicts and result lists, per-image arrays (numpy / torch), the incremental
evaluator, and the light, lazy ``rfo_bench`` namespace."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

from rfo_bench.evaluate import EvalConfig, evaluate
from rfo_bench.evaluator import DetectionEvaluator
from rfo_bench.ground_truth import read_ground_truth
from rfo_bench.io.coco import read_coco
from rfo_bench.predictions import read_predictions
from tests.rfo_bench.conftest import random_coco_problem
from toolkit_core.errors import UserInputError

NUMERIC_KEYS = ("coco", "per_category", "strata", "froc", "froc_strata", "froc_per_category", "auroc", "ci95")


def numbers(report: dict[str, Any]) -> dict[str, float]:
    """Every number of the metric sections of a report, by its path (None as NaN)."""
    out: dict[str, float] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{path}.{k}")
        elif isinstance(value, list):
            for k, v in enumerate(value):
                walk(v, f"{path}[{k}]")
        elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
            out[path] = np.nan if value is None else float(value)

    for key in NUMERIC_KEYS:
        walk(report.get(key), key)
    return out


def assert_same_numbers(got: dict[str, Any], expected: dict[str, Any]) -> None:
    a, b = numbers(got), numbers(expected)
    assert a.keys() == b.keys()
    assert len(a) > 50  # the comparison covers the report, not an empty shell
    keys = sorted(a)
    np.testing.assert_allclose([a[k] for k in keys], [b[k] for k in keys], rtol=0, atol=1e-12, equal_nan=True)


def problem(seed: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A random COCO problem whose results are listed image by image (the order per-image arrays give)."""
    gt, results = random_coco_problem(seed, num_images=30, integer=seed % 2 == 1)
    position = {im["id"]: k for k, im in enumerate(gt["images"])}
    results.sort(key=lambda r: position[r["image_id"]])  # stable: each image's detections keep their order
    for image in gt["images"][::7]:
        image["patient_id"] = f"p{image['id'] % 4}"
    return gt, results


def per_image(gt: dict[str, Any], results: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """torchmetrics-style (targets, predictions) lists with xywh boxes, aligned with ``gt['images']``."""
    targets, preds = [], []
    for image in gt["images"]:
        anns = [a for a in gt["annotations"] if a["image_id"] == image["id"]]
        dets = [r for r in results if r["image_id"] == image["id"]]
        targets.append({"image_id": image["id"], "file_name": image["file_name"],
                        "boxes": np.array([a["bbox"] for a in anns]).reshape(-1, 4),
                        "labels": np.array([a["category_id"] for a in anns], dtype=np.int64),
                        "area": np.array([a["area"] for a in anns])})
        preds.append({"boxes": np.array([d["bbox"] for d in dets]).reshape(-1, 4),
                      "scores": np.array([d["score"] for d in dets]),
                      "labels": np.array([d["category_id"] for d in dets], dtype=np.int64)})
    return targets, preds


@pytest.mark.parametrize("seed", [0, 1])
def test_memory_batches_and_files_give_the_same_report(tmp_path, seed):
    gt_dict, results = problem(seed)
    config = EvalConfig(bootstrap=40, seed=3)
    (tmp_path / "gt.json").write_text(json.dumps(gt_dict))
    (tmp_path / "pred.json").write_text(json.dumps(results))
    gt_file = read_coco(tmp_path / "gt.json")
    from_files = evaluate(gt_file, read_predictions(tmp_path / "pred.json", gt_file), config)
    assert from_files["bootstrap"]["unit"] == "image"

    # in one go from memory: a COCO dict and a results list (what pycocotools' loadRes takes)
    assert_same_numbers(evaluate(gt_dict, results, config), from_files)

    # several update() calls with torchmetrics-style targets and per-image arrays
    targets, preds = per_image(gt_dict, results)
    evaluator = DetectionEvaluator(config, categories=gt_dict["categories"], box_format="xywh")
    for start in range(0, len(targets), 7):
        evaluator.update(preds[start:start + 7], targets[start:start + 7])
    assert evaluator.num_images == len(gt_dict["images"])
    assert_same_numbers(evaluator.compute(), from_files)

    # one update() with everything
    evaluator.reset()
    evaluator.update(preds, targets)
    assert_same_numbers(evaluator.compute(), from_files)

    # a fixed ground truth and COCO results in batches
    fixed = DetectionEvaluator(config, ground_truth=gt_dict)
    for start in range(0, len(results), 11):
        fixed.update(results[start:start + 11])
    assert_same_numbers(fixed.compute(), from_files)


def test_torch_tensors_in_xyxy_as_torchmetrics_takes_them():
    torch = pytest.importorskip("torch")
    gt_dict, results = problem(0)
    config = EvalConfig(bootstrap=0)
    reference = evaluate(gt_dict, results, config)
    targets, preds = per_image(gt_dict, results)

    def xyxy(boxes: np.ndarray) -> Any:
        return torch.tensor(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1))

    evaluator = DetectionEvaluator(config, categories=gt_dict["categories"])  # box_format xyxy by default
    evaluator.update([{**p, "boxes": xyxy(p["boxes"]), "scores": torch.tensor(p["scores"]),
                       "labels": torch.tensor(p["labels"])} for p in preds],
                     [{**t, "boxes": xyxy(t["boxes"]), "labels": torch.tensor(t["labels"])} for t in targets])
    got = evaluator.compute()
    # x + w then (x + w) - x: the widths may differ from the file's in the last bit, nothing more
    np.testing.assert_allclose([v for v in got["coco"].values()], [v for v in reference["coco"].values()],
                               rtol=0, atol=1e-9)
    assert got["froc"]["sensitivity"] == pytest.approx(reference["froc"]["sensitivity"], abs=1e-12)


def test_read_predictions_accepts_lists_and_arrays_by_image_id():
    gt_dict, results = problem(2)
    gt = read_ground_truth(gt_dict)
    from_list = read_predictions(results, gt)
    by_id: dict[int, dict[str, list]] = {}
    for r in results:
        entry = by_id.setdefault(r["image_id"], {"boxes": [], "scores": [], "labels": []})
        entry["boxes"].append(r["bbox"])
        entry["scores"].append(r["score"])
        entry["labels"].append(r["category_id"])
    from_arrays = read_predictions(by_id, gt, box_format="xywh")
    np.testing.assert_array_equal(from_list.image_index, from_arrays.image_index)
    np.testing.assert_array_equal(from_list.boxes_xywh, from_arrays.boxes_xywh)
    np.testing.assert_array_equal(from_list.points_xy, from_arrays.points_xy)
    assert from_list.source == "<memory>"
    # numpy scalars in a results list are plain numbers
    numpy_entry = {"image_id": np.int64(gt_dict["images"][0]["id"]), "category_id": np.int32(2),
                   "bbox": np.array([1.0, 2.0, 3.0, 4.0], dtype=np.float32), "score": np.float32(0.5)}
    assert read_predictions([numpy_entry], gt).score.tolist() == [0.5]


def test_point_predictions_from_memory_give_froc_only():
    targets = [{"boxes": [[2, 1, 8, 6]], "labels": [1]}, {"boxes": np.zeros((0, 4)), "labels": []}]
    preds = [{"points": [[5, 3]], "scores": [0.9]}, {"points": [[1, 1]], "scores": [0.8]}]
    evaluator = DetectionEvaluator(EvalConfig(bootstrap=0))
    evaluator.update(preds, targets)
    report = evaluator.compute()
    assert report["coco"] is None
    # 0.9 hits the only object before the first false positive (0.5 FP/image): sensitivity 1 throughout
    assert report["froc"]["sensitivity"] == [1.0] * 7
    assert report["counts"] == {"images": 2, "positive_images": 1, "critical_images": 1, "objects": 1,
                                "predictions": 2}


@pytest.mark.parametrize("case, message", [
    ("no_targets", "targets: give targets with each batch"),
    ("misaligned", "predictions: predictions must be a list with one entry per target"),
    ("bad_shape", r"<memory>: targets\[1\].boxes: boxes must have shape \(N, 4\)"),
    ("negative_box", r"targets\[0\].boxes: box 0 has a negative width or height"),
    ("unknown_label", r"<memory> batch 0: \[0\].labels: unknown category id"),
    ("nan_score", r"\[1\].scores: scores must be finite"),
    ("unknown_target_label", r"<memory>: targets\[1\].labels: unknown category id; the categories are 1 \(got 4\)"),
])
def test_bad_memory_input_names_the_entry(case, message):
    targets = [{"boxes": [[0, 0, 4, 4]], "labels": [1]}, {"boxes": [[1, 1, 3, 3]], "labels": [1]}]
    preds = [{"boxes": [[0, 0, 4, 4]], "scores": [0.5], "labels": [1]}, {"boxes": [[1, 1, 2, 2]], "scores": [0.4],
                                                                        "labels": [1]}]
    evaluator = DetectionEvaluator(EvalConfig(bootstrap=0), categories={1: "sponge"})
    with pytest.raises(UserInputError, match=message):
        if case == "no_targets":
            evaluator.update(preds)
        elif case == "misaligned":
            evaluator.update(preds[:1], targets)
        elif case == "bad_shape":
            evaluator.update(preds, [targets[0], {"boxes": [1, 2, 3], "labels": [1]}])
        elif case == "negative_box":
            evaluator.update(preds, [{"boxes": [[4, 0, 0, 4]], "labels": [1]}, targets[1]])
        elif case == "unknown_target_label":
            evaluator.update(preds, [targets[0], {**targets[1], "labels": [4]}])
        else:  # refused by update(), before the batch is kept
            if case == "unknown_label":
                preds[0]["labels"] = [5]
            else:
                preds[1]["scores"] = [float("nan")]
            evaluator.update(preds, targets)
    assert evaluator.num_images == 0  # a refused batch leaves nothing behind


def test_a_class_detected_but_never_annotated_is_a_category_without_ground_truth():
    targets = [{"boxes": [[0, 0, 10, 10]], "labels": [1]}]
    preds = [{"boxes": [[0, 0, 10, 10], [20, 20, 30, 30]], "scores": [0.9, 0.8], "labels": [1, 8]}]
    evaluator = DetectionEvaluator(EvalConfig(bootstrap=0))
    evaluator.update(preds, targets)
    report = evaluator.compute()
    # zipper (id 8 of the RFO vocabulary) has no object: COCO leaves it out of AP (-1), as pycocotools does
    assert set(report["per_category"]) == {"sponge", "zipper"}
    assert report["per_category"]["zipper"] == {"AP": None, "AP50": None, "num_objects": 0}
    assert round(report["coco"]["AP50"], 9) == 1.0


def test_fixed_ground_truth_refuses_targets_and_compute_needs_data():
    gt_dict, results = problem(0)
    evaluator = DetectionEvaluator(EvalConfig(bootstrap=0), ground_truth=gt_dict)
    with pytest.raises(UserInputError, match="fixed ground truth"):
        evaluator.update(results, [{"boxes": [], "labels": []}])
    with pytest.raises(UserInputError, match="nothing to evaluate"):
        DetectionEvaluator().compute()


def test_eval_config_is_keyword_only():
    with pytest.raises(TypeError):
        EvalConfig("native")  # type: ignore[misc]
    assert EvalConfig(bootstrap=5).bootstrap == 5


def test_importing_rfo_bench_is_light_and_its_public_names_resolve():
    code = ("import sys, rfo_bench; heavy = [m for m in ('numpy', 'matplotlib', 'torch', 'scipy') if m in sys.modules];"
            " print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    import rfo_bench

    assert rfo_bench.__all__ == sorted(rfo_bench.__all__)
    for name in rfo_bench.__all__:
        assert getattr(rfo_bench, name) is not None, name
        assert name in dir(rfo_bench)
    assert rfo_bench.DetectionEvaluator is DetectionEvaluator
    with pytest.raises(AttributeError):
        rfo_bench.no_such_name  # noqa: B018

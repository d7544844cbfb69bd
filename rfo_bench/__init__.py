"""RFO benchmark: dataset I/O, detector baselines and a COCO + FROC + AUROC evaluator for retained foreign objects.

The public names below are imported on first use (``import rfo_bench`` loads nothing else, sets
nothing up)::

    import rfo_bench

    gt = rfo_bench.read_dataset("test.json")
    report = rfo_bench.evaluate_detailed(gt, detections, rfo_bench.EvalConfig(bootstrap=1000)).report

``rfo_bench.evaluate`` is the module :mod:`rfo_bench.evaluate` (its function ``evaluate`` returns the
report dict directly); a package attribute of the same name as a submodule would be replaced by the
module as soon as anything imports it. See ``docs/api.md`` for the Python API with examples.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    # evaluation
    "EvalConfig": "rfo_bench.eval_config",
    "Evaluation": "rfo_bench.eval_config",
    "evaluate_detailed": "rfo_bench.evaluate",
    "write_report": "rfo_bench.evaluate",
    "DetectionEvaluator": "rfo_bench.evaluator",
    # inputs
    "Predictions": "rfo_bench.predictions",
    "read_predictions": "rfo_bench.predictions",
    "read_ground_truth": "rfo_bench.ground_truth",
    # datasets
    "DetectionDataset": "rfo_bench.io.records",
    "ImageRecord": "rfo_bench.io.records",
    "RFOObject": "rfo_bench.io.records",
    "Category": "rfo_bench.io.records",
    "read_dataset": "rfo_bench.io.formats",
    "write_coco": "rfo_bench.io.coco",
    "write_rfo_csv": "rfo_bench.io.rfo_csv",
    "write_yolo": "rfo_bench.io.yolo_format",
    "read_image": "rfo_bench.io.images",
}

__all__ = [
    "Category",
    "DetectionDataset",
    "DetectionEvaluator",
    "EvalConfig",
    "Evaluation",
    "ImageRecord",
    "Predictions",
    "RFOObject",
    "evaluate_detailed",
    "read_dataset",
    "read_ground_truth",
    "read_image",
    "read_predictions",
    "write_coco",
    "write_report",
    "write_rfo_csv",
    "write_yolo",
]

if TYPE_CHECKING:
    from rfo_bench.eval_config import EvalConfig, Evaluation
    from rfo_bench.evaluate import evaluate_detailed, write_report
    from rfo_bench.evaluator import DetectionEvaluator
    from rfo_bench.ground_truth import read_ground_truth
    from rfo_bench.io.coco import write_coco
    from rfo_bench.io.formats import read_dataset
    from rfo_bench.io.images import read_image
    from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject
    from rfo_bench.io.rfo_csv import write_rfo_csv
    from rfo_bench.io.yolo_format import write_yolo
    from rfo_bench.predictions import Predictions, read_predictions


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rfo_bench' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

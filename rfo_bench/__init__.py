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

from toolkit_core.lazy import lazy_exports

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

__all__, __getattr__ = lazy_exports(__name__, _EXPORTS)

def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])

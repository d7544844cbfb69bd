"""One (model, arm, seed) cell of the benchmark: train, predict, evaluate, and keep the result.

A finished cell leaves ``metrics.json`` in its run folder, keyed by the hash of its resolved
configuration; :func:`run_one` reuses it when the key is unchanged, so an interrupted benchmark
resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfo_bench.io.records import DetectionDataset
from rfo_toolkit.leaderboard.config import BenchmarkConfig, ModelEntry
from toolkit_core.records import jsonable
from toolkit_core.utils import atomic_write_bytes, sha256_text

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunMetrics:
    """Evaluation of one trained run on the test split.

    Attributes:
        values: metric name (:data:`METRICS`) -> point estimate (NaN when undefined).
        intervals: metric name -> ``(low, high)`` 95 % bootstrap interval (NaN when not computed).
        froc_fp_per_image: FROC operating points (false positives per image).
        froc_sensitivity: sensitivity at each operating point.
    """

    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    froc_fp_per_image: tuple[float, ...]
    froc_sensitivity: tuple[float, ...]


def evaluate_run(test_json: Path, predictions_dir: Path, *, bootstrap: int, seed: int,
                 report_dir: Path | None = None, gt: DetectionDataset | None = None) -> RunMetrics:
    """Evaluate one run with the toolkit's evaluator (what ``rfo-bench eval`` computes).

    Box metrics come from ``predictions.json``; AUROC from ``classification.csv`` against the
    "critical RFO present" image label. The full evaluation report is written to ``report_dir``.
    ``gt``: the ground truth as read from ``test_json`` and restricted (e.g. a start's unseen classes
    removed); default: ``test_json`` as it is.
    """
    from rfo_bench.detectors.predict import CLASSIFICATION_CSV, PREDICTIONS_JSON
    from rfo_bench.evaluate import EvalConfig, evaluate_detailed, write_report
    from rfo_bench.io.formats import read_dataset
    from rfo_bench.predictions import read_predictions

    gt = read_dataset(test_json) if gt is None else gt
    predictions = read_predictions(predictions_dir / PREDICTIONS_JSON, gt,
                                   classification=predictions_dir / CLASSIFICATION_CSV)
    evaluation = evaluate_detailed(gt, predictions, EvalConfig(bootstrap=bootstrap, seed=seed,
                                                               auroc_positive="critical"))
    if report_dir is not None:
        write_report(evaluation, report_dir, gt, predictions, plots=False)
    return metrics_from_report(evaluation.report)


def metrics_from_report(report: dict[str, Any]) -> RunMetrics:
    """The leaderboard's view of an evaluation report (undefined values, COCO's -1 included, become NaN)."""
    nan = float("nan")

    def number(value: Any) -> float:
        return nan if value is None or value < 0 else float(value)

    coco = report.get("coco") or {}
    froc = report.get("froc") or {}
    values = {"AP50": number(coco.get("AP50")), "AP": number(coco.get("AP")), "FROC": number(froc.get("score")),
              "AUROC": number(report.get("auroc"))}
    ci = report.get("ci95") or {}
    intervals = {}
    for metric, key in (("AP50", "AP50"), ("AP", "AP"), ("FROC", "froc"), ("AUROC", "auroc")):
        pair = ci.get(key)
        intervals[metric] = (number(pair[0]), number(pair[1])) if pair else (nan, nan)
    return RunMetrics(values=values, intervals=intervals,
                      froc_fp_per_image=tuple(float(f) for f in froc.get("fps_per_image", ())),
                      froc_sensitivity=tuple(number(v) for v in froc.get("sensitivity", ())))


def slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


@dataclass(frozen=True)
class RunOutcome:
    """One (model, arm, seed) cell of the benchmark.

    Attributes:
        compute: the cell's compute: ``train_cpu_seconds`` / ``train_accelerator_seconds`` (the training
            record's ledger) and ``cpu_seconds`` (training, prediction and evaluation, this process and its
            children). A from-start run's own compute: the start's is in ``start``.
        start: for a run fine-tuned from a recipe-trained detector: ``detector`` (folder), ``recipe``,
            ``recipe_sha256``, ``weights_sha256`` and ``compute`` (the start's own training compute).
        evaluation: ``sliced`` (predicted over whole films from tiles) or ``whole images``.
    """

    model: str
    arm: str
    seed: int
    run_dir: str
    train_seconds: float
    train_images: int
    metrics: RunMetrics
    compute: dict[str, float] = field(default_factory=dict)
    start: dict[str, Any] | None = None
    evaluation: str = "whole images"


def start_summary(entry: ModelEntry) -> dict[str, Any] | None:
    """What a row fine-tuned from ``entry.start`` states about that start (``None`` for a from-scratch entry)."""
    start = entry.start
    if start is None:
        return None
    return {"detector": start.run_dir, "recipe": start.recipe_name, "recipe_sha256": start.recipe_sha256,
            "weights_sha256": start.weights_sha256, "film_px": start.film_px,
            "unseen_classes": list(start.unseen_classes), "compute": dict(start.compute)}


def run_one(
    entry: ModelEntry, arm: str, seed: int, train_sets: Sequence[DetectionDataset], test: DetectionDataset,
    config: BenchmarkConfig, run_dir: Path, fingerprint: dict[str, Any], *, force: bool, progress: bool,
) -> RunOutcome:
    """Train, predict and evaluate one cell into ``run_dir``, or reuse its finished result.

    ``fingerprint`` is everything the result depends on; its hash is the key a finished cell is reused by
    (``force`` re-runs it anyway).
    """
    from rfo_bench.detectors.api import load_detector, train_detector
    from rfo_bench.detectors.config import TrainConfig
    from rfo_bench.detectors.predict import predict_dataset, write_predictions
    from rfo_bench.detectors.provenance import ComputeMeter
    from rfo_bench.detectors.shipped import check_start_weights

    result_file = run_dir / "metrics.json"
    key = sha256_text(json.dumps(fingerprint, sort_keys=True))
    if result_file.is_file() and not force:
        saved = json.loads(result_file.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            logger.info("reusing finished run %s", run_dir)
            return outcome_from_json(saved["outcome"])
    meter = ComputeMeter(config.device)
    # a start's weights are checked again right before they are read (the benchmark checked them before any work)
    weights = str(check_start_weights(entry.start)) if entry.start is not None else entry.weights
    train_config = TrainConfig(model=entry.name, recipe=entry.train_recipe(), seed=seed, backbone=entry.backbone,
                               weights=weights, device=config.device, tiling=entry.run_tiling)
    trained = train_detector(train_config, train_sets, run_dir / "model", progress=progress)
    detector = load_detector(trained.run_dir, slicing=entry.start.slicing if entry.start is not None else None)
    predictions = predict_dataset(detector, test, progress=progress)
    write_predictions(predictions, detector.categories, run_dir / "predictions",
                      coco_category_ids={c.id for c in test.categories})
    metrics = evaluate_run(Path(test.source), run_dir / "predictions", bootstrap=config.bootstrap, seed=seed,
                           report_dir=run_dir / "eval", gt=test)
    ledger = trained.record.get("compute") or {}
    compute = {"train_cpu_seconds": float(ledger.get("cpu_seconds", 0.0)),
               "train_accelerator_seconds": float(ledger.get("accelerator_seconds", 0.0)),
               "cpu_seconds": float(meter.report()["cpu_seconds"])}
    outcome = RunOutcome(model=entry.display, arm=arm, seed=seed, run_dir=str(run_dir),
                         train_seconds=trained.train_seconds, train_images=trained.record["train_images"],
                         metrics=metrics, compute=compute, start=start_summary(entry),
                         evaluation="whole images" if entry.run_tiling is None else "sliced")
    payload = {"key": key, "fingerprint": fingerprint, "outcome": outcome_to_json(outcome)}
    atomic_write_bytes(result_file, json.dumps(payload, indent=2).encode("utf-8"))
    return outcome


def outcome_to_json(outcome: RunOutcome) -> dict[str, Any]:
    """``outcome`` as JSON types (undefined values, NaN, become ``None``); :func:`outcome_from_json` inverts it."""
    return jsonable(outcome)


def outcome_from_json(data: dict[str, Any]) -> RunOutcome:
    """The :class:`RunOutcome` :func:`outcome_to_json` wrote (``None`` back to NaN)."""
    m = data["metrics"]
    nan = float("nan")
    metrics = RunMetrics(
        values={k: nan if v is None else float(v) for k, v in m["values"].items()},
        intervals={k: (nan if v[0] is None else v[0], nan if v[1] is None else v[1]) for k, v in m["intervals"].items()},
        froc_fp_per_image=tuple(m["froc_fp_per_image"]), froc_sensitivity=tuple(
            nan if v is None else v for v in m["froc_sensitivity"]),
    )
    return RunOutcome(**{**data, "metrics": metrics})

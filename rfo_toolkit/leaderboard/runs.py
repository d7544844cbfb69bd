"""One (model, arm, seed) cell of the benchmark: train, predict, evaluate, and keep the result.

A finished cell leaves ``metrics.json`` in its run folder, keyed by the hash of its resolved
configuration, and ``replicates.npz``, the evaluator's bootstrap replicates of every metric (the
paired comparisons between arms are computed from them, :mod:`.comparison`). Every run is evaluated
with one bootstrap seed, :data:`EVALUATION_SEED`, so replicate ``b`` resamples the same test patients
in every run. :func:`run_one` reuses a finished cell when the key is unchanged; a cell whose replicates
are missing or were drawn with another seed or count (a run of an older release) is re-evaluated from
its saved predictions, not trained again. :func:`run_start_baseline` predicts with a start detector
as it is (the leaderboard's do-nothing row), cached the same way.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rfo_bench.io.records import DetectionDataset
from rfo_toolkit.leaderboard.config import METRICS, BenchmarkConfig, ModelEntry
from toolkit_core.errors import UserInputError
from toolkit_core.records import jsonable
from toolkit_core.utils import atomic_write_bytes, sha256_text

if TYPE_CHECKING:
    from rfo_bench.detectors.sliced import SliceConfig

logger = logging.getLogger(__name__)

EVALUATION_SEED = 0
"""The evaluator's bootstrap seed for every run of every benchmark: the same patient draws in every run,
so the differences between runs are paired."""

RESULT_FILE = "metrics.json"
REPLICATES_FILE = "replicates.npz"

NO_FINE_TUNING = "none (no fine-tuning)"
"""The arm of a start detector's do-nothing row: the start itself, predicted without fine-tuning."""

REPLICATE_KEYS = {"AP50": "AP50", "AP": "AP", "FROC": "froc", "AUROC": "auroc"}
"""Leaderboard metric -> the evaluator's name of its bootstrap replicates."""


@dataclass(frozen=True)
class Replicates:
    """A run's bootstrap replicates as kept in ``replicates.npz``.

    Attributes:
        metrics: metric (:data:`METRICS`) -> ``(B,)`` replicates (NaN where undefined in a replicate).
        evaluation_seed: the evaluator's bootstrap seed they were drawn with.
        bootstrap: B, the number of replicates asked for.
        key: the key of the run (``metrics.json``) they belong to.
        unit: what they resample (the configuration's ``bootstrap_unit``; ``auto`` in files without one).
    """

    metrics: dict[str, np.ndarray]
    evaluation_seed: int
    bootstrap: int
    key: str
    unit: str = "auto"


def write_replicates(path: Path, replicates: Mapping[str, np.ndarray], *, evaluation_seed: int, bootstrap: int,
                     key: str, unit: str = "auto") -> None:
    """Write the evaluator's ``replicates`` (its names: ``AP50``, ``AP``, ``froc``, ``auroc``) atomically
    to ``path`` as plain arrays (no pickled object), with the seed, count, unit and run key they belong to."""
    arrays: dict[str, np.ndarray] = {
        metric: np.asarray(replicates[name], dtype=np.float64)
        for metric, name in REPLICATE_KEYS.items() if name in replicates}
    arrays |= {"evaluation_seed": np.asarray(evaluation_seed, dtype=np.int64),
               "bootstrap": np.asarray(bootstrap, dtype=np.int64), "key": np.asarray(key), "unit": np.asarray(unit)}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def read_replicates(path: Path) -> Replicates:
    """The replicates :func:`write_replicates` wrote, read without unpickling anything.

    Raises:
        UserInputError: naming the file, when it is not such a file (e.g. it holds object arrays).
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            metrics = {m: np.asarray(stored[m], dtype=np.float64).reshape(-1) for m in METRICS if m in stored.files}
            return Replicates(metrics=metrics, evaluation_seed=int(stored["evaluation_seed"]),
                              bootstrap=int(stored["bootstrap"]), key=str(stored["key"]),
                              unit=str(stored["unit"]) if "unit" in stored.files else "auto")
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserInputError(f"not a file of bootstrap replicates ({reason}); delete it to evaluate the run again",
                             file=path) from None


def _replicates_current(path: Path, *, key: str, bootstrap: int, unit: str = "auto") -> bool:
    """Whether ``path`` holds this run's replicates, drawn with :data:`EVALUATION_SEED`, ``bootstrap`` and ``unit``."""
    if not path.is_file():
        return False
    found = read_replicates(path)
    return (found.key, found.evaluation_seed, found.bootstrap, found.unit) == (key, EVALUATION_SEED, bootstrap, unit)


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


def evaluate_run(test_json: Path, predictions_dir: Path, *, bootstrap: int, seed: int = EVALUATION_SEED,
                 report_dir: Path | None = None, gt: DetectionDataset | None = None,
                 replicates_file: Path | None = None, key: str = "", unit: str = "auto") -> RunMetrics:
    """Evaluate one run with the toolkit's evaluator (what ``rfo-bench eval`` computes).

    Box metrics come from ``predictions.json``; AUROC from ``classification.csv`` against the
    "critical RFO present" image label. The full evaluation report is written to ``report_dir``.
    ``gt``: the ground truth as read from ``test_json`` and restricted (e.g. a start's unseen classes
    removed); default: ``test_json`` as it is. ``seed``: the evaluator's bootstrap seed (the same for
    every run of a benchmark). ``replicates_file``: where to keep the bootstrap replicates
    (:func:`write_replicates`, recorded with ``key``). ``unit``: what the bootstrap resamples
    (:data:`~rfo_bench.eval_config.BOOTSTRAP_UNITS`).
    """
    from rfo_bench.detectors.predict import CLASSIFICATION_CSV, PREDICTIONS_JSON
    from rfo_bench.evaluate import EvalConfig, evaluate_detailed, write_report
    from rfo_bench.io.formats import read_dataset
    from rfo_bench.predictions import read_predictions

    gt = read_dataset(test_json) if gt is None else gt
    predictions = read_predictions(predictions_dir / PREDICTIONS_JSON, gt,
                                   classification=predictions_dir / CLASSIFICATION_CSV)
    evaluation = evaluate_detailed(gt, predictions, EvalConfig(bootstrap=bootstrap, seed=seed, bootstrap_unit=unit,
                                                               auroc_positive="critical"))
    if report_dir is not None:
        write_report(evaluation, report_dir, gt, predictions, plots=False)
    if replicates_file is not None:
        write_replicates(replicates_file, evaluation.replicates, evaluation_seed=seed, bootstrap=bootstrap, key=key,
                         unit=unit)
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
        seed: the training seed; ``None`` for the deterministic do-nothing row (:data:`NO_FINE_TUNING`).
        compute: the cell's compute: ``train_cpu_seconds`` / ``train_accelerator_seconds`` (the training
            record's ledger) and ``cpu_seconds`` (training, prediction and evaluation, this process and its
            children). A from-start run's own compute: the start's is in ``start``.
        start: for a run fine-tuned from a recipe-trained detector: ``detector`` (folder), ``recipe``,
            ``recipe_sha256``, ``weights_sha256`` and ``compute`` (the start's own training compute).
        evaluation: ``sliced`` (predicted over whole films from tiles) or ``whole images``.
    """

    model: str
    arm: str
    seed: int | None
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


def cell_key(fingerprint: dict[str, Any]) -> str:
    """The key a finished cell is reused by: the hash of everything its result depends on."""
    return sha256_text(json.dumps(fingerprint, sort_keys=True))


def _write_result(run_dir: Path, key: str, fingerprint: dict[str, Any], outcome: RunOutcome) -> None:
    payload = {"key": key, "fingerprint": fingerprint, "evaluation_seed": EVALUATION_SEED,
               "outcome": outcome_to_json(outcome)}
    atomic_write_bytes(run_dir / RESULT_FILE, json.dumps(payload, indent=2).encode("utf-8"))


def _evaluate_cell(run_dir: Path, test: DetectionDataset, config: BenchmarkConfig, key: str) -> RunMetrics:
    """Evaluate the predictions in ``run_dir`` (report in ``eval/``, replicates in ``replicates.npz``)."""
    return evaluate_run(Path(test.source), run_dir / "predictions", bootstrap=config.bootstrap, seed=EVALUATION_SEED,
                        report_dir=run_dir / "eval", gt=test, replicates_file=run_dir / REPLICATES_FILE, key=key,
                        unit=config.bootstrap_unit)


def _reuse(run_dir: Path, key: str, fingerprint: dict[str, Any], test: DetectionDataset,
           config: BenchmarkConfig) -> RunOutcome | None:
    """The finished cell in ``run_dir`` when its key is ``key``, else ``None``.

    A finished cell whose replicates are missing, or were drawn with another evaluation seed, count or unit, is
    evaluated again from its saved predictions (its training and compute are kept); without predictions
    it is ``None`` (run again).
    """
    from rfo_bench.detectors.predict import PREDICTIONS_JSON

    result_file = run_dir / RESULT_FILE
    if not result_file.is_file():
        return None
    saved = json.loads(result_file.read_text(encoding="utf-8"))
    if saved.get("key") != key:
        return None
    outcome = outcome_from_json(saved["outcome"])
    if _replicates_current(run_dir / REPLICATES_FILE, key=key, bootstrap=config.bootstrap, unit=config.bootstrap_unit):
        logger.info("reusing finished run %s", run_dir)
        return outcome
    if not (run_dir / "predictions" / PREDICTIONS_JSON).is_file():
        logger.warning("finished run %s has neither current bootstrap replicates nor predictions: running it again",
                       run_dir)
        return None
    logger.info("re-evaluating finished run %s from its predictions (evaluation seed %d)", run_dir, EVALUATION_SEED)
    outcome = replace(outcome, metrics=_evaluate_cell(run_dir, test, config, key))
    _write_result(run_dir, key, fingerprint, outcome)
    return outcome


def _predict(detector: Any, test: DetectionDataset, run_dir: Path, *, progress: bool) -> None:
    from rfo_bench.detectors.predict import predict_dataset, write_predictions

    predictions = predict_dataset(detector, test, progress=progress)
    write_predictions(predictions, detector.categories, run_dir / "predictions",
                      coco_category_ids={c.id for c in test.categories})


def run_one(
    entry: ModelEntry, arm: str, seed: int, train_sets: Sequence[DetectionDataset], test: DetectionDataset,
    config: BenchmarkConfig, run_dir: Path, fingerprint: dict[str, Any], *, force: bool, progress: bool,
    threads: int | None = None,
) -> RunOutcome:
    """Train, predict and evaluate one cell into ``run_dir``, or reuse its finished result.

    ``threads``: torch's CPU threads while training (:attr:`TrainConfig.threads`; speed only, not in the key).

    ``fingerprint`` is everything the result depends on; its hash is the key a finished cell is reused by
    (``force`` re-runs it anyway). A finished cell without current replicates is re-evaluated from its
    predictions (see :func:`_reuse`).
    """
    from rfo_bench.detectors.api import load_detector, train_detector
    from rfo_bench.detectors.config import TrainConfig
    from rfo_bench.detectors.provenance import ComputeMeter
    from rfo_bench.detectors.shipped import check_start_weights

    key = cell_key(fingerprint)
    reused = None if force else _reuse(run_dir, key, fingerprint, test, config)
    if reused is not None:
        return reused
    meter = ComputeMeter(config.device)
    # a start's weights are checked again right before they are read (the benchmark checked them before any work)
    weights = str(check_start_weights(entry.start)) if entry.start is not None else entry.weights
    train_config = TrainConfig(model=entry.name, recipe=entry.train_recipe(), seed=seed, backbone=entry.backbone,
                               weights=weights, device=config.device, tiling=entry.run_tiling, threads=threads)
    trained = train_detector(train_config, train_sets, run_dir / "model", progress=progress)
    detector = load_detector(trained.run_dir, slicing=row_slicing(entry))
    _predict(detector, test, run_dir, progress=progress)
    metrics = _evaluate_cell(run_dir, test, config, key)
    ledger = trained.record.get("compute") or {}
    compute = {"train_cpu_seconds": float(ledger.get("cpu_seconds", 0.0)),
               "train_accelerator_seconds": float(ledger.get("accelerator_seconds", 0.0)),
               "cpu_seconds": float(meter.report()["cpu_seconds"])}
    outcome = RunOutcome(model=entry.display, arm=arm, seed=seed, run_dir=str(run_dir),
                         train_seconds=trained.train_seconds, train_images=trained.record["train_images"],
                         metrics=metrics, compute=compute, start=start_summary(entry),
                         evaluation="whole images" if entry.run_tiling is None else "sliced")
    _write_result(run_dir, key, fingerprint, outcome)
    return outcome


def row_slicing(entry: ModelEntry) -> SliceConfig | None:
    """The :class:`~rfo_bench.detectors.sliced.SliceConfig` a row's detectors predict with: a start's own (its
    record's; the toolkit's defaults when the record states none), the defaults for a tiled from-scratch row;
    ``None`` for whole-image rows. It is part of every tiled cell's key (and of a start's do-nothing row's),
    so a finished cell predicted with other slicing is not reused."""
    from rfo_bench.detectors.sliced import SliceConfig

    if entry.start is not None:
        return entry.start.slicing or SliceConfig()
    return SliceConfig() if entry.run_tiling is not None else None


def start_fingerprint(entry: ModelEntry) -> dict[str, Any]:
    """What a start's do-nothing row depends on: the detector (weights hash, tiling, slicing, classes), not
    the fine-tuning recipe nor the folder it lies in."""
    if entry.start is None:
        raise ValueError(f"model {entry.display} has no start")
    start = asdict(entry.start)
    return {"arm": NO_FINE_TUNING, "model": entry.name,
            "start": {k: v for k, v in start.items() if k not in ("run_dir", "weights", "compute")},
            "slicing": row_slicing(entry).to_dict()}


def run_start_baseline(
    entry: ModelEntry, test: DetectionDataset, config: BenchmarkConfig, run_dir: Path, fingerprint: dict[str, Any],
    *, force: bool, progress: bool,
) -> RunOutcome:
    """The do-nothing row of a start entry: the start detector as it is, predicted sliced over ``test``.

    Deterministic, so it runs once (``seed`` ``None``), is evaluated as every run is (same ground truth,
    same evaluation seed) and cached like a run. Its compute is prediction and evaluation only (the start's
    own training is in ``start``).
    """
    from rfo_bench.detectors.provenance import ComputeMeter
    from rfo_bench.detectors.shipped import load_shipped_detector

    if entry.start is None:
        raise ValueError(f"model {entry.display} has no start")
    key = cell_key(fingerprint)
    reused = None if force else _reuse(run_dir, key, fingerprint, test, config)
    if reused is not None:
        return reused
    meter = ComputeMeter(config.device)
    detector = load_shipped_detector(entry.start.run_dir, device=config.device, slicing=row_slicing(entry))
    _predict(detector, test, run_dir, progress=progress)
    metrics = _evaluate_cell(run_dir, test, config, key)
    compute = {"train_cpu_seconds": 0.0, "train_accelerator_seconds": 0.0,
               "cpu_seconds": float(meter.report()["cpu_seconds"])}
    outcome = RunOutcome(model=entry.display, arm=NO_FINE_TUNING, seed=None, run_dir=str(run_dir), train_seconds=0.0,
                         train_images=0, metrics=metrics, compute=compute, start=start_summary(entry),
                         evaluation="sliced")
    _write_result(run_dir, key, fingerprint, outcome)
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

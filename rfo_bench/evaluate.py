"""The RFO detection evaluator: COCO metrics, FROC, AUROC and bootstrap confidence intervals, as one report.

Use it as a function, on files or on data in memory::

    from rfo_bench.io.formats import read_dataset
    from rfo_bench.predictions import read_predictions
    from rfo_bench.evaluate import EvalConfig, evaluate

    gt = read_dataset("test.json")
    report = evaluate(gt, read_predictions("detections.json", gt), EvalConfig(bootstrap=1000))
    report["coco"]["AP50"], report["froc"]["score"], report["auroc"], report["ci95"]["AP50"]
    report = evaluate(coco_dict, coco_results_list, EvalConfig(bootstrap=1000))  # no temporary file

batch by batch with :class:`rfo_bench.evaluator.DetectionEvaluator` (``update`` / ``compute``), or from
the shell: ``rfo-bench eval --gt test.json --pred detections.json --out runs/eval``, which also writes
``report.md`` and the figures (:func:`write_report`, drawn by :mod:`rfo_bench.plots`).

What is computed (see each module for the exact definition):

* ``coco``: the 12 ``COCOeval.summarize()`` numbers (0-1 scale, -1 = undefined) from
  :mod:`rfo_bench.metrics.coco_eval`; ``per_category`` AP / AP50; ``strata`` AP / AP50 over the
  critical and the non-critical categories; size strata are COCO's APs / APm / APl, on the
  annotation ``area`` (the COCO file's, else the polygon / ellipse / box area).
* Predictions must use the ground truth's image ids and category ids (COCO results) or its image
  paths (CSVs); anything else is refused with the file and entry named.
* ``froc``: the object-CXR / RFO Bench protocol (:mod:`rfo_bench.metrics.froc`), box centres as points,
  class-agnostic like the reference; ``froc_strata`` the same for the critical and the non-critical
  task separately (the other task's annotations and detections left out); ``froc_per_category`` the
  same per class (its annotations, its detections) when two classes or more have annotations. With a
  bootstrap, ``sensitivity_ci`` gives the interval of each threshold's sensitivity (the band of the plot).
* ``auroc``: image-level, image score = max box score (or the classification CSV); an image without
  detection ranks below every image with one, so AUROC depends on the order of the scores only (logits
  welcome).
* Image paths are never opened by the evaluation (only the optional error grid reads images, and
  skips one it may not read): absolute paths such as the Hopkins README's ``/path/#####.jpg`` are
  accepted.
* ``ci95``: percentile bootstrap over images, or over patients when every image has a patient id, from
  the per-image results computed once (:mod:`rfo_bench.metrics.bootstrap`).
* ``run``: what made the report: toolkit version, source commit, seed, bootstrap replicates, the command
  and the environment (:func:`rfo_bench.eval_config.run_header`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rfo_bench.eval_config import EvalConfig, Evaluation, run_header
from rfo_bench.ground_truth import GroundTruthSource, read_ground_truth
from rfo_bench.io.coco import dataset_to_coco_dict
from rfo_bench.io.records import DetectionDataset
from rfo_bench.metrics import auroc as auroc_m
from rfo_bench.metrics import bootstrap as boot
from rfo_bench.metrics import coco_eval
from rfo_bench.metrics.froc import (
    FrocEvents,
    FrocResult,
    Shape,
    froc_curve,
    froc_events,
    froc_sensitivity_replicates,
)
from rfo_bench.predictions import Predictions, PredictionSource, read_predictions
from rfo_bench.report_markdown import figure_captions, report_markdown
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

if TYPE_CHECKING:
    from rfo_bench.plots import FrocCurve

logger = logging.getLogger(__name__)

MIN_INTERVAL_REPLICATES = 2
"""Usable bootstrap replicates below which an interval is not reported (one value has no spread)."""

BOOTSTRAP_PROGRESS_MIN = 1_000_000
"""Replicates x images from which ``progress=True`` shows the bootstrap's bar (1000 x 1000 images)."""


def coco_arrays_from_records(gt: DetectionDataset, predictions: Predictions) -> coco_eval.CocoArrays:
    """:class:`~rfo_bench.metrics.coco_eval.CocoArrays` straight from the records (no COCO dicts).

    Identical to ``coco_arrays(dataset_to_coco_dict(gt), predictions.to_coco_results(gt))``: same
    annotation order, ``area`` and float operations.
    """
    assert predictions.boxes_xywh is not None and predictions.category_id is not None
    record_ids = np.array([r.image_id for r in gt.images], dtype=np.int64)
    image_ids = np.unique(record_ids)
    category_ids = np.unique(np.array([c.id for c in gt.categories], dtype=np.int64))
    known = np.isin(predictions.category_id, category_ids)
    if not known.all():  # as pycocotools: detections of categories absent from the ground truth are dropped
        logger.warning("%d detections of categories absent from the ground truth are ignored by COCO metrics",
                       int((~known).sum()))
    objects = [(k, o) for k, r in enumerate(gt.images) for o in r.objects]
    boxes = np.array([o.bbox_xyxy for _, o in objects], dtype=np.float64).reshape(-1, 4)
    gt_xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    return coco_eval.CocoArrays(
        image_ids=image_ids, category_ids=category_ids,
        gt_image=np.searchsorted(image_ids, record_ids[[k for k, _ in objects]]).astype(np.int64),
        gt_category=np.searchsorted(category_ids, np.array([o.category_id for _, o in objects], dtype=np.int64)),
        gt_xywh=gt_xywh, gt_area=np.array([o.area for _, o in objects], dtype=np.float64),
        dt_image=np.searchsorted(image_ids, record_ids[predictions.image_index[known]]).astype(np.int64),
        dt_category=np.searchsorted(category_ids, predictions.category_id[known].astype(np.int64)),
        dt_xywh=np.asarray(predictions.boxes_xywh, dtype=np.float64).reshape(-1, 4)[known],
        dt_score=np.asarray(predictions.score, dtype=np.float64)[known],
    )


def annotation_shapes(gt: DetectionDataset) -> list[list[Shape]]:
    """Per image, its annotations as FROC :class:`Shape` objects (box, ellipse or polygon)."""
    out = []
    for record in gt.images:
        shapes = []
        for obj in record.objects:
            coords = obj.polygon_xy if obj.shape == "polygon" else obj.bbox_xyxy
            shapes.append(Shape(obj.shape, tuple(coords)))
        out.append(shapes)
    return out


def _clusters(gt: DetectionDataset, unit: str) -> tuple[np.ndarray | None, str]:
    patients = [r.patient_id for r in gt.images]
    known = all(p is not None for p in patients)
    if unit == "patient" and not known:
        missing = sum(p is None for p in patients)
        raise UserInputError(f"patient-level bootstrap needs a patient id for every image ({missing} missing)",
                             file=gt.source or None, field="patient_id")
    if unit == "image" or not known:
        return None, "image"
    _, index = np.unique(np.array(patients, dtype=object).astype(str), return_inverse=True)
    return index.astype(np.int64), "patient"


def _froc_subset(gt: DetectionDataset, predictions: Predictions, wanted: set[int], shapes: list[list[Shape]],
                 config: EvalConfig) -> tuple[FrocEvents, FrocResult, int] | None:
    """FROC of the annotations of the categories ``wanted`` and, when predictions have categories, of the
    detections of those categories; every image still counts in FP per image. None without annotation."""
    kept = [[s for s, o in zip(image_shapes, r.objects) if o.category_id in wanted]
            for image_shapes, r in zip(shapes, gt.images)]
    objects = int(sum(len(s) for s in kept))
    if not objects:
        return None
    keep = np.ones(len(predictions), dtype=bool) if predictions.category_id is None else \
        np.isin(predictions.category_id, list(wanted))
    events = froc_events(predictions.image_index[keep], predictions.score[keep], predictions.points_xy[keep], kept)
    return events, froc_curve(events, fps_thresholds=config.fps_thresholds, variant=config.froc_variant), objects


def _froc_entry(result: FrocResult, objects: int) -> dict[str, Any]:
    return {"score": _clean(result.score), "sensitivity": [_clean(v) for v in result.sensitivity], "objects": objects}


def _froc_strata(gt: DetectionDataset, predictions: Predictions, config: EvalConfig, shapes: list[list[Shape]]
                 ) -> dict[str, tuple[FrocEvents, FrocResult, int]]:
    """FROC of the critical and of the non-critical task.

    The critical task keeps the critical annotations only (a point on a zipper is then a false
    positive) and, when predictions have categories, the detections of critical (or unknown)
    categories; the non-critical task mirrors it. Every image still counts in FP per image.
    """
    out = {}
    for name, flag in (("critical", True), ("non_critical", False)):
        wanted = {c.id for c in gt.categories if (c.critical is not False) == flag}
        if not wanted or len(wanted) == len(gt.categories):
            continue
        subset = _froc_subset(gt, predictions, wanted, shapes, config)
        if subset is not None:
            out[name] = subset
    return out


def _froc_per_category(gt: DetectionDataset, predictions: Predictions, config: EvalConfig, shapes: list[list[Shape]]
                       ) -> dict[str, tuple[FrocEvents, FrocResult, int]]:
    """FROC of each category with annotations (its annotations, its detections), when predictions have
    categories and at least two categories have annotations (else it is the class-agnostic FROC)."""
    if predictions.category_id is None:
        return {}
    present = {o.category_id for r in gt.images for o in r.objects}
    if len(present) < 2:
        return {}
    out = {}
    for category in gt.categories:
        if category.id in present:
            subset = _froc_subset(gt, predictions, {category.id}, shapes, config)
            if subset is not None:
                out[category.name] = subset
    return out


def _check_predictions(predictions: Predictions, num_images: int) -> None:
    """Guard for :class:`Predictions` built in code rather than by the readers (which check entries)."""
    where = {"file": predictions.source or None}
    n = len(predictions)
    if predictions.image_index.shape != (n,) or predictions.points_xy.shape != (n, 2):
        raise UserInputError("predictions arrays have inconsistent lengths", field="image_index", **where)
    if n and (predictions.image_index.min() < 0 or predictions.image_index.max() >= num_images):
        raise UserInputError("prediction image index outside the ground truth", field="image_index", **where,
                             value=int(predictions.image_index.max()))
    if not np.all(np.isfinite(predictions.score)):
        raise UserInputError("prediction scores must be finite", field="score", **where)
    if predictions.boxes_xywh is not None and n and (
            not np.all(np.isfinite(predictions.boxes_xywh)) or (predictions.boxes_xywh[:, 2:] < 0).any()):
        raise UserInputError("prediction boxes must be finite with non-negative size", field="bbox", **where)


def _clean(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def evaluate_detailed(gt: GroundTruthSource, predictions: PredictionSource, config: EvalConfig | None = None, *,
                      command: str | None = None, progress: bool = False) -> Evaluation:
    """Compute the report (see the module docstring) and keep the arrays used for plots.

    Args:
        gt: a :class:`DetectionDataset`, or anything :func:`rfo_bench.ground_truth.read_ground_truth` reads
            (a path, a COCO dict, per-image targets).
        predictions: :class:`Predictions`, or anything :func:`rfo_bench.predictions.read_predictions`
            reads (a path, COCO results in memory, per-image arrays).
        config: evaluation settings.
        command: the command line stated in the report's header (default: this process's).
        progress: a tqdm bar on stderr over the bootstrap's stages (AP, each FROC curve, AUROC) when
            replicates x images reach :data:`BOOTSTRAP_PROGRESS_MIN` (smaller runs take well under a second).
    """
    from rfo_bench.validate import require_valid_annotations

    config = config or EvalConfig()
    gt = read_ground_truth(gt)
    if not isinstance(predictions, Predictions):
        predictions = read_predictions(predictions, gt)
    require_valid_annotations(gt)
    num_images = len(gt.images)
    if num_images == 0:
        raise UserInputError("the ground truth has no image", file=gt.source or None, field="images")
    _check_predictions(predictions, num_images)
    has_boxes_gt = any(r.objects for r in gt.images)
    report: dict[str, Any] = {
        "run": run_header(config, command),
        "counts": {
            "images": num_images,
            "positive_images": int(sum(r.is_positive for r in gt.images)),
            "critical_images": int(sum(gt.stratum(r) == "critical" for r in gt.images)),
            "objects": int(sum(len(r.objects) for r in gt.images)),
            "predictions": len(predictions),
        },
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(config).items()},
        "ground_truth": gt.source,
        "predictions": predictions.source,
    }
    evaluation = Evaluation(report)

    # COCO
    coco_stats: dict[str, float] | None = None
    if predictions.has_boxes and has_boxes_gt:
        arrays = coco_arrays_from_records(gt, predictions)
        table = coco_eval.match_detections(arrays)
        native = coco_eval.native_coco_eval(arrays, table)
        result = native if config.coco_backend == "native" else coco_eval.reference_coco_eval(
            dataset_to_coco_dict(gt), predictions.to_coco_results(gt), config.coco_backend)
        coco_stats = result.stats
        evaluation.coco, evaluation.table, evaluation.arrays = result, table, arrays
        per_cat = coco_eval.per_category_ap(result.precision)
        gt_per_cat = np.bincount(arrays.gt_category, minlength=arrays.category_ids.size)
        report["per_category"] = {
            gt.category(int(cid)).name: {"AP": _clean(per_cat[k, 0]) if per_cat[k, 0] > -1 else None,
                                         "AP50": _clean(per_cat[k, 1]) if per_cat[k, 1] > -1 else None,
                                         "num_objects": int(gt_per_cat[k])}
            for k, cid in enumerate(arrays.category_ids)
        }
        strata = {}
        for name, flag in (("critical", True), ("non_critical", False)):
            index = np.array([k for k, cid in enumerate(arrays.category_ids) if gt.category(int(cid)).critical is flag])
            if index.size and gt_per_cat[index].sum() > 0:
                s = coco_eval.summarize(result.precision, result.recall, category_index=index)
                strata[name] = {"AP": s["AP"], "AP50": s["AP50"], "categories": index.size}
        report["strata"] = strata
    elif not predictions.has_boxes:
        logger.info("point predictions: COCO metrics need boxes and are skipped")
    report["coco"] = coco_stats
    report["coco_backend"] = config.coco_backend if coco_stats is not None else None

    # FROC
    events: FrocEvents | None = None
    strata_events: dict[str, FrocEvents] = {}
    if has_boxes_gt:
        shapes = annotation_shapes(gt)
        events = froc_events(predictions.image_index, predictions.score, predictions.points_xy, shapes)
        froc = froc_curve(events, fps_thresholds=config.fps_thresholds, variant=config.froc_variant)
        evaluation.froc = froc
        report["froc"] = {
            "score": _clean(froc.score), "fps_per_image": list(froc.fps_per_image),
            "sensitivity": [_clean(s) for s in froc.sensitivity], "variant": froc.variant,
            "reference_undefined": froc.reference_undefined,
        }
        strata = _froc_strata(gt, predictions, config, shapes)
        report["froc_strata"] = {name: _froc_entry(result, n) for name, (_, result, n) in strata.items()}
        evaluation.froc_strata = {name: result for name, (_, result, _) in strata.items()}
        strata_events = {name: e for name, (e, _, _) in strata.items()}
        per_category = _froc_per_category(gt, predictions, config, shapes)
        report["froc_per_category"] = {name: _froc_entry(result, n) for name, (_, result, n) in per_category.items()}
        evaluation.froc_per_category = {name: result for name, (_, result, _) in per_category.items()}
    else:
        report["froc"] = None

    # AUROC
    if config.auroc_positive == "critical":
        labels = np.array([gt.stratum(r) == "critical" for r in gt.images])
    else:
        labels = np.array([r.is_positive for r in gt.images])
    if predictions.image_scores is not None:
        image_scores, source = predictions.image_scores, "classification_csv"
    else:
        keep = np.ones(len(predictions), dtype=bool)
        source = "max_detection_score"
        if config.auroc_positive == "critical" and predictions.category_id is not None:
            # the critical task scores an image by its critical detections only: a confident zipper
            # must not make a study look like a retained sponge
            critical_ids = [c.id for c in gt.categories if c.critical is not False]
            keep = np.isin(predictions.category_id, critical_ids)
            source = "max_critical_detection_score"
        image_scores = auroc_m.image_scores_from_detections(
            predictions.image_index[keep], predictions.score[keep], num_images)
    evaluation.image_scores = image_scores
    report["auroc"] = _clean(auroc_m.auroc(labels, image_scores))
    report["auroc_image_score"] = source

    # Bootstrap
    key = f"ci{round(config.ci_level * 100)}"
    report[key] = {"AP50": None, "AP": None, "froc": None, "auroc": None}
    if config.bootstrap > 0:
        clusters, unit = _clusters(gt, config.bootstrap_unit)
        counts = boot.resample_counts(num_images, config.bootstrap, config.seed, clusters)
        from tqdm.auto import tqdm

        show = progress and config.bootstrap * num_images >= BOOTSTRAP_PROGRESS_MIN
        stages = (evaluation.table is not None) + sum(ev is not None for ev in (events, *strata_events.values())) + 1
        bar = tqdm(total=stages, desc=f"bootstrap ({config.bootstrap} replicates x {num_images} images)",
                   unit="stage", disable=not show)
        reps: dict[str, np.ndarray] = {}
        if evaluation.table is not None:
            bar.set_postfix_str("AP")
            pb = boot.precision_replicates(evaluation.table, counts, progress=show)
            bar.update()
            t50 = np.where(coco_eval.IOU_THRESHOLDS == 0.5)[0]
            reps["AP"] = boot.mean_ap(pb)
            reps["AP50"] = boot.mean_ap(pb, t50)
            assert evaluation.arrays is not None
            for name in report.get("strata", {}):
                flag = name == "critical"
                index = np.array([k for k, cid in enumerate(evaluation.arrays.category_ids)
                                  if gt.category(int(cid)).critical is flag])
                reps[f"AP50_{name}"] = boot.mean_ap(pb, t50, index)
        bands: dict[str, np.ndarray] = {}
        for name, froc_ev in ((None, events), *strata_events.items()):
            if froc_ev is None:
                continue
            bar.set_postfix_str(f"FROC {name or 'all'}")
            sensitivity = froc_sensitivity_replicates(froc_ev, counts, fps_thresholds=config.fps_thresholds,
                                                      variant=config.froc_variant)
            bar.update()
            bands[name or "froc"] = sensitivity
            reps["froc" if name is None else f"froc_{name}"] = np.mean(sensitivity, axis=1)
        bar.set_postfix_str("AUROC")
        reps["auroc"] = auroc_m.weighted_auroc(labels, image_scores, counts)
        bar.update()
        bar.close()
        used = {}

        def interval(values: np.ndarray) -> list[float | None] | None:
            # one usable replicate has no spread to show: no interval rather than a zero-width one
            found = boot.percentile_interval(values, config.ci_level)
            return found.as_list() if found.replicates_used >= MIN_INTERVAL_REPLICATES else None

        for name, values in reps.items():
            report[key][name] = interval(values)
            used[name] = int(np.isfinite(values).sum())
        for name, sensitivity in bands.items():  # the band of each FROC curve: an interval per threshold
            entry = report["froc"] if name == "froc" else report["froc_strata"][name]
            entry["sensitivity_ci"] = [interval(sensitivity[:, t]) or [None, None] for t in range(sensitivity.shape[1])]
            reps[f"{name}_sensitivity" if name == "froc" else f"froc_{name}_sensitivity"] = sensitivity
        report["bootstrap"] = {"replicates": config.bootstrap, "unit": unit, "seed": config.seed,
                               "replicates_used": used, "method": "percentile"}
        evaluation.replicates = reps
    first = ("run", "coco", "coco_backend", "per_category", "strata", "froc", "froc_strata", "froc_per_category", "auroc",
             "auroc_image_score", key, "bootstrap")
    evaluation.report = {k: report[k] for k in first if k in report} | {k: v for k, v in report.items() if k not in first}
    return evaluation


def evaluate(gt: GroundTruthSource, predictions: PredictionSource, config: EvalConfig | None = None, *,
             command: str | None = None, progress: bool = False) -> dict[str, Any]:
    """The evaluation report as a JSON-ready dict (see the module docstring for its keys and
    :func:`evaluate_detailed` for the inputs)."""
    return evaluate_detailed(gt, predictions, config, command=command, progress=progress).report


def write_report(
    evaluation: Evaluation, out_dir: str | os.PathLike[str], gt: DetectionDataset, predictions: Predictions,
    *, plots: bool = True, max_examples: int = 8, command: str | None = None,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``per_image.csv`` and (optionally) ``froc.png``,
    ``pr_curves.png`` and ``errors.png``; the report's ``figures`` maps each figure file to its caption.

    Args:
        command: replaces the command line in the report's header (default: the one evaluated with).

    Returns:
        The written files by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "report.json", "md": out / "report.md", "per_image": out / "per_image.csv"}
    figures = write_plots(evaluation, out, gt, predictions, max_examples=max_examples) if plots else {}
    report = dict(evaluation.report)
    if command is not None:
        report["run"] = {**report.get("run", {}), "command": command}
    report["figures"] = figure_captions(report, {kind: path.name for kind, path in figures.items()},
                                        max_examples=max_examples)
    atomic_write_bytes(written["json"], json.dumps(report, indent=2).encode("utf-8"))
    atomic_write_bytes(written["md"], report_markdown(report).encode("utf-8"))
    atomic_write_bytes(written["per_image"], per_image_table(evaluation, gt, predictions).encode("utf-8"))
    return written | figures


def per_image_table(evaluation: Evaluation, gt: DetectionDataset, predictions: Predictions) -> str:
    """CSV text, one row per image: stratum, objects, detections, image score and, when COCO metrics
    ran, true positives / false positives / missed objects at IoU 0.5 (area ``all``, 100 detections)."""
    import csv
    import io

    num_images = len(gt.images)
    detections = np.bincount(predictions.image_index, minlength=num_images)
    tp = fp = missed = None
    table, arrays = evaluation.table, evaluation.arrays
    if table is not None and arrays is not None:
        t50 = int(np.where(table.iou_thresholds == 0.5)[0][0])
        counted = ~table.ignored[0, t50]
        # table image indices follow the sorted image ids; map them back to record order
        position = {int(image_id): k for k, image_id in enumerate(arrays.image_ids)}
        record_of = np.array([position[r.image_id] for r in gt.images], dtype=np.int64)
        tp_sorted = np.bincount(table.det_image[table.matched[0, t50] & counted], minlength=arrays.num_images)
        fp_sorted = np.bincount(table.det_image[~table.matched[0, t50] & counted], minlength=arrays.num_images)
        tp, fp = tp_sorted[record_of], fp_sorted[record_of]
        missed = np.array([len(r.objects) for r in gt.images]) - tp
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["file_name", "image_id", "patient_id", "stratum", "objects", "detections", "image_score",
                     "tp_iou50", "fp_iou50", "missed_iou50"])
    scores = evaluation.image_scores
    for k, record in enumerate(gt.images):
        writer.writerow([
            record.file_name, record.image_id, record.patient_id or "", gt.stratum(record), len(record.objects),
            int(detections[k]), "" if scores is None or not np.isfinite(scores[k]) else f"{scores[k]:.6g}",
            "" if tp is None else int(tp[k]), "" if fp is None else int(fp[k]), "" if missed is None else int(missed[k]),
        ])
    return buffer.getvalue()


def _record_index(gt: DetectionDataset, image_ids: np.ndarray) -> np.ndarray:
    """``(I,)`` position in ``gt.images`` of each image of a sorted ``image_ids`` (the COCO image order)."""
    position = {r.image_id: k for k, r in enumerate(gt.images)}
    return np.array([position[int(i)] for i in image_ids], dtype=np.int64)


def error_examples(
    evaluation: Evaluation, gt: DetectionDataset, max_examples: int
) -> list[tuple[str, int, tuple[float, float, float, float]]]:
    """Worst false positives (highest-scoring unmatched detections at IoU 0.5) and missed objects.

    Returns:
        ``(title, record index into gt.images, box x1 y1 x2 y2 in px)`` per panel of the error grid.
    """
    table, arrays = evaluation.table, evaluation.arrays
    examples: list[tuple[str, int, tuple[float, float, float, float]]] = []
    if table is None or arrays is None:
        return examples
    # the table's image indices follow the sorted image ids, not the order of gt.images
    record_of = _record_index(gt, arrays.image_ids)
    t50 = int(np.where(table.iou_thresholds == 0.5)[0][0])
    fp = np.flatnonzero(~table.matched[0, t50] & ~table.ignored[0, t50])
    fp = fp[np.argsort(-table.det_score[fp], kind="stable")][:max_examples]
    for j in fp:
        x, y, w, h = (float(v) for v in arrays.dt_xywh[table.det_source[j]])
        examples.append((f"FP {table.det_score[j]:.2f}", int(record_of[table.det_image[j]]), (x, y, x + w, y + h)))
    hit = np.zeros(arrays.gt_image.size, dtype=bool)
    rows = table.matched_gt[0, t50]
    hit[rows[rows >= 0]] = True
    missed = np.flatnonzero(~hit)
    missed = missed[np.argsort(-arrays.gt_area[missed], kind="stable")][:max_examples]
    for g in missed:
        x, y, w, h = (float(v) for v in arrays.gt_xywh[g])
        name = gt.category(int(arrays.category_ids[arrays.gt_category[g]])).name
        examples.append((f"missed {name}", int(record_of[arrays.gt_image[g]]), (x, y, x + w, y + h)))
    return examples


def froc_curves(evaluation: Evaluation) -> tuple[FrocCurve | None, list[FrocCurve], list[FrocCurve], str]:
    """The FROC curves of a report to draw: all RFOs (with its band), the strata (with theirs), per class,
    and what the band is."""
    from rfo_bench.plots import FrocCurve

    report, froc = evaluation.report, evaluation.froc
    if froc is None:
        return None, [], [], ""
    key = next((k for k in report if k.startswith("ci") and isinstance(report[k], dict)), "ci95")
    intervals = report.get(key) or {}

    def curve(name: str, result: FrocResult, entry: dict[str, Any], score_key: str) -> FrocCurve:
        band = entry.get("sensitivity_ci")
        score_ci = intervals.get(score_key)
        return FrocCurve(name, result, int(entry.get("objects", report["counts"]["objects"])),
                         band=None if not band else ([b[0] for b in band], [b[1] for b in band]),
                         score_interval=None if not score_ci else (score_ci[0], score_ci[1]))

    overall = curve("all RFOs", froc, report["froc"], "froc")
    strata = [curve(name, result, report["froc_strata"][name], f"froc_{name}")
              for name, result in evaluation.froc_strata.items()]
    per_class = [curve(name, result, report["froc_per_category"][name], "")
                 for name, result in evaluation.froc_per_category.items()]
    boot_info = report.get("bootstrap")
    band = "" if not boot_info else (f"{key[2:]}% bootstrap band ({boot_info['replicates']} replicates over "
                                     f"{boot_info['unit']}s)")
    return overall, strata, per_class, band


def write_plots(
    evaluation: Evaluation, out: Path, gt: DetectionDataset, predictions: Predictions, *, max_examples: int = 8
) -> dict[str, Path]:
    """FROC curves (all RFOs with the bootstrap band, critical vs non-critical, per class), per-class PR
    curves at IoU 0.5, and a grid of the worst false positives / missed objects (one image per panel)."""
    from rfo_bench import plots

    written: dict[str, Path] = {}
    figures: dict[str, Any] = {}
    overall, strata, per_class, band = froc_curves(evaluation)
    if overall is not None:
        figures["froc"] = plots.froc_figure(overall, strata=strata, per_class=per_class, band_description=band)
    if evaluation.coco is not None and evaluation.arrays is not None:
        t50 = int(np.where(coco_eval.IOU_THRESHOLDS == 0.5)[0][0])
        gt_per_cat = np.bincount(evaluation.arrays.gt_category, minlength=evaluation.arrays.category_ids.size)
        curves = {}
        for k, cid in enumerate(evaluation.arrays.category_ids):
            precision = evaluation.coco.precision[t50, :, k, 0, -1]
            if (precision > -1).all():
                curves[gt.category(int(cid)).name] = (precision, int(gt_per_cat[k]))
        figures["pr_curves"] = plots.pr_figure(coco_eval.RECALL_THRESHOLDS, curves)
    examples = error_examples(evaluation, gt, max_examples)
    if examples:
        from rfo_bench.io.images import read_image

        def read_pixels(index: int) -> np.ndarray | None:
            try:
                return read_image(gt.resolve(gt.images[index])).pixels
            except UserInputError as err:
                logger.warning("error grid: %s", err)
                return None

        panels = plots.error_panels(examples, [r.file_name for r in gt.images], max_examples)
        figures["errors"] = plots.error_figure(panels, read_pixels)
    for kind, figure in figures.items():
        written[kind] = out / f"{kind}.png"
        figure.savefig(written[kind], dpi=110)
    return written

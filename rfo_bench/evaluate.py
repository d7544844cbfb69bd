"""The RFO detection evaluator: COCO metrics, FROC, AUROC and bootstrap confidence intervals, as one report.

Use it as a function::

    from rfo_bench.io.formats import read_dataset
    from rfo_bench.predictions import read_predictions
    from rfo_bench.evaluate import EvalConfig, evaluate

    gt = read_dataset("test.json")
    report = evaluate(gt, read_predictions("detections.json", gt), EvalConfig(bootstrap=1000))
    report["coco"]["AP50"], report["froc"]["score"], report["auroc"], report["ci95"]["AP50"]

or from the shell: ``rfo-bench eval --gt test.json --pred detections.json --out runs/eval``, which also
writes ``report.md`` and plots (:func:`write_report`).

What is computed (see each module for the exact definition):

* ``coco``: the 12 ``COCOeval.summarize()`` numbers (0-1 scale, -1 = undefined) from
  :mod:`rfo_bench.metrics.coco_eval`; ``per_category`` AP / AP50; ``strata`` AP / AP50 over the
  critical and the non-critical categories; size strata are COCO's APs / APm / APl, on the
  annotation ``area`` (the COCO file's, else the polygon / ellipse / box area).
* Predictions must use the ground truth's image ids and category ids (COCO results) or its image
  paths (CSVs); anything else is refused with the file and entry named.
* ``froc``: the object-CXR / RFO Bench protocol (:mod:`rfo_bench.metrics.froc`), box centres as points,
  class-agnostic like the reference; ``froc_strata`` the same for the critical and the non-critical
  task separately (the other task's annotations and detections left out).
* ``auroc``: image-level, image score = max box score (or the classification CSV); an image without
  detection ranks below every image with one, so AUROC depends on the order of the scores only (logits
  welcome).
* Image paths are never opened by the evaluation (only the optional error grid reads images, and
  skips one it may not read): absolute paths such as the Hopkins README's ``/path/#####.jpg`` are
  accepted.
* ``ci95``: percentile bootstrap over images, or over patients when every image has a patient id, from
  the per-image results computed once (:mod:`rfo_bench.metrics.bootstrap`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.io.coco import dataset_to_coco_dict
from rfo_bench.io.records import DetectionDataset
from rfo_bench.metrics import auroc as auroc_m
from rfo_bench.metrics import bootstrap as boot
from rfo_bench.metrics import coco_eval
from rfo_bench.metrics.froc import (
    FPS_THRESHOLDS,
    VARIANTS,
    FrocEvents,
    FrocResult,
    Shape,
    froc_curve,
    froc_events,
    froc_score_replicates,
)
from rfo_bench.predictions import Predictions
from rfo_bench.report_markdown import report_markdown
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

BOOTSTRAP_UNITS = ("auto", "image", "patient")
AUROC_POSITIVES = ("any", "critical")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation settings.

    Attributes:
        coco_backend: ``native`` (this package's matcher, bit-identical to pycocotools and faster),
            ``pycocotools`` or ``faster_coco_eval`` for the 12 COCO numbers. The bootstrap always uses
            the native per-image matching.
        froc_variant: ``reference`` (the object-CXR script, comparable with published numbers) or
            ``corrected``.
        fps_thresholds: FROC false-positive-per-image thresholds.
        bootstrap: number of bootstrap replicates (0 = no intervals).
        seed: bootstrap seed.
        ci_level: interval coverage (0.95 -> key ``ci95``).
        bootstrap_unit: ``auto`` (patients when every image has a patient id), ``image`` or ``patient``.
        auroc_positive: image label for AUROC: ``any`` RFO, or ``critical`` RFO only (then the image
            score is the maximum over detections of critical categories, or of unknown criticality).
    """

    coco_backend: str = "native"
    froc_variant: str = "reference"
    fps_thresholds: tuple[float, ...] = FPS_THRESHOLDS
    bootstrap: int = 1000
    seed: int = 0
    ci_level: float = 0.95
    bootstrap_unit: str = "auto"
    auroc_positive: str = "any"

    def __post_init__(self) -> None:
        if self.coco_backend not in coco_eval.BACKENDS:
            raise UserInputError("unknown COCO backend; expected " + ", ".join(coco_eval.BACKENDS),
                                 field="coco_backend", value=self.coco_backend)
        if self.froc_variant not in VARIANTS:
            raise UserInputError("unknown FROC variant; expected " + ", ".join(VARIANTS), field="froc_variant",
                                 value=self.froc_variant)
        if self.bootstrap_unit not in BOOTSTRAP_UNITS:
            raise UserInputError("unknown bootstrap unit; expected " + ", ".join(BOOTSTRAP_UNITS),
                                 field="bootstrap_unit", value=self.bootstrap_unit)
        if self.auroc_positive not in AUROC_POSITIVES:
            raise UserInputError("auroc_positive must be any or critical", field="auroc_positive",
                                 value=self.auroc_positive)
        if self.bootstrap < 0 or not 0 < self.ci_level < 1:
            raise UserInputError("bootstrap must be >= 0 and ci_level in (0, 1)", field="bootstrap",
                                 value=(self.bootstrap, self.ci_level))
        if list(self.fps_thresholds) != sorted(self.fps_thresholds) or min(self.fps_thresholds, default=0) <= 0:
            raise UserInputError("FROC thresholds must be positive and increasing", field="fps_thresholds",
                                 value=self.fps_thresholds)


@dataclass
class Evaluation:
    """Everything :func:`evaluate_detailed` computed: the report and the arrays behind the plots."""

    report: dict[str, Any]
    coco: coco_eval.CocoResult | None = None
    table: coco_eval.MatchTable | None = None
    arrays: coco_eval.CocoArrays | None = None
    froc: FrocResult | None = None
    image_scores: np.ndarray | None = None
    replicates: dict[str, np.ndarray] = field(default_factory=dict)


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


def _froc_strata(gt: DetectionDataset, predictions: Predictions, config: EvalConfig) -> dict[str, Any]:
    """FROC of the critical and of the non-critical task.

    The critical task keeps the critical annotations only (a point on a zipper is then a false
    positive) and, when predictions have categories, the detections of critical (or unknown)
    categories; the non-critical task mirrors it. Every image still counts in FP per image.
    """
    out: dict[str, Any] = {}
    all_shapes: list[list[Shape]] | None = None
    for name, flag in (("critical", True), ("non_critical", False)):
        wanted = {c.id for c in gt.categories if (c.critical is not False) == flag}
        if not wanted or len(wanted) == len(gt.categories):
            continue
        all_shapes = annotation_shapes(gt) if all_shapes is None else all_shapes
        shapes = [[s for s, o in zip(image_shapes, r.objects) if o.category_id in wanted]
                  for image_shapes, r in zip(all_shapes, gt.images)]
        if not any(shapes):
            continue
        keep = np.ones(len(predictions), dtype=bool) if predictions.category_id is None else \
            np.isin(predictions.category_id, list(wanted))
        events = froc_events(predictions.image_index[keep], predictions.score[keep], predictions.points_xy[keep],
                             shapes)
        result = froc_curve(events, fps_thresholds=config.fps_thresholds, variant=config.froc_variant, curves=False)
        out[name] = {"score": _clean(result.score), "sensitivity": [_clean(v) for v in result.sensitivity],
                     "objects": int(sum(len(s) for s in shapes))}
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


def evaluate_detailed(gt: DetectionDataset, predictions: Predictions, config: EvalConfig | None = None) -> Evaluation:
    """Compute the report (see the module docstring) and keep the arrays used for plots."""
    from rfo_bench.validate import require_valid_annotations

    config = config or EvalConfig()
    require_valid_annotations(gt)
    num_images = len(gt.images)
    if num_images == 0:
        raise UserInputError("the ground truth has no image", file=gt.source or None, field="images")
    _check_predictions(predictions, num_images)
    has_boxes_gt = any(r.objects for r in gt.images)
    report: dict[str, Any] = {
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
    if has_boxes_gt:
        events = froc_events(predictions.image_index, predictions.score, predictions.points_xy, annotation_shapes(gt))
        froc = froc_curve(events, fps_thresholds=config.fps_thresholds, variant=config.froc_variant)
        evaluation.froc = froc
        report["froc"] = {
            "score": _clean(froc.score), "fps_per_image": list(froc.fps_per_image),
            "sensitivity": [_clean(s) for s in froc.sensitivity], "variant": froc.variant,
            "reference_undefined": froc.reference_undefined,
        }
        report["froc_strata"] = _froc_strata(gt, predictions, config)
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
        reps: dict[str, np.ndarray] = {}
        if evaluation.table is not None:
            pb = boot.precision_replicates(evaluation.table, counts)
            t50 = np.where(coco_eval.IOU_THRESHOLDS == 0.5)[0]
            reps["AP"] = boot.mean_ap(pb)
            reps["AP50"] = boot.mean_ap(pb, t50)
            assert evaluation.arrays is not None
            for name in report.get("strata", {}):
                flag = name == "critical"
                index = np.array([k for k, cid in enumerate(evaluation.arrays.category_ids)
                                  if gt.category(int(cid)).critical is flag])
                reps[f"AP50_{name}"] = boot.mean_ap(pb, t50, index)
        if events is not None:
            reps["froc"] = froc_score_replicates(events, counts, fps_thresholds=config.fps_thresholds,
                                                 variant=config.froc_variant)
        reps["auroc"] = auroc_m.weighted_auroc(labels, image_scores, counts)
        used = {}
        for name, values in reps.items():
            interval = boot.percentile_interval(values, config.ci_level)
            report[key][name] = interval.as_list() if interval.replicates_used else None
            used[name] = interval.replicates_used
        report["bootstrap"] = {"replicates": config.bootstrap, "unit": unit, "seed": config.seed,
                               "replicates_used": used, "method": "percentile"}
        evaluation.replicates = reps
    first = ("coco", "coco_backend", "per_category", "strata", "froc", "froc_strata", "auroc", "auroc_image_score", key,
             "bootstrap")
    evaluation.report = {k: report[k] for k in first if k in report} | {k: v for k, v in report.items() if k not in first}
    return evaluation


def evaluate(gt: DetectionDataset, predictions: Predictions, config: EvalConfig | None = None) -> dict[str, Any]:
    """The evaluation report as a JSON-ready dict (see the module docstring for its keys)."""
    return evaluate_detailed(gt, predictions, config).report


def write_report(
    evaluation: Evaluation, out_dir: str | os.PathLike[str], gt: DetectionDataset, predictions: Predictions,
    *, plots: bool = True, max_examples: int = 8,
) -> dict[str, Path]:
    """Write ``report.json``, ``report.md``, ``per_image.csv`` and (optionally) ``froc.png``,
    ``pr_curves.png`` and ``errors.png``.

    Returns:
        The written files by kind.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "report.json", "md": out / "report.md", "per_image": out / "per_image.csv"}
    atomic_write_bytes(written["json"], json.dumps(evaluation.report, indent=2).encode("utf-8"))
    atomic_write_bytes(written["md"], report_markdown(evaluation.report).encode("utf-8"))
    atomic_write_bytes(written["per_image"], per_image_table(evaluation, gt, predictions).encode("utf-8"))
    if plots:
        written.update(write_plots(evaluation, out, gt, predictions, max_examples=max_examples))
    return written


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


def write_plots(
    evaluation: Evaluation, out: Path, gt: DetectionDataset, predictions: Predictions, *, max_examples: int = 8
) -> dict[str, Path]:
    """FROC curve, per-category PR curves at IoU 0.5, and a grid of worst false positives / missed objects."""
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    def subplots(*args: Any, **kwargs: Any) -> tuple[Any, Any]:
        # a Figure without pyplot: no global backend or figure state is touched
        figure = Figure(figsize=kwargs.pop("figsize"))
        return figure, figure.subplots(*args, **kwargs)

    written: dict[str, Path] = {}
    froc = evaluation.froc
    if froc is not None:
        fig, ax = subplots(figsize=(5, 4))
        ax.step(np.maximum(froc.curve_fps, 1e-3), froc.curve_sensitivity, where="post", label="detections")
        ax.plot(froc.fps_per_image, froc.sensitivity, "o", label=f"{froc.variant} (score {froc.score:.3f})")
        ax.set_xscale("log", base=2)
        ax.set_xlim(min(froc.fps_per_image) / 2, max(froc.fps_per_image) * 2)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("false positives per image")
        ax.set_ylabel("sensitivity")
        ax.set_title("FROC")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
        written["froc"] = out / "froc.png"
        fig.tight_layout()
        fig.savefig(written["froc"], dpi=120)
    if evaluation.coco is not None and evaluation.arrays is not None:
        precision = evaluation.coco.precision
        t50 = int(np.where(coco_eval.IOU_THRESHOLDS == 0.5)[0][0])
        fig, ax = subplots(figsize=(5, 4))
        for k, cid in enumerate(evaluation.arrays.category_ids):
            curve = precision[t50, :, k, 0, -1]
            if (curve > -1).all():
                ax.plot(coco_eval.RECALL_THRESHOLDS, curve, label=f"{gt.category(int(cid)).name} "
                        f"(AP50 {np.mean(curve):.3f})")
        ax.set_xlabel("recall")
        ax.set_ylabel("interpolated precision")
        ax.set_title("precision-recall at IoU 0.5")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
        written["pr_curves"] = out / "pr_curves.png"
        fig.tight_layout()
        fig.savefig(written["pr_curves"], dpi=120)
    examples = error_examples(evaluation, gt, max_examples)
    if examples:
        from rfo_bench.io.images import read_image

        cols = min(4, len(examples))
        rows = int(np.ceil(len(examples) / cols))
        fig, axes = subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
        for ax in axes.ravel():
            ax.axis("off")
        for ax, (title, image_index, (x1, y1, x2, y2)) in zip(axes.ravel(), examples):
            record = gt.images[image_index]
            try:
                pixels = read_image(gt.resolve(record)).pixels
            except UserInputError as err:
                logger.warning("error grid: %s", err)
                ax.set_title(f"{title}\n(image unreadable)", fontsize=7)
                continue
            margin = max(x2 - x1, y2 - y1, 32.0)
            r0, r1 = int(max(0, y1 - margin)), int(min(pixels.shape[0], y2 + margin))
            c0, c1 = int(max(0, x1 - margin)), int(min(pixels.shape[1], x2 + margin))
            ax.imshow(pixels[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=1,
                      extent=(c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5))
            color = "red" if title.startswith("FP") else "yellow"
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, linewidth=1.5))
            ax.set_title(f"{title}\n{record.file_name}", fontsize=7)
        written["errors"] = out / "errors.png"
        fig.tight_layout()
        fig.savefig(written["errors"], dpi=100)
    return written

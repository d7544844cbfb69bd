"""Detector outputs: COCO results (a json file or a list in memory), per-image arrays (numpy / torch, as
torchmetrics takes them), and the Hopkins / object-CXR localization and classification CSVs.

* COCO results: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}, ...]`` (a dict with an
  ``annotations`` list is accepted too; a string ``image_id`` is matched as an image path). Boxes give COCO metrics; their centres are the FROC points.
* Localization CSV: ``image_path,prediction`` with ``prob x y`` points separated by ``;`` (a trailing
  ``;`` is ignored) (FROC only).
* Classification CSV: ``image_path,prediction`` with one probability per image (AUROC).

Every entry is checked against the ground truth: an unknown image, an unknown category, a NaN or
infinite score, a negative or non-finite box each raise one :class:`UserInputError` naming the file
and the entry. CSV image paths are matched to the ground truth's ``file_name`` exactly, then after
normalising (``./``, backslashes), then by unique base name.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from rfo_bench.io.coco import load_json
from rfo_bench.io.records import DetectionDataset, id_in_range
from rfo_bench.io.rfo_csv import _has_header, read_text_rows, split_objects
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

MEMORY = "<memory>"
"""The source named for data handed over in memory rather than read from a file."""
BOX_FORMATS = ("xyxy", "xywh")


@dataclass(frozen=True)
class Predictions:
    """Predictions aligned to a ground-truth dataset (indices into ``gt.images``).

    Attributes:
        image_index: ``(P,)`` image index of each prediction, in file order.
        score: ``(P,)`` confidence.
        points_xy: ``(P, 2)`` FROC points (box centres, or the CSV points) in px.
        boxes_xywh: ``(P, 4)`` boxes ``[x, y, w, h]``, or None for point predictions.
        category_id: ``(P,)`` category ids, or None for point predictions.
        image_scores: ``(I,)`` classification scores from a classification CSV, or None.
        source: the file(s) read.
    """

    image_index: np.ndarray
    score: np.ndarray
    points_xy: np.ndarray
    boxes_xywh: np.ndarray | None = None
    category_id: np.ndarray | None = None
    image_scores: np.ndarray | None = None
    source: str = ""

    @property
    def has_boxes(self) -> bool:
        return self.boxes_xywh is not None

    def __len__(self) -> int:
        return int(self.score.shape[0])

    def to_coco_results(self, gt: DetectionDataset) -> list[dict[str, Any]]:
        """The COCO results list (``image_id`` from ``gt``); requires boxes."""
        if self.boxes_xywh is None or self.category_id is None:
            raise UserInputError("point predictions have no boxes for COCO metrics", file=self.source or None)
        ids = [r.image_id for r in gt.images]
        return [
            {"image_id": ids[i], "category_id": int(c), "bbox": [float(v) for v in b], "score": float(s)}
            for i, c, b, s in zip(self.image_index, self.category_id, self.boxes_xywh, self.score)
        ]


class ImageMatcher:
    """Finds a ground-truth image index from an id or a path written by a detector."""

    def __init__(self, gt: DetectionDataset) -> None:
        self.by_id = {r.image_id: i for i, r in enumerate(gt.images)}
        self.by_name = {_normalise(r.file_name): i for i, r in enumerate(gt.images)}
        base: dict[str, list[int]] = {}
        for i, r in enumerate(gt.images):
            base.setdefault(PurePosixPath(_normalise(r.file_name)).name, []).append(i)
        self.by_base = base

    def from_path(self, name: str) -> int | None:
        key = _normalise(name)
        if key in self.by_name:
            return self.by_name[key]
        matches = self.by_base.get(PurePosixPath(key).name, [])
        return matches[0] if len(matches) == 1 else None


def _normalise(name: str) -> str:
    text = name.strip().replace("\\", "/")
    while text.startswith("./"):
        text = text[2:]
    return text


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_coco_results(path: str | os.PathLike[str], gt: DetectionDataset) -> Predictions:
    """Read a COCO results json and check every entry against ``gt``.

    Raises:
        UserInputError: not a list, or an entry with an unknown image id or category, a non-finite
            score, or a box that is not 4 finite numbers with non-negative width and height.
    """
    file = Path(path)
    return coco_results_to_predictions(load_json(file), gt, source=file)


def coco_results_to_predictions(data: Any, gt: DetectionDataset, *, source: str | os.PathLike[str] = MEMORY
                                ) -> Predictions:
    """COCO results already in memory (``[{"image_id", "category_id", "bbox", "score"}, ...]``, as
    ``pycocotools``' ``loadRes`` takes them) checked against ``gt`` exactly as :func:`read_coco_results`.

    Args:
        data: the results list (or a dict with an ``annotations`` list).
        gt: the ground truth the ids refer to.
        source: named in error messages and in the report.
    """
    file, from_file = str(source), source != MEMORY
    if isinstance(data, dict) and isinstance(data.get("annotations"), list):
        data = data["annotations"]
    if not isinstance(data, list):
        raise UserInputError(
            "expected a COCO results list [{image_id, category_id, bbox, score}, ...]", file=file,
            value=type(data).__name__,
        )
    matcher = ImageMatcher(gt)
    known_categories = {c.id for c in gt.categories}
    n = len(data)
    image_index = np.empty(n, dtype=np.int64)
    score = np.empty(n)
    boxes = np.empty((n, 4))
    category = np.empty(n, dtype=np.int64)
    for k, entry in enumerate(data):
        where = f"[{k}]"
        if not isinstance(entry, dict):
            raise UserInputError("result entry must be an object", file=file, field=where, value=entry)
        missing = [key for key in ("image_id", "category_id", "bbox", "score") if key not in entry]
        if missing:
            raise UserInputError("result entry lacks " + ", ".join(missing), file=file, field=where)
        if not from_file:  # numpy / torch scalars and arrays as Python numbers and lists
            entry = {key: _plain(entry[key]) for key in ("image_id", "category_id", "bbox", "score")}
        image_ref = entry["image_id"]
        if isinstance(image_ref, str):  # some tools write the file name as the image id
            image = matcher.from_path(image_ref)
        else:
            image = matcher.by_id.get(image_ref) if not isinstance(image_ref, bool) else None
        if image is None:
            raise UserInputError("prediction for an image id that is not in the ground truth", file=file,
                                 field=f"{where}.image_id", value=entry["image_id"])
        category_id = entry["category_id"]
        if isinstance(category_id, int) and not isinstance(category_id, bool) and not id_in_range(category_id):
            raise UserInputError("category id does not fit a signed 64-bit integer", file=file,
                                 field=f"{where}.category_id", value=category_id)
        if category_id not in known_categories or isinstance(category_id, bool):
            raise UserInputError(
                "unknown category id; the ground truth has " + ", ".join(str(c) for c in sorted(known_categories)),
                file=file, field=f"{where}.category_id", value=entry["category_id"],
            )
        if not _finite_number(entry["score"]):
            raise UserInputError("score must be a finite number", file=file, field=f"{where}.score",
                                 value=entry["score"])
        bbox = entry["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_finite_number(v) for v in bbox):
            raise UserInputError("bbox must be 4 finite numbers [x, y, width, height]", file=file,
                                 field=f"{where}.bbox", value=bbox)
        if bbox[2] < 0 or bbox[3] < 0:
            raise UserInputError("bbox has a negative width or height", file=file, field=f"{where}.bbox", value=bbox)
        image_index[k], score[k], boxes[k], category[k] = image, entry["score"], bbox, entry["category_id"]
    points = boxes[:, :2] + boxes[:, 2:] / 2.0
    return Predictions(image_index, score, points, boxes, category, None, file)


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy and torch scalars and arrays
        return value.tolist()
    return list(value) if isinstance(value, tuple) else value


def _csv_rows(file: Path) -> list[tuple[int, list[str]]]:
    rows = read_text_rows(file)
    start = 1 if rows and (_has_header(rows[0]) or (rows[0] and rows[0][-1].strip().lower() == "prediction")) else 0
    return [(i + 1, r) for i, r in enumerate(rows) if i >= start and r and any(c.strip() for c in r)]


def read_localization_csv(path: str | os.PathLike[str], gt: DetectionDataset) -> Predictions:
    """Read a Hopkins / object-CXR localization CSV (``image_path,prob x y;prob x y``).

    Raises:
        UserInputError: a malformed line, an unknown image, or a non-finite number (naming the line).
    """
    file = Path(path)
    matcher = ImageMatcher(gt)
    images: list[int] = []
    values: list[tuple[float, float, float]] = []
    for line, row in _csv_rows(file):
        if len(row) != 2:
            raise UserInputError("expected 2 columns image_path,prediction", file=file, field=f"line {line}",
                                 value=",".join(row))
        image = matcher.from_path(row[0])
        if image is None:
            raise UserInputError("prediction for an image that is not in the ground truth", file=file,
                                 field=f"line {line}", value=row[0])
        for k, item in enumerate(split_objects(row[1])):
            parts = item.split()
            try:
                triple = tuple(float(p) for p in parts)
            except ValueError:
                triple = ()
            if len(triple) != 3 or not all(math.isfinite(v) for v in triple):
                raise UserInputError("each prediction must be 3 finite numbers `prob x y`", file=file,
                                     field=f"line {line} prediction {k + 1}", value=item)
            images.append(image)
            values.append(triple)  # type: ignore[arg-type]
    arr = np.asarray(values, dtype=np.float64).reshape(-1, 3)
    return Predictions(np.asarray(images, dtype=np.int64), arr[:, 0], arr[:, 1:3].copy(), source=str(file))


def read_classification_csv(path: str | os.PathLike[str], gt: DetectionDataset) -> np.ndarray:
    """Read a classification CSV (``image_path,prob``) into ``(I,)`` scores aligned to ``gt``.

    Raises:
        UserInputError: malformed line, unknown image, non-finite probability, duplicate or missing image.
    """
    file = Path(path)
    matcher = ImageMatcher(gt)
    scores = np.full(len(gt.images), np.nan)
    for line, row in _csv_rows(file):
        if len(row) != 2:
            raise UserInputError("expected 2 columns image_path,prediction", file=file, field=f"line {line}",
                                 value=",".join(row))
        image = matcher.from_path(row[0])
        if image is None:
            raise UserInputError("prediction for an image that is not in the ground truth", file=file,
                                 field=f"line {line}", value=row[0])
        try:
            value = float(row[1])
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            raise UserInputError("probability must be a finite number", file=file, field=f"line {line}",
                                 value=row[1])
        if not np.isnan(scores[image]):
            raise UserInputError("image listed twice", file=file, field=f"line {line}", value=row[0])
        scores[image] = value
    missing = np.flatnonzero(np.isnan(scores))
    if missing.size:
        raise UserInputError(f"{missing.size} ground-truth image(s) have no classification score", file=file,
                             field="image_path", value=gt.images[int(missing[0])].file_name)
    return scores


def as_array(value: Any, dtype: type, *, where: str) -> np.ndarray:
    """A numpy array from a list, a numpy array or a torch tensor (moved to the CPU, detached)."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError):
        raise UserInputError(f"expected an array of {dtype.__name__}", file=MEMORY, field=where,
                             value=type(value).__name__) from None


def boxes_to_xywh(boxes: Any, box_format: str, *, where: str) -> np.ndarray:
    """``(N, 4)`` float64 ``[x, y, w, h]`` from ``[x1, y1, x2, y2]`` (``xyxy``) or ``xywh`` boxes.

    Raises:
        UserInputError: not ``(N, 4)``, not finite, or a negative width / height (naming ``where``).
    """
    if box_format not in BOX_FORMATS:
        raise UserInputError("box_format must be xyxy or xywh", field="box_format", value=box_format)
    array = as_array(boxes, np.float64, where=where)
    if array.size == 0:
        array = array.reshape(0, 4)
    if array.ndim != 2 or array.shape[1] != 4:
        raise UserInputError("boxes must have shape (N, 4)", file=MEMORY, field=where, value=array.shape)
    if not np.all(np.isfinite(array)):
        raise UserInputError("boxes must be finite", file=MEMORY, field=where)
    xywh = array.copy() if box_format == "xywh" else np.concatenate([array[:, :2], array[:, 2:] - array[:, :2]], 1)
    if (xywh[:, 2:] < 0).any():
        bad = int(np.flatnonzero((xywh[:, 2:] < 0).any(axis=1))[0])
        raise UserInputError(f"box {bad} has a negative width or height ({box_format})", file=MEMORY, field=where,
                             value=array[bad].tolist())
    return xywh


def predictions_from_arrays(
    per_image: Mapping[int, Mapping[str, Any]] | Sequence[Mapping[str, Any]], gt: DetectionDataset, *,
    box_format: str = "xyxy", source: str = MEMORY, check_categories: bool = True,
) -> Predictions:
    """Predictions from per-image arrays, as torchmetrics' ``MeanAveragePrecision.update`` takes them.

    Args:
        per_image: a sequence aligned with ``gt.images``, or a mapping ``image_id -> arrays``; each item
            holds ``boxes (N, 4)`` (``box_format``), ``scores (N,)`` and ``labels (N,)`` (category ids),
            or ``points (N, 2)`` (px) and ``scores`` for point predictions (FROC only). Lists, numpy
            arrays and torch tensors are accepted.
        gt: the ground truth.
        box_format: ``xyxy`` (``[x1, y1, x2, y2]``, torchmetrics' default) or ``xywh`` (COCO).
        source: named in messages and in the report.
        check_categories: refuse labels that are not categories of ``gt`` (off where the category table
            is made from the labels afterwards, as :class:`rfo_bench.evaluator.DetectionEvaluator` does).

    Raises:
        UserInputError: a wrong shape, a non-finite value, an unknown image or category, or a mix of
            boxes and points (naming the image and the key).
    """
    if isinstance(per_image, Mapping):
        by_id = {r.image_id: k for k, r in enumerate(gt.images)}
        items = []
        for image_id, arrays in per_image.items():
            if _plain(image_id) not in by_id:
                raise UserInputError("prediction for an image id that is not in the ground truth", file=source,
                                     field=f"[{image_id!r}]")
            items.append((by_id[_plain(image_id)], f"[{image_id!r}]", arrays))
    else:
        if len(per_image) != len(gt.images):
            raise UserInputError(f"expected one prediction entry per ground-truth image ({len(gt.images)})",
                                 file=source, value=len(per_image))
        items = [(k, f"[{k}]", arrays) for k, arrays in enumerate(per_image)]
    known = np.array(sorted(c.id for c in gt.categories), dtype=np.int64)
    parts: dict[str, list[np.ndarray]] = {"image": [], "score": [], "boxes": [], "labels": [], "points": []}
    kinds = set()
    for index, where, arrays in items:
        if not isinstance(arrays, Mapping) or "scores" not in arrays or not ({"boxes", "points"} & set(arrays)):
            raise UserInputError("each image needs `scores` and `boxes` (with `labels`) or `points`", file=source,
                                 field=where)
        score = as_array(arrays["scores"], np.float64, where=f"{where}.scores").reshape(-1)
        if not np.all(np.isfinite(score)):
            raise UserInputError("scores must be finite", file=source, field=f"{where}.scores")
        n = score.size
        if "boxes" in arrays:
            kinds.add("boxes")
            boxes = boxes_to_xywh(arrays["boxes"], box_format, where=f"{where}.boxes")
            labels = as_array(arrays.get("labels", ()), np.int64, where=f"{where}.labels").reshape(-1)
            if boxes.shape[0] != n or labels.size != n:
                raise UserInputError("boxes, scores and labels must have the same length", file=source,
                                     field=where, value=(boxes.shape[0], n, labels.size))
            unknown = labels[~np.isin(labels, known)] if check_categories else labels[:0]
            if unknown.size:
                raise UserInputError("unknown category id; the ground truth has " + ", ".join(map(str, known)),
                                     file=source, field=f"{where}.labels", value=int(unknown[0]))
            parts["boxes"].append(boxes)
            parts["labels"].append(labels)
            parts["points"].append(boxes[:, :2] + boxes[:, 2:] / 2.0)
        else:
            kinds.add("points")
            points = as_array(arrays["points"], np.float64, where=f"{where}.points").reshape(-1, 2)
            if points.shape[0] != n or not np.all(np.isfinite(points)):
                raise UserInputError("points must be (N, 2) finite numbers, one per score", file=source,
                                     field=f"{where}.points", value=points.shape)
            parts["points"].append(points)
        parts["image"].append(np.full(n, index, dtype=np.int64))
        parts["score"].append(score)
    if len(kinds) > 1:
        raise UserInputError("give boxes for every image or points for every image, not a mix", file=source)
    has_boxes = kinds != {"points"}

    def joined(key: str, empty: np.ndarray) -> np.ndarray:
        return np.concatenate(parts[key]) if parts[key] else empty

    return Predictions(
        joined("image", np.zeros(0, np.int64)), joined("score", np.zeros(0)), joined("points", np.zeros((0, 2))),
        joined("boxes", np.zeros((0, 4))) if has_boxes else None,
        joined("labels", np.zeros(0, np.int64)) if has_boxes else None, source=source,
    )


PredictionSource = str | os.PathLike[str] | Predictions | list | Mapping | None
"""What :func:`read_predictions` accepts: a file, COCO results in memory, per-image arrays, or Predictions."""


def read_predictions(
    source: PredictionSource, gt: DetectionDataset, classification: str | os.PathLike[str] | None = None, *,
    box_format: str = "xyxy",
) -> Predictions:
    """Box (``.json``) or point (``.csv``) predictions from a file or from memory, plus optional
    classification scores.

    Args:
        source: a COCO results ``.json`` or localization ``.csv`` path; a COCO results list in memory
            (:func:`coco_results_to_predictions`); per-image arrays, a list aligned with ``gt.images``
            or a mapping ``image_id -> {"boxes", "scores", "labels"}`` (:func:`predictions_from_arrays`);
            a :class:`Predictions`; or None to read only the classification scores (AUROC).
        gt: the ground truth.
        classification: a classification CSV (one probability per image).
        box_format: of per-image arrays: ``xyxy`` (default) or ``xywh``.
    """
    if source is None:
        if classification is None:
            raise UserInputError("no prediction file given")
        scores = read_classification_csv(classification, gt)
        return Predictions(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 2)), image_scores=scores,
                           source=str(classification))
    if isinstance(source, Predictions):
        preds = source
    elif isinstance(source, Mapping) and not isinstance(source.get("annotations"), list):
        preds = predictions_from_arrays(source, gt, box_format=box_format)
    elif isinstance(source, (list, tuple, Mapping)):
        first = source[0] if isinstance(source, (list, tuple)) and source else None
        if isinstance(first, Mapping) and "bbox" not in first and ("scores" in first or "boxes" in first):
            preds = predictions_from_arrays(source, gt, box_format=box_format)
        else:
            preds = coco_results_to_predictions(list(source) if isinstance(source, tuple) else source, gt)
    else:
        file = Path(source)
        if file.suffix.lower() == ".json":
            preds = read_coco_results(file, gt)
        elif file.suffix.lower() in (".csv", ".txt"):
            preds = read_localization_csv(file, gt)
        else:
            raise UserInputError("predictions must be a COCO results .json or a localization .csv", file=file)
    if classification is None:
        return preds
    scores = read_classification_csv(classification, gt)
    return Predictions(preds.image_index, preds.score, preds.points_xy, preds.boxes_xywh, preds.category_id,
                       scores, f"{preds.source}+{classification}")


def concatenate_predictions(parts: Sequence[Predictions], *, source: str = MEMORY) -> Predictions:
    """Predictions of several batches on one ground truth, in batch order (the order of a single file).

    Raises:
        UserInputError: a mix of box and point predictions, or classification scores (per image, not per batch).
    """
    if any(p.image_scores is not None for p in parts):
        raise UserInputError("classification scores cannot be accumulated batch by batch", field="image_scores")
    nonempty = [p for p in parts if len(p)]
    if len({p.has_boxes for p in nonempty}) > 1:
        raise UserInputError("give boxes in every batch or points in every batch, not a mix", file=source)
    has_boxes = not nonempty or nonempty[0].has_boxes

    def joined(values: list[np.ndarray | None], empty: np.ndarray) -> np.ndarray:
        return np.concatenate([empty, *(v for v in values if v is not None)]).astype(empty.dtype)

    return Predictions(
        joined([p.image_index for p in nonempty], np.zeros(0, np.int64)),
        joined([p.score for p in nonempty], np.zeros(0)),
        joined([p.points_xy.reshape(-1, 2) for p in nonempty], np.zeros((0, 2))),
        joined([p.boxes_xywh for p in nonempty], np.zeros((0, 4))) if has_boxes else None,
        joined([p.category_id for p in nonempty], np.zeros(0, np.int64)) if has_boxes else None,
        source=source,
    )

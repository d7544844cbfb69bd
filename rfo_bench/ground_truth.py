"""Ground truth from a file or from memory: the one door for what the evaluator compares against.

:func:`read_ground_truth` takes a path (any format of :func:`rfo_bench.io.formats.read_dataset`), a
COCO dict already in memory (as ``pycocotools.coco.COCO`` holds it), per-image targets (``boxes`` and
``labels`` arrays, as torchmetrics' ``update(preds, target)`` takes them) or a :class:`DetectionDataset`.
Targets become images with ids ``first_image_id, first_image_id + 1, ...`` in their order (unless an
item gives its own ``image_id``) and the file name ``image_<id>``; nothing is ever read from disk.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.categories import CATEGORY_BY_ID, CRITICAL
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject
from rfo_bench.predictions import MEMORY, as_array, boxes_to_xywh
from toolkit_core.errors import UserInputError

CategoryTable = Mapping[int, str] | Sequence[Category] | Sequence[Mapping[str, Any]] | None
"""Categories of in-memory targets: ``{id: name}``, :class:`Category` objects, COCO category dicts, or
None (the labels seen, named after the RFO vocabulary where the id is one of its ids)."""

GroundTruthSource = str | os.PathLike[str] | DetectionDataset | Mapping[str, Any] | Sequence[Mapping[str, Any]]


def category_table(categories: CategoryTable, labels: Sequence[int] = ()) -> tuple[Category, ...]:
    """The :class:`Category` table of in-memory data.

    With ``categories=None`` every id in ``labels`` gets a category: the RFO vocabulary's name and
    criticality for ids 1-10 (:mod:`rfo_bench.categories`), ``class <id>`` of unknown criticality else.
    """
    if categories is None:
        table = []
        for cid in sorted({int(v) for v in labels}):
            known = CATEGORY_BY_ID.get(cid)
            table.append(Category(cid, known.name, known.supercategory == CRITICAL) if known is not None
                         else Category(cid, f"class {cid}", None))
        return tuple(table)
    if isinstance(categories, Mapping):
        return tuple(Category(int(cid), str(name), _critical(str(name))) for cid, name in categories.items())
    out = []
    for k, entry in enumerate(categories):
        if isinstance(entry, Category):
            out.append(entry)
        elif isinstance(entry, Mapping) and "id" in entry and "name" in entry:
            from rfo_bench.io.records import category_from_name

            out.append(category_from_name(int(entry["id"]), str(entry["name"]), entry.get("supercategory")))
        else:
            raise UserInputError("a category is a Category or a dict with `id` and `name`", file=MEMORY,
                                 field=f"categories[{k}]", value=entry)
    return tuple(out)


def _critical(name: str) -> bool | None:
    from rfo_bench.categories import CATEGORY_BY_NAME

    known = CATEGORY_BY_NAME.get(name)
    return None if known is None else known.supercategory == CRITICAL


def records_from_targets(
    targets: Sequence[Mapping[str, Any]], *, first_image_id: int = 1, box_format: str = "xyxy", offset: int = 0,
) -> list[ImageRecord]:
    """One :class:`ImageRecord` per target ``{"boxes": (G, 4), "labels": (G,)}`` (lists, numpy, torch).

    Args:
        targets: per image; optional keys ``image_id``, ``file_name``, ``patient_id`` and ``area (G,)``
            (px², for COCO's size ranges; default the box area).
        first_image_id: id of the first target without its own ``image_id``.
        box_format: ``xyxy`` (torchmetrics' default) or ``xywh`` (COCO).
        offset: index of the first target in the whole stream (for messages).

    Raises:
        UserInputError: a target without ``boxes`` / ``labels``, wrong shapes, or a negative box size.
    """
    records = []
    for k, target in enumerate(targets):
        where = f"targets[{offset + k}]"
        if not isinstance(target, Mapping) or "boxes" not in target or "labels" not in target:
            raise UserInputError("each target needs `boxes` and `labels`", file=MEMORY, field=where)
        xywh = boxes_to_xywh(target["boxes"], box_format, where=f"{where}.boxes")
        labels = as_array(target["labels"], np.int64, where=f"{where}.labels").reshape(-1)
        if labels.size != xywh.shape[0]:
            raise UserInputError("boxes and labels must have the same length", file=MEMORY, field=where,
                                 value=(xywh.shape[0], labels.size))
        image_id = int(target.get("image_id", first_image_id + k))
        areas = [None] * labels.size if "area" not in target else \
            as_array(target["area"], np.float64, where=f"{where}.area").reshape(-1).tolist()
        if len(areas) != labels.size:
            raise UserInputError("area must have one value per box", file=MEMORY, field=f"{where}.area")
        # the corners as given (xyxy) or as a COCO file gives them (x + w), without a round trip
        xyxy = as_array(target["boxes"], np.float64, where=f"{where}.boxes").reshape(-1, 4) \
            if box_format == "xyxy" else np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        objects = tuple(RFOObject(tuple(box), int(c), source_area=a)  # type: ignore[arg-type]
                        for box, c, a in zip(xyxy.tolist(), labels.tolist(), areas))
        patient = target.get("patient_id")
        records.append(ImageRecord(str(target.get("file_name", f"image_{image_id}")), image_id,
                                   patient_id=None if patient is None else str(patient), objects=objects))
    return records


def dataset_from_targets(
    targets: Sequence[Mapping[str, Any]], *, categories: CategoryTable = None, box_format: str = "xyxy",
    extra_labels: Sequence[int] = (), root: str | os.PathLike[str] | None = None,
) -> DetectionDataset:
    """A :class:`DetectionDataset` from per-image targets (see :func:`records_from_targets`).

    ``extra_labels`` (e.g. the predictions' labels) join the derived category table when
    ``categories`` is None, so that a detection of a class absent from the targets is a category
    without ground truth (as in COCO) rather than an unknown id.
    """
    records = records_from_targets(targets, box_format=box_format)
    labels = [o.category_id for r in records for o in r.objects] + [int(v) for v in extra_labels]
    return DetectionDataset(Path(root or "."), tuple(records), category_table(categories, labels), MEMORY)


def read_ground_truth(
    source: GroundTruthSource, *, categories: CategoryTable = None, box_format: str = "xyxy",
    root: str | os.PathLike[str] | None = None, **read_options: Any,
) -> DetectionDataset:
    """The ground truth from a path, a COCO dict, per-image targets or a :class:`DetectionDataset`.

    Args:
        source: see the module docstring.
        categories: the category table of targets (default: from their labels).
        box_format: of targets: ``xyxy`` (default) or ``xywh``.
        root: image root (paths and COCO dicts; default the file's folder, or the working directory).
        read_options: passed to :func:`rfo_bench.io.formats.read_dataset` for a path (``fmt``,
            ``csv_convention``, ...).
    """
    if isinstance(source, DetectionDataset):
        return source
    if isinstance(source, Mapping):
        from rfo_bench.io.coco import coco_dict_to_dataset

        return coco_dict_to_dataset(source, Path(MEMORY), Path(root or "."))
    if isinstance(source, Sequence) and not isinstance(source, str):
        return dataset_from_targets(source, categories=categories, box_format=box_format, root=root)
    from rfo_bench.io.formats import read_dataset

    return read_dataset(source, root=root, **read_options)

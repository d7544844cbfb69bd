"""COCO json <-> :class:`~rfo_bench.io.records.DetectionDataset` (the hub format).

Reading keeps what the evaluator and the converters need: images (``id``, ``file_name``, ``width``,
``height`` and the optional ``patient_id``), annotations (``bbox`` in ``[x, y, w, h]``, a single-part
``segmentation`` polygon, the optional ``area``) and categories (``supercategory`` ``critical`` /
``non_critical`` sets the critical flag). Two extra keys round-trip the RFO shapes COCO cannot say:
``annotations[].rfo_shape`` (``box`` / ``ellipse`` / ``polygon``), ``annotations[].rfo_object_id`` (the
Hopkins ``<ID>`` of an object; COCO ``id`` values are renumbered to stay unique) and
``images[].rfo_positive`` (an image-level label without boxes). Image and category ids must fit a
signed 64-bit integer (what NumPy and pycocotools index with). Crowd annotations (``iscrowd: 1``) are
refused: RFOs are countable.

Structural problems (not json, a missing key, a malformed entry) raise :class:`UserInputError`
naming the file and the entry, unless a ``problems`` list is given, in which case malformed entries
are skipped and described there (used by ``rfo-bench validate`` to report everything in one pass).
Semantic checks (duplicate ids, unknown categories, boxes outside the image) live in
:mod:`rfo_bench.validate`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from rfo_bench.io.records import (
    Category,
    DetectionDataset,
    ImageRecord,
    RFOObject,
    category_from_name,
    id_in_range,
    polygon_bbox,
    resolve_inside,
)
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

ROOT_KEY = "rfo_image_root"
"""Top-level key naming the image root when the images do not lie below the json's directory."""
ELLIPSE_VERTICES = 32
"""Vertices of the polygon written as the COCO ``segmentation`` of an ellipse."""


def _fail(problems: list[str] | None, message: str, file: Path, entry: str, value: Any = None) -> None:
    err = UserInputError(message, file=file, field=entry, value=value)
    if problems is None:
        raise err
    problems.append(str(err))


def _number_list(value: Any) -> list[float] | None:
    if not isinstance(value, (list, tuple)):
        return None
    out: list[float] = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return None
        out.append(float(v))
    return out


def _too_large(entry: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    """The first of ``keys`` holding an integer id outside :data:`ID_RANGE`, else None."""
    for key in keys:
        number = _int_id(entry.get(key))
        if number is not None and not id_in_range(number):
            return key
    return None


_RANGE_MESSAGE = "id does not fit a signed 64-bit integer"


def _int_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a json file with errors naming the file and the line."""
    file = Path(path)
    if not file.is_file():
        raise UserInputError("file does not exist", file=file)
    try:
        with open(file, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        raise UserInputError(f"not valid json: {err.msg} at line {err.lineno} column {err.colno}", file=file) from None
    except UnicodeDecodeError:
        raise UserInputError("not a UTF-8 text file", file=file) from None


ANNOTATIONS_FILE = "annotations.json"
"""The COCO file of a dataset directory: the layout ``rfo-synth`` writes (``DIR/annotations.json`` next to
``DIR/images/``)."""


def dataset_annotations_path(directory: str | os.PathLike[str]) -> Path:
    """``DIR/annotations.json`` of a dataset directory.

    Raises:
        UserInputError: ``DIR`` is not a directory or holds no ``annotations.json`` (naming ``DIR``).
    """
    root = Path(directory)
    if not root.is_dir():
        raise UserInputError("dataset directory does not exist", file=root)
    path = root / ANNOTATIONS_FILE
    if not path.is_file():
        raise UserInputError(f"not a dataset directory: {ANNOTATIONS_FILE} is missing", file=root)
    return path


def load_dataset_coco(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The parsed ``annotations.json`` of a dataset directory, with its ``images``, ``annotations`` and
    ``categories`` lists (entries unchecked: :func:`coco_dict_to_dataset` checks those).

    Raises:
        UserInputError: no such file, not JSON, not an object, or one of the three lists missing (naming
            the file and the key).
    """
    path = dataset_annotations_path(directory)
    data = load_json(path)
    if not isinstance(data, dict):
        raise UserInputError("expected a JSON object", file=path)
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise UserInputError("missing list", file=path, field=key)
    return data


def resolve_dataset_image(directory: str | os.PathLike[str], file_name: str) -> Path:
    """A COCO ``file_name`` of a dataset directory: relative to ``DIR`` or to ``DIR/images`` (the two
    layouts generators write), never outside them.

    Raises:
        UserInputError: the image is in neither place, or the name leaves the directory.
    """
    root = Path(directory)
    source = str(root / ANNOTATIONS_FILE)
    for base in (root, root / "images"):
        candidate = resolve_inside(base, file_name, source=source)
        if candidate.is_file():
            return candidate
    raise UserInputError(f"image listed in {ANNOTATIONS_FILE} not found (looked in DIR and DIR/images)",
                         file=root / ANNOTATIONS_FILE, field="images.file_name", value=file_name)


def coco_pixel_spacing_mm(entry: Any) -> float | None:
    """The isotropic pixel spacing (mm) an ``images[]`` entry records in ``pixel_spacing_mm``.

    The field is one number or ``[row, column]`` (their mean is taken); ``None`` when the entry has no
    such field or its values are not positive numbers. A PNG carries no spacing, so this field is where
    generators and background pools keep the real one.
    """
    value = entry.get("pixel_spacing_mm") if isinstance(entry, dict) else None
    values = value if isinstance(value, (list, tuple)) else [value]
    if not 1 <= len(values) <= 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                            for v in values):
        return None
    return float(sum(values) / len(values))


def read_coco(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None, *, problems: list[str] | None = None
) -> DetectionDataset:
    """Read a COCO detection json.

    Args:
        path: the json file.
        root: directory the ``file_name`` entries are relative to; default the file's ``rfo_image_root``
            entry if any, else the json's directory.
        problems: when given, malformed entries are skipped and described here instead of raising.

    Raises:
        UserInputError: not json, missing ``images`` / ``annotations`` / ``categories``, or a malformed
            entry (when ``problems`` is None).
    """
    file = Path(path)
    data = load_json(file)
    if root is None:
        stated = data.get(ROOT_KEY) if isinstance(data, dict) else None
        root = Path(stated) if isinstance(stated, str) and stated else file.parent
    return coco_dict_to_dataset(data, file, Path(root), problems=problems)


def coco_dict_to_dataset(
    data: Any, file: Path, root: Path, *, problems: list[str] | None = None
) -> DetectionDataset:
    """Convert a parsed COCO dict (see :func:`read_coco`)."""
    if not isinstance(data, dict):
        raise UserInputError("expected a COCO json object with images, annotations and categories", file=file)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise UserInputError(f"COCO json has no `{key}` list", file=file, field=key)
        if not isinstance(data[key], list):
            raise UserInputError(f"`{key}` must be a list", file=file, field=key, value=type(data[key]).__name__)

    categories: list[Category] = []
    for i, entry in enumerate(data["categories"]):
        cid = _int_id(entry.get("id")) if isinstance(entry, dict) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        if cid is None or not isinstance(name, str):
            _fail(problems, "category needs an integer `id` and a string `name`", file, f"categories[{i}]", entry)
            continue
        if not id_in_range(cid):
            _fail(problems, _RANGE_MESSAGE, file, f"categories[{i}].id", cid)
            continue
        categories.append(category_from_name(cid, name, entry.get("supercategory")))

    objects: dict[int, list[RFOObject]] = {}
    for i, ann in enumerate(data["annotations"]):
        where = f"annotations[{i}]"
        if not isinstance(ann, dict):
            _fail(problems, "annotation must be an object", file, where, ann)
            continue
        image_id, category_id = _int_id(ann.get("image_id")), _int_id(ann.get("category_id"))
        if image_id is None or category_id is None:
            _fail(problems, "annotation needs integer `image_id` and `category_id`", file, where,
                  {k: ann.get(k) for k in ("image_id", "category_id")})
            continue
        bad = _too_large(ann, ("image_id", "category_id"))
        if bad is not None:
            _fail(problems, _RANGE_MESSAGE, file, f"{where}.{bad}", ann.get(bad))
            continue
        if ann.get("iscrowd", 0):
            _fail(problems, "crowd annotations (iscrowd=1) are not supported for RFOs", file, where, ann.get("id"))
            continue
        bbox = _number_list(ann.get("bbox"))
        if bbox is None or len(bbox) != 4 or not all(math.isfinite(v) for v in bbox):
            _fail(problems, "`bbox` must be 4 finite numbers [x, y, width, height]", file, where, ann.get("bbox"))
            continue
        x, y, w, h = bbox
        shape = ann.get("rfo_shape", "box")
        polygon: tuple[float, ...] = ()
        segmentation = ann.get("segmentation")
        if isinstance(segmentation, list) and segmentation:
            parts = [_number_list(p) for p in segmentation]
            if len(parts) == 1 and parts[0] is not None and len(parts[0]) >= 6 and len(parts[0]) % 2 == 0:
                polygon = tuple(parts[0])
                if shape == "box" and "rfo_shape" not in ann:
                    shape = "polygon"
            elif "rfo_shape" not in ann:
                logger.debug("%s: %s: multi-part or RLE segmentation kept as its box", file, where)
        if shape not in ("box", "ellipse", "polygon"):
            _fail(problems, "`rfo_shape` must be box, ellipse or polygon", file, where, shape)
            continue
        if shape == "polygon" and not polygon:
            _fail(problems, "`rfo_shape` polygon needs a single-part `segmentation` polygon", file, where)
            continue
        area = ann.get("area")
        ann_id = _int_id(ann.get("id"))
        obj = RFOObject(
            bbox_xyxy=(x, y, x + w, y + h), category_id=category_id, shape=shape,
            polygon_xy=polygon if shape == "polygon" else (), annotation_id=ann_id,
            source_area=float(area) if isinstance(area, (int, float)) and not isinstance(area, bool) else None,
            object_id=_int_id(ann.get("rfo_object_id")),
        )
        objects.setdefault(image_id, []).append(obj)

    images: list[ImageRecord] = []
    for i, entry in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(entry, dict):
            _fail(problems, "image entry must be an object", file, where, entry)
            continue
        image_id, name = _int_id(entry.get("id")), entry.get("file_name")
        if image_id is None or not isinstance(name, str) or not name:
            _fail(problems, "image needs an integer `id` and a `file_name`", file, where,
                  {k: entry.get(k) for k in ("id", "file_name")})
            continue
        if not id_in_range(image_id):
            _fail(problems, _RANGE_MESSAGE, file, f"{where}.id", image_id)
            continue
        width, height = _int_id(entry.get("width")), _int_id(entry.get("height"))
        patient = entry.get("patient_id")
        positive = entry.get("rfo_positive")
        images.append(ImageRecord(
            file_name=name.replace("\\", "/"), image_id=image_id, width=width or None, height=height or None,
            patient_id=None if patient is None else str(patient),
            objects=tuple(objects.pop(image_id, ())), positive=positive if isinstance(positive, bool) else None,
        ))
    for image_id, orphans in objects.items():
        _fail(problems, f"{len(orphans)} annotation(s) refer to an image id that is not in `images`", file,
              "annotations.image_id", image_id)
    return DetectionDataset(root=root, images=tuple(images), categories=tuple(categories), source=str(file))


def _ellipse_polygon(bbox_xyxy: tuple[float, float, float, float], vertices: int = ELLIPSE_VERTICES) -> list[float]:
    x1, y1, x2, y2 = bbox_xyxy
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    out: list[float] = []
    for k in range(vertices):
        angle = 2 * math.pi * k / vertices
        out += [cx + rx * math.cos(angle), cy + ry * math.sin(angle)]
    return out


def object_to_coco(obj: RFOObject, image_id: int, annotation_id: int) -> dict[str, Any]:
    """One COCO annotation dict for ``obj`` (``bbox`` xywh, ``area``, polygon ``segmentation``)."""
    x1, y1, x2, y2 = obj.bbox_xyxy
    entry: dict[str, Any] = {
        "id": annotation_id, "image_id": image_id, "category_id": obj.category_id,
        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": obj.area, "iscrowd": 0, "rfo_shape": obj.shape,
    }
    if obj.object_id is not None:
        entry["rfo_object_id"] = obj.object_id
    if obj.shape == "polygon":
        entry["segmentation"] = [list(obj.polygon_xy)]
    elif obj.shape == "ellipse":
        entry["segmentation"] = [_ellipse_polygon(obj.bbox_xyxy)]
    else:
        entry["segmentation"] = [[x1, y1, x2, y1, x2, y2, x1, y2]]
    return entry


def dataset_to_coco_dict(dataset: DetectionDataset, *, renumber_annotations: bool = True) -> dict[str, Any]:
    """The COCO dict of a dataset. Annotation ids are renumbered from 1 unless told otherwise
    (pycocotools treats an annotation id of 0 as "unmatched"); a Hopkins object id is kept as
    ``rfo_object_id``."""
    images, annotations = [], []
    next_id = 1
    for record in dataset.images:
        entry: dict[str, Any] = {
            "id": record.image_id, "file_name": record.file_name,
            "width": record.width or 0, "height": record.height or 0,
        }
        if record.patient_id is not None:
            entry["patient_id"] = record.patient_id
        if record.positive is not None:
            entry["rfo_positive"] = record.positive
        images.append(entry)
        for obj in record.objects:
            ann_id = next_id if renumber_annotations or obj.annotation_id is None else obj.annotation_id
            annotations.append(object_to_coco(obj, record.image_id, ann_id))
            next_id += 1
    categories = [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in dataset.categories]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_coco(dataset: DetectionDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` as COCO json (atomically).

    Image paths are written relative to the json's directory when the images lie below it; otherwise
    they stay relative to ``dataset.root`` and the file records that root as ``rfo_image_root``
    (which :func:`read_coco` uses when no root is given).
    """
    target = Path(path)
    base = target.parent.resolve()
    data_root: str | None = None
    if dataset.root != base:
        try:
            dataset = dataset.rebased(base)
        except UserInputError:
            data_root = str(dataset.root)
    content = dataset_to_coco_dict(dataset)
    if data_root is not None:
        content = {ROOT_KEY: data_root, **content}
    text = json.dumps(content, indent=1)
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


def polygon_object(points_xy: list[float], category_id: int, annotation_id: int | None = None) -> RFOObject:
    """A polygon :class:`RFOObject` with its bounding box."""
    return RFOObject(polygon_bbox(points_xy), category_id, "polygon", tuple(points_xy), annotation_id)

"""The object-CXR / Hopkins RFO Bench ground-truth CSV: ``image_path,annotation``.

One row per image; the annotation holds ``;``-separated objects (a trailing ``;``, as in the Hopkins
README, is ignored) and is empty for a negative image.
Two object conventions exist:

* **object-CXR** (JF Healthcare): ``<shape> coords`` with shape ``0`` box ``x1 y1 x2 y2``, ``1``
  ellipse inscribed in ``x1 y1 x2 y2``, ``2`` polygon ``x1 y1 ... xn yn``. There is no class; every
  object is a ``foreign_object``.
* **Hopkins RFO Bench**: ``<ID>_<RFO-type>_<shape> coords`` where RFO-type ``1`` is critical and ``0``
  non-critical, and shape ``0`` is a rectangle ``x1 y1 x2 y2`` and ``1`` a polygon. Objects become
  ``critical_rfo`` / ``non_critical_rfo``.

The convention is detected per object (a ``_`` in the first token means Hopkins) and can be forced.
A header row is recognised by its first cell (``image_path``, ``image_name``, ``file_name`` ...); an
optional ``patient_id`` column supplies patient ids for patient-level splits.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path

from rfo_bench.io.records import Category, DetectionDataset, ImageRecord, RFOObject, polygon_bbox
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

CONVENTIONS = ("auto", "object_cxr", "hopkins")
HEADER_NAMES = ("image_path", "image_name", "file_name", "filename", "image", "path")
PATIENT_COLUMNS = ("patient_id", "patient", "patientid")

OBJECT_CXR_CATEGORIES = (Category(1, "foreign_object", None),)
HOPKINS_CATEGORIES = (Category(1, "critical_rfo", True), Category(2, "non_critical_rfo", False))
_ELLIPSE_VERTICES = 32


def read_text_rows(file: Path) -> list[list[str]]:
    """Rows of a CSV file (``csv`` quoting rules), with a clear error for non-text files."""
    if not file.is_file():
        raise UserInputError("file does not exist", file=file)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UserInputError("not a UTF-8 text file", file=file) from None
    return list(csv.reader(io.StringIO(text)))


def _has_header(first: Sequence[str]) -> bool:
    return bool(first) and first[0].strip().lower() in HEADER_NAMES


def _floats(tokens: Sequence[str]) -> list[float] | None:
    try:
        values = [float(t) for t in tokens]
    except ValueError:
        return None
    return values if all(math.isfinite(v) for v in values) else None


def parse_object(
    text: str, convention: str, *, file: Path, line: int, object_index: int
) -> tuple[RFOObject, str]:
    """Parse one object of an annotation cell; returns the object and the convention it used.

    Raises:
        UserInputError: naming the file, the line and the object.
    """
    where = f"line {line} object {object_index + 1}"
    tokens = text.split()
    if not tokens:
        raise UserInputError("empty object between `;` separators", file=file, field=where, value=text)
    head = tokens[0]
    detected = "hopkins" if "_" in head else "object_cxr"
    used = detected if convention == "auto" else convention
    coords = _floats(tokens[1:])
    if coords is None:
        raise UserInputError("coordinates must be finite numbers", file=file, field=where, value=text)
    if used == "hopkins":
        parts = head.split("_")
        if len(parts) != 3 or parts[1] not in ("0", "1") or parts[2] not in ("0", "1"):
            raise UserInputError(
                "Hopkins object must start with <ID>_<RFO-type 0|1>_<shape 0|1>", file=file, field=where, value=head
            )
        category_id = 1 if parts[1] == "1" else 2
        shape = "box" if parts[2] == "0" else "polygon"
        ann_id = int(parts[0]) if parts[0].isdigit() else None
    else:
        if head not in ("0", "1", "2"):
            raise UserInputError(
                "object-CXR object must start with shape 0 (box), 1 (ellipse) or 2 (polygon)",
                file=file, field=where, value=head,
            )
        category_id, ann_id = 1, None
        shape = {"0": "box", "1": "ellipse", "2": "polygon"}[head]
    if shape in ("box", "ellipse"):
        if len(coords) != 4:
            raise UserInputError(f"a {shape} needs 4 numbers x1 y1 x2 y2", file=file, field=where, value=text)
        x1, y1, x2, y2 = coords
        return RFOObject((x1, y1, x2, y2), category_id, shape, (), ann_id, object_id=ann_id), used
    if len(coords) < 6 or len(coords) % 2:
        raise UserInputError("a polygon needs at least 3 x y pairs", file=file, field=where, value=text)
    return RFOObject(polygon_bbox(coords), category_id, "polygon", tuple(coords), ann_id, object_id=ann_id), used


def split_objects(cell: str) -> list[str]:
    """The ``;``-separated items of an annotation or prediction cell, without empty trailing items.

    The Hopkins README ends its example annotation with ``;``; an empty item between two others is
    kept (and refused by the parser).
    """
    items = cell.strip().split(";") if cell.strip() else []
    while items and not items[-1].strip():
        items.pop()
    return items


def read_rfo_csv(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    convention: str = "auto",
    problems: list[str] | None = None,
) -> DetectionDataset:
    """Read an object-CXR / Hopkins ground-truth CSV.

    Args:
        path: the CSV file.
        root: directory image paths are relative to; default the CSV's directory.
        convention: ``auto`` (per object), ``object_cxr`` or ``hopkins``.
        problems: when given, malformed lines are skipped and described here instead of raising; a
            file mixing the two conventions is reported here too.

    Raises:
        UserInputError: a malformed line (naming the file and line), or mixed conventions.
    """
    if convention not in CONVENTIONS:
        raise UserInputError("unknown CSV convention; expected " + ", ".join(CONVENTIONS), value=convention)
    file = Path(path)
    rows = read_text_rows(file)
    image_col, ann_col, patient_col, start, columns = 0, 1, None, 0, 2
    if rows and _has_header(rows[0]):
        header = [c.strip().lower() for c in rows[0]]
        start, columns = 1, len(header)
        if "annotation" in header:
            ann_col = header.index("annotation")
        patient_col = next((header.index(c) for c in PATIENT_COLUMNS if c in header), None)
    images: list[ImageRecord] = []
    used: dict[str, int] = {}
    for index in range(start, len(rows)):
        row, line = rows[index], index + 1
        if not row or all(not c.strip() for c in row):
            continue
        try:
            if len(row) != columns:
                raise UserInputError(
                    f"expected {columns} comma-separated columns (image_path,annotation), got {len(row)}",
                    file=file, field=f"line {line}", value=",".join(row),
                )
            name = row[image_col].strip()
            if not name:
                raise UserInputError("empty image path", file=file, field=f"line {line}")
            annotation = row[ann_col].strip() if len(row) > ann_col else ""
            objects = []
            for k, text in enumerate(split_objects(annotation)):
                obj, conv = parse_object(text, convention, file=file, line=line, object_index=k)
                used[conv] = used.get(conv, line)
                objects.append(obj)
        except UserInputError as err:
            if problems is None:
                raise
            problems.append(str(err))
            continue
        patient = row[patient_col].strip() if patient_col is not None and len(row) > patient_col else ""
        images.append(ImageRecord(
            file_name=name.replace("\\", "/"), image_id=len(images) + 1, patient_id=patient or None,
            objects=tuple(objects),
        ))
    if len(used) > 1:
        err = UserInputError(
            "file mixes the Hopkins (<ID>_<type>_<shape>) and object-CXR (<shape>) object conventions "
            f"(first Hopkins object on line {used['hopkins']}, first object-CXR on line {used['object_cxr']}); "
            "pass the convention explicitly",
            file=file, field="annotation",
        )
        if problems is None:
            raise err
        problems.append(str(err))
    chosen = convention if convention != "auto" else ("hopkins" if "hopkins" in used else "object_cxr")
    categories = HOPKINS_CATEGORIES if chosen == "hopkins" else OBJECT_CXR_CATEGORIES
    return DetectionDataset(
        root=Path(root) if root is not None else file.parent, images=tuple(images),
        categories=categories, source=str(file),
    )


def _format_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.6g}"


def _ellipse_points(bbox: tuple[float, float, float, float]) -> list[float]:
    x1, y1, x2, y2 = bbox
    cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    out: list[float] = []
    for k in range(_ELLIPSE_VERTICES):
        angle = 2 * math.pi * k / _ELLIPSE_VERTICES
        out += [cx + rx * math.cos(angle), cy + ry * math.sin(angle)]
    return out


def format_object(dataset: DetectionDataset, obj: RFOObject, convention: str, index: int) -> str:
    """One object in the chosen CSV convention (an ellipse becomes a polygon in Hopkins)."""
    if obj.shape == "polygon":
        coords = list(obj.polygon_xy)
    elif obj.shape == "ellipse" and convention == "hopkins":
        coords = _ellipse_points(obj.bbox_xyxy)
    else:
        coords = list(obj.bbox_xyxy)
    numbers = " ".join(_format_number(v) for v in coords)
    if convention == "hopkins":
        critical = dataset.is_critical(obj)
        shape = "0" if obj.shape == "box" else "1"
        ident = next((i for i in (obj.object_id, obj.annotation_id) if i is not None), index)
        return f"{ident}_{0 if critical is False else 1}_{shape} {numbers}"
    shape = {"box": "0", "ellipse": "1", "polygon": "2"}[obj.shape]
    return f"{shape} {numbers}"


def write_rfo_csv(
    dataset: DetectionDataset, path: str | os.PathLike[str], *, convention: str = "hopkins",
    include_patient: bool = False,
) -> Path:
    """Write ``dataset`` as an ``image_path,annotation`` CSV in the given convention.

    Hopkins has no ellipse (written as a 32-vertex polygon) and object-CXR has no class (dropped).
    Image paths are written relative to the CSV's directory when the images lie below it.
    """
    if convention not in ("hopkins", "object_cxr"):
        raise UserInputError("CSV convention must be hopkins or object_cxr", value=convention)
    base = Path(path).parent.resolve()
    if dataset.root != base:
        try:
            dataset = dataset.rebased(base)
        except UserInputError:
            logger.warning("images are not below %s: paths stay relative to %s (pass that root when reading)",
                           base, dataset.root)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["image_path", "annotation"] + (["patient_id"] if include_patient else []))
    lost = 0
    for record in dataset.images:
        if record.positive and not record.objects:
            lost += 1
        cell = ";".join(format_object(dataset, o, convention, k) for k, o in enumerate(record.objects))
        writer.writerow([record.file_name, cell] + ([record.patient_id or ""] if include_patient else []))
    if lost:
        logger.warning("%d image-level positives without objects are written as empty annotations", lost)
    target = Path(path)
    atomic_write_bytes(target, buffer.getvalue().encode("utf-8"))
    return target

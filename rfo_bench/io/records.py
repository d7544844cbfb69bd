"""The one in-memory representation of an RFO detection dataset.

Every on-disk format (COCO json, the Hopkins / object-CXR CSV, the positive/negative folder layout,
the Ultralytics YOLO layout) is read into a :class:`DetectionDataset` and written from one; COCO is
the hub format. Coordinates are in pixels of the stored image, origin at the top-left corner of the
top-left pixel, ``x`` to the right (columns) and ``y`` down (rows).

An object keeps the shape it was annotated with (``box``, ``ellipse`` inscribed in its box, or
``polygon``) because the FROC protocol of object-CXR / RFO Bench tests whether a predicted point lies
inside that shape, not inside its bounding box.

Image paths are stored relative to the dataset root as POSIX strings (or absolute, as a file gave them);
:meth:`DetectionDataset.resolve` refuses any path that would leave the root (``../``, an absolute path
elsewhere) and so never opens a file outside it. Reading annotations never resolves paths: the evaluator
accepts any path and matches predictions by name.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from rfo_bench.categories import CATEGORY_BY_NAME, CRITICAL, NON_CRITICAL
from toolkit_core.errors import UserInputError

_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")
SHAPE_KINDS = ("box", "ellipse", "polygon")
"""Annotation shapes: an axis-aligned box, the ellipse inscribed in that box, or a closed polygon."""

ID_RANGE = (-(2**63), 2**63 - 1)
"""Inclusive range of image and category ids: a signed 64-bit integer."""


def id_in_range(value: int) -> bool:
    """Whether an integer id fits :data:`ID_RANGE`."""
    return ID_RANGE[0] <= value <= ID_RANGE[1]


STRATA = ("critical", "non_critical", "none")
"""Image strata used for stratified splits and results: has a critical RFO / only non-critical / none."""


@dataclass(frozen=True)
class Category:
    """One object category of a dataset.

    Attributes:
        id: COCO category id (positive).
        name: category name.
        critical: True for critical RFOs, False for non-critical ones, None when unknown.
    """

    id: int
    name: str
    critical: bool | None = None

    @property
    def supercategory(self) -> str:
        if self.critical is None:
            return "rfo"
        return CRITICAL if self.critical else NON_CRITICAL


def category_from_name(category_id: int, name: str, supercategory: str | None = None) -> Category:
    """A :class:`Category` whose ``critical`` flag comes from the supercategory or the shared vocabulary."""
    if supercategory in (CRITICAL, NON_CRITICAL):
        return Category(category_id, name, supercategory == CRITICAL)
    known = CATEGORY_BY_NAME.get(name)
    if known is not None:
        return Category(category_id, name, known.supercategory == CRITICAL)
    return Category(category_id, name, None)


@dataclass(frozen=True)
class RFOObject:
    """One annotated object.

    Attributes:
        bbox_xyxy: ``(x1, y1, x2, y2)`` in pixels, ``x1 <= x2`` and ``y1 <= y2`` for a valid box.
        category_id: id of the object's :class:`Category` in the dataset.
        shape: ``box``, ``ellipse`` (inscribed in ``bbox_xyxy``) or ``polygon``.
        polygon_xy: polygon vertices ``(x1, y1, x2, y2, ...)`` for ``shape == "polygon"``, else empty.
        annotation_id: id from the source file, when it had one.
        source_area: the ``area`` the source file stated (COCO), used by the COCO size ranges
            exactly as pycocotools uses it; None = computed from the shape.
        object_id: the Hopkins ``<ID>`` of ``<ID>_<type>_<shape>``, kept through COCO (as
            ``annotations[].rfo_object_id``, since COCO ids must be unique and are renumbered) and
            written back to a Hopkins CSV; None when the source had none.
    """

    bbox_xyxy: tuple[float, float, float, float]
    category_id: int
    shape: str = "box"
    polygon_xy: tuple[float, ...] = ()
    annotation_id: int | None = None
    source_area: float | None = None
    object_id: int | None = None

    @property
    def width(self) -> float:
        return self.bbox_xyxy[2] - self.bbox_xyxy[0]

    @property
    def height(self) -> float:
        return self.bbox_xyxy[3] - self.bbox_xyxy[1]

    @property
    def area(self) -> float:
        """Area in px²: the source file's, else of the polygon (shoelace), inscribed ellipse or box."""
        if self.source_area is not None:
            return self.source_area
        if self.shape == "polygon" and len(self.polygon_xy) >= 6:
            xs, ys = self.polygon_xy[0::2], self.polygon_xy[1::2]
            n = len(xs)
            twice = sum(xs[i] * ys[(i + 1) % n] - xs[(i + 1) % n] * ys[i] for i in range(n))
            return abs(twice) / 2.0
        if self.shape == "ellipse":
            return math.pi * max(self.width, 0.0) * max(self.height, 0.0) / 4.0
        return max(self.width, 0.0) * max(self.height, 0.0)


def polygon_bbox(points_xy: Sequence[float]) -> tuple[float, float, float, float]:
    """Bounding box ``(x1, y1, x2, y2)`` of a flat vertex list ``(x1, y1, x2, y2, ...)``."""
    xs, ys = points_xy[0::2], points_xy[1::2]
    return (float(min(xs)), float(min(ys)), float(max(xs)), float(max(ys)))


@dataclass(frozen=True)
class ImageRecord:
    """One image and its annotations.

    Attributes:
        file_name: POSIX path relative to the dataset root, or absolute (see :func:`resolve_inside`).
        image_id: positive integer id (COCO ``images[].id``).
        width: image width in pixels (columns), None when not known without reading the image.
        height: image height in pixels (rows), None when unknown.
        patient_id: patient identifier (or pseudonym) for patient-level splits and bootstrap.
        objects: annotated objects; empty for a negative image.
        positive: image-level label when objects are not annotated (folder layout); None = derive
            from ``objects``.
    """

    file_name: str
    image_id: int
    width: int | None = None
    height: int | None = None
    patient_id: str | None = None
    objects: tuple[RFOObject, ...] = ()
    positive: bool | None = None

    @property
    def is_positive(self) -> bool:
        return bool(self.objects) if self.positive is None else self.positive


@dataclass(frozen=True)
class DetectionDataset:
    """A detection dataset: a root directory, its images with annotations, and the category table.

    Attributes:
        root: directory image paths are relative to (absolute).
        images: the image records, in file order.
        categories: the category table (ids unique).
        source: the file or directory the dataset was read from (for messages).
    """

    root: Path
    images: tuple[ImageRecord, ...]
    categories: tuple[Category, ...]
    source: str = ""
    _by_id: dict[int, Category] = field(default=None, init=False, repr=False, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())
        object.__setattr__(self, "_by_id", {c.id: c for c in self.categories})

    def __len__(self) -> int:
        return len(self.images)

    def category(self, category_id: int) -> Category:
        """The category with this id (raises :class:`UserInputError` when unknown)."""
        try:
            return self._by_id[category_id]
        except KeyError:
            raise UserInputError(
                "unknown category id; known ids are " + ", ".join(str(i) for i in self._by_id),
                file=self.source or None, field="category_id", value=category_id,
            ) from None

    def is_critical(self, obj: RFOObject) -> bool | None:
        category = self._by_id.get(obj.category_id)
        return None if category is None else category.critical

    def stratum(self, record: ImageRecord) -> str:
        """``critical`` (any critical object), ``non_critical`` (objects, none critical) or ``none``.

        Objects of a category with unknown criticality count as critical (the conservative choice);
        an image-level positive without objects is ``critical``.
        """
        if not record.objects:
            return "critical" if record.positive else "none"
        if any(self.is_critical(o) is not False for o in record.objects):
            return "critical"
        return "non_critical"

    def resolve(self, record: ImageRecord | str) -> Path:
        """Absolute path of an image, refusing paths that leave the dataset root."""
        name = record.file_name if isinstance(record, ImageRecord) else record
        return resolve_inside(self.root, name, source=self.source)

    def with_images(self, images: Iterable[ImageRecord]) -> DetectionDataset:
        """A copy holding ``images`` (same root, categories and source)."""
        return replace(self, images=tuple(images))

    def rebased(self, new_root: str | os.PathLike[str]) -> DetectionDataset:
        """The same dataset with ``file_name`` entries relative to ``new_root``.

        Raises:
            UserInputError: an image is not below ``new_root``.
        """
        base = Path(new_root).resolve()
        records = [replace(r, file_name=relative_name(base, self.resolve(r), source=self.source)) for r in self.images]
        return DetectionDataset(base, tuple(records), self.categories, self.source)

    def image_by_id(self) -> dict[int, ImageRecord]:
        return {r.image_id: r for r in self.images}


def resolve_inside(root: Path, name: str, *, source: str | None = None) -> Path:
    """``root / name`` resolved, or :class:`UserInputError` when it escapes ``root``.

    A relative name is taken relative to ``root``; ``..`` components that climb out are refused. An
    absolute name (the Hopkins CSV writes ``/path/#####.jpg``) is used as is when it lies inside
    ``root``: ``--root /`` (or any folder above the images) allows such paths, the default root (the
    annotation file's folder) refuses those that point elsewhere. The check is on the path as written
    (normalised, symbolic links not followed): a link the dataset owner placed inside the root, as the
    YOLO layout's image links, is allowed.
    """
    base = os.path.abspath(root)
    if not name or (_DRIVE.match(name) and not os.path.isabs(name)):
        raise UserInputError(
            "image path must be relative to the dataset root or absolute on this system", file=source or None,
            field="file_name", value=name,
        )
    if os.path.isabs(name):
        target = os.path.normpath(name)
        hint = "; refused (pass --root / or a folder above the images to read absolute paths)"
    else:
        target = os.path.normpath(os.path.join(base, name))
        hint = "; refused"
    if not (target == base or target.startswith(base.rstrip(os.sep) + os.sep)):
        raise UserInputError(
            f"image path lies outside the dataset root {root}{hint}", file=source or None, field="file_name",
            value=name,
        )
    return Path(target)


def relative_name(root: Path, path: Path, *, source: str | None = None) -> str:
    """POSIX path of ``path`` relative to ``root`` (refusing paths outside it)."""
    try:
        return Path(os.path.normpath(os.path.abspath(path))).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        raise UserInputError(
            f"image is outside the dataset root {root}", file=source or None, field="file_name", value=str(path)
        ) from None

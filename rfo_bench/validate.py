"""Dataset validation: every problem of a ground-truth dataset in one pass.

:func:`check_dataset` returns a list of :class:`Problem` (it raises only when the file cannot be read
at all): malformed entries, duplicate image / annotation ids and file names, ids beyond 64 bits,
unknown categories, boxes that are degenerate or leave the image, image paths outside the dataset root
(refused, never opened; an absolute path needs a root above it, e.g. ``--root /``), mixed annotation
conventions, and missing or unreadable images. ``rfo-bench validate DATA`` prints them.
:func:`require_valid_annotations` is the subset the evaluator insists on (image paths excluded: the
evaluation opens no image).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rfo_bench.io.records import ID_RANGE, DetectionDataset, ImageRecord, RFOObject, id_in_range
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

KINDS = (
    "malformed_entry", "mixed_conventions", "duplicate_image_id", "duplicate_file_name", "duplicate_annotation_id",
    "duplicate_category_id",
    "unknown_category", "degenerate_box", "box_outside_image", "path_escapes_root", "missing_image",
    "unreadable_image", "size_mismatch", "id_out_of_range",
)
_BLOCKING = ("duplicate_image_id", "duplicate_category_id", "unknown_category", "degenerate_box", "id_out_of_range")
EDGE_TOLERANCE_PX = 1e-6


@dataclass(frozen=True)
class Problem:
    """One problem: its kind (one of :data:`KINDS`), where it is, and a sentence for people."""

    kind: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.where}: {self.message}"


def _degenerate(obj: RFOObject) -> str | None:
    values = list(obj.bbox_xyxy) + list(obj.polygon_xy)
    if not all(math.isfinite(v) for v in values):
        return "coordinates are not finite"
    if obj.width <= 0 or obj.height <= 0:
        return f"box has zero or negative size ({obj.width:g} x {obj.height:g} px)"
    if obj.shape == "polygon" and obj.area <= 0:
        return "polygon has zero area"
    return None


def check_annotations(dataset: DetectionDataset, *, paths: bool = True) -> list[Problem]:
    """Problems visible without opening any image.

    Args:
        dataset: the dataset.
        paths: also check that every image path stays inside the dataset root (off for the evaluator,
            which never opens an image).
    """
    problems: list[Problem] = []
    known = {c.id for c in dataset.categories}
    problems += _ids_out_of_range(dataset)
    for value, n in Counter(c.id for c in dataset.categories).items():
        if n > 1:
            problems.append(Problem("duplicate_category_id", f"category id {value}", f"category id used {n} times"))
    for value, n in Counter(r.image_id for r in dataset.images).items():
        if n > 1:
            problems.append(Problem("duplicate_image_id", f"image id {value}", f"image id used by {n} images"))
    for value, n in Counter(r.file_name for r in dataset.images).items():
        if n > 1:
            problems.append(Problem("duplicate_file_name", value, f"file listed {n} times"))
    ann_ids = Counter(o.annotation_id for r in dataset.images for o in r.objects if o.annotation_id is not None)
    for value, n in ann_ids.items():
        if n > 1 and dataset.source.endswith(".json"):
            problems.append(Problem("duplicate_annotation_id", f"annotation id {value}", f"used {n} times"))
    for record in dataset.images:
        if paths:
            try:
                dataset.resolve(record)
            except UserInputError as err:
                problems.append(Problem("path_escapes_root", record.file_name, err.message))
        for k, obj in enumerate(record.objects):
            where = f"{record.file_name} object {k + 1}"
            if obj.category_id not in known:
                problems.append(Problem("unknown_category", where, f"category id {obj.category_id} is not in the "
                                        f"category table ({', '.join(str(i) for i in sorted(known))})"))
            reason = _degenerate(obj)
            if reason:
                problems.append(Problem("degenerate_box", where, reason))
            elif record.width and record.height:
                problems += _outside(record, obj, where)
    return problems


def _ids_out_of_range(dataset: DetectionDataset) -> list[Problem]:
    """Image and category ids that are not integers of :data:`~rfo_bench.io.records.ID_RANGE` (the
    readers refuse them; a dataset built in code may hold them)."""
    def bad(value: object) -> bool:
        return isinstance(value, bool) or not isinstance(value, int) or not id_in_range(value)

    expected = f"ids must be integers from {ID_RANGE[0]} to {ID_RANGE[1]}"
    problems = [Problem("id_out_of_range", "categories.id", f"category id {c.id!r}: {expected}")
                for c in dataset.categories if bad(c.id)]
    for record in dataset.images:
        if bad(record.image_id):
            problems.append(Problem("id_out_of_range", f"{record.file_name} image_id",
                                    f"image id {record.image_id!r}: {expected}"))
        problems += [Problem("id_out_of_range", f"{record.file_name} object {k + 1}",
                             f"category id {obj.category_id!r}: {expected}")
                     for k, obj in enumerate(record.objects) if bad(obj.category_id)]
    return problems


def _outside(record: ImageRecord, obj: RFOObject, where: str) -> list[Problem]:
    x1, y1, x2, y2 = obj.bbox_xyxy
    tol = EDGE_TOLERANCE_PX
    if x1 < -tol or y1 < -tol or x2 > record.width + tol or y2 > record.height + tol:  # type: ignore[operator]
        return [Problem("box_outside_image", where,
                        f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) leaves the {record.width}x{record.height} image")]
    return []


VALIDATE_PROGRESS_MIN = 50
"""Images from which :func:`check_images` shows its bar (fewer are read in well under a second)."""


def check_images(dataset: DetectionDataset, *, decode: bool = True, progress: bool = True) -> list[Problem]:
    """Missing / unreadable images and stated sizes that differ from the files (reads every image).

    ``progress``: a tqdm bar on stderr over the images, from :data:`VALIDATE_PROGRESS_MIN` images on.
    """
    from tqdm.auto import tqdm

    from rfo_bench.io.headers import image_size
    from rfo_bench.io.images import read_image

    problems: list[Problem] = []
    for record in tqdm(dataset.images, desc="checking images", unit="img", leave=False,
                       disable=not progress or len(dataset) < VALIDATE_PROGRESS_MIN):
        try:
            path = dataset.resolve(record)
        except UserInputError:
            continue  # reported by check_annotations; never opened
        if not path.is_file():
            problems.append(Problem("missing_image", record.file_name, f"no file at {path}"))
            continue
        try:
            width, height = image_size(path)
            if decode:
                read_image(path)
        except UserInputError as err:
            problems.append(Problem("unreadable_image", record.file_name, err.message))
            continue
        if record.width and record.height and (record.width, record.height) != (width, height):
            problems.append(Problem("size_mismatch", record.file_name,
                                    f"annotation says {record.width}x{record.height}, file is {width}x{height}"))
        elif not (record.width and record.height):
            for k, obj in enumerate(record.objects):
                if _degenerate(obj) is None:
                    sized = ImageRecord(record.file_name, record.image_id, width, height)
                    problems += _outside(sized, obj, f"{record.file_name} object {k + 1}")
    return problems


def check_dataset(
    path: str | os.PathLike[str], *, fmt: str = "auto", root: str | os.PathLike[str] | None = None,
    csv_convention: str = "auto", images: bool = True, decode: bool = True,
    yolo_splits: tuple[str, ...] | None = None, progress: bool = True,
) -> tuple[DetectionDataset | None, list[Problem]]:
    """Read a dataset leniently and list all its problems (``progress``: see :func:`check_images`).

    Returns:
        The dataset (None when the file could not be parsed at all) and the problems found.

    Raises:
        UserInputError: the file is missing or not parseable at all (e.g. not json, no ``images``).
    """
    messages: list[str] = []
    from rfo_bench.io.formats import read_dataset

    dataset = read_dataset(path, fmt=fmt, root=root, csv_convention=csv_convention, problems=messages,
                           yolo_splits=yolo_splits)
    problems = [
        Problem("mixed_conventions" if "mixes" in m else "malformed_entry", *_split_message(m, str(path)))
        for m in messages
    ]
    problems += check_annotations(dataset)
    if images:
        problems += check_images(dataset, decode=decode, progress=progress)
    return dataset, problems


def _split_message(message: str, file: str) -> tuple[str, str]:
    """``(where, text)`` of a reader message ``"<file>: <where>: <text>"`` (the file is printed once)."""
    rest = message
    for prefix in (f"{file}: ", f"{Path(file).resolve()}: "):
        if rest.startswith(prefix):
            rest = rest[len(prefix):]
            break
    match = re.match(r"^((?:line \d+(?: object \d+)?)|(?:[A-Za-z_.]+(?:\[\d+\])?)): (.*)$", rest)
    return (match.group(1), match.group(2)) if match else (Path(file).name, rest)


def require_valid_annotations(dataset: DetectionDataset) -> None:
    """Raise :class:`UserInputError` on the first problem that would make an evaluation wrong.

    Blocking: duplicate image or category ids, ids out of range, unknown categories, degenerate boxes.
    Image paths are not checked: the evaluation never opens an image (the error grid skips one it
    may not read).
    """
    for problem in check_annotations(dataset, paths=False):
        if problem.kind in _BLOCKING:
            raise UserInputError(problem.message, file=dataset.source or None, field=problem.where)
        logger.warning("%s: %s", dataset.source, problem)


def problems_to_dict(problems: list[Problem]) -> dict[str, object]:
    """Summary by kind plus the full list (for ``--json`` output)."""
    return {
        "count": len(problems), "by_kind": dict(Counter(p.kind for p in problems)),
        "problems": [{"kind": p.kind, "where": p.where, "message": p.message} for p in problems],
    }


def format_problems(path: str | Path, problems: list[Problem]) -> str:
    """Text report: one line per problem, then a count per kind."""
    if not problems:
        return f"{path}: no problem found"
    lines = [f"{path}: {p}" for p in problems]
    counts = Counter(p.kind for p in problems)
    lines.append(f"{len(problems)} problem(s): " + ", ".join(f"{k} {n}" for k, n in counts.items()))
    return "\n".join(lines)

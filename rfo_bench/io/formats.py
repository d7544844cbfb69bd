"""One door in for ground truth in any supported layout.

:func:`read_dataset` picks the reader from the path (overridable with ``fmt``):

========================  =====================================================
``*.json``                COCO (:mod:`rfo_bench.io.coco`)
``*.csv``                 object-CXR / Hopkins CSV (:mod:`rfo_bench.io.rfo_csv`)
``*.yaml`` / dir + yaml   Ultralytics YOLO layout (:mod:`rfo_bench.io.yolo_format`)
dir with positive/...     image-level folders (:mod:`rfo_bench.io.folders`)
========================  =====================================================
"""

from __future__ import annotations

import os
from pathlib import Path

from rfo_bench.io.headers import dicom_patient_key, fill_image_sizes, fill_patient_ids, image_size
from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError

FORMATS = ("auto", "coco", "csv", "yolo", "folders")

__all__ = ["FORMATS", "detect_format", "dicom_patient_key", "fill_image_sizes", "fill_patient_ids", "image_size",
           "read_dataset"]


def detect_format(path: Path) -> str:
    """The format name of ``path`` (see the module table)."""
    if path.is_dir():
        if (path / "data.yaml").is_file():
            return "yolo"
        from rfo_bench.io.folders import label_folders

        if label_folders(path):
            return "folders"
        raise UserInputError(
            "directory is neither a YOLO layout (data.yaml) nor positive/negative image folders", file=path
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "coco"
    if suffix in (".csv", ".txt"):
        return "csv"
    if suffix in (".yaml", ".yml"):
        return "yolo"
    if not path.exists():
        raise UserInputError("ground-truth file does not exist", file=path)
    raise UserInputError("cannot tell the format from the name; pass --format coco|csv|yolo|folders", file=path)


def read_dataset(
    path: str | os.PathLike[str],
    *,
    fmt: str = "auto",
    root: str | os.PathLike[str] | None = None,
    csv_convention: str = "auto",
    problems: list[str] | None = None,
    yolo_splits: tuple[str, ...] | None = None,
) -> DetectionDataset:
    """Read ground truth in any supported format.

    Args:
        path: a COCO json, a CSV, a YOLO ``data.yaml`` (or its directory), or a positive/negative folder.
        fmt: ``auto`` or one of ``coco``, ``csv``, ``yolo``, ``folders``.
        root: image root for COCO / CSV (default: the file's directory).
        csv_convention: ``auto``, ``object_cxr`` or ``hopkins`` (CSV only).
        problems: collect malformed entries here instead of raising (COCO / CSV only).
        yolo_splits: YOLO splits to read (default all of train, val, test).
    """
    file = Path(path)
    if fmt not in FORMATS:
        raise UserInputError("unknown dataset format; expected " + ", ".join(FORMATS), field="format", value=fmt)
    if fmt == "auto":
        fmt = detect_format(file)
    if fmt == "coco":
        from rfo_bench.io.coco import read_coco

        return read_coco(file, root, problems=problems)
    if fmt == "csv":
        from rfo_bench.io.rfo_csv import read_rfo_csv

        return read_rfo_csv(file, root, convention=csv_convention, problems=problems)
    if fmt == "yolo":
        from rfo_bench.io.yolo_format import read_yolo

        return read_yolo(file) if yolo_splits is None else read_yolo(file, yolo_splits)
    from rfo_bench.io.folders import read_image_folders

    return read_image_folders(file)

"""One door in for ground truth in any supported layout, and image-size look-ups.

:func:`read_dataset` picks the reader from the path (overridable with ``fmt``):

========================  =====================================================
``*.json``                COCO (:mod:`rfo_bench.io.coco`)
``*.csv``                 object-CXR / Hopkins CSV (:mod:`rfo_bench.io.rfo_csv`)
``*.yaml`` / dir + yaml   Ultralytics YOLO layout (:mod:`rfo_bench.io.yolo_format`)
dir with positive/...     image-level folders (:mod:`rfo_bench.io.folders`)
========================  =====================================================
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

from rfo_bench.io.images import DICOM_SUFFIXES
from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

FORMATS = ("auto", "coco", "csv", "yolo", "folders")


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


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` in pixels read from the file header only (PNG/JPEG/TIFF via Pillow, DICOM tags).

    Raises:
        UserInputError: missing or unreadable file.
    """
    if not path.is_file():
        raise UserInputError("image file does not exist", file=path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom
        from pydicom.errors import InvalidDicomError

        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        except (InvalidDicomError, OSError, EOFError, AttributeError, ValueError) as err:
            raise UserInputError(f"not a readable DICOM file: {err}", file=path) from None
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # only the header is read here
            with Image.open(path) as img:
                return int(img.width), int(img.height)
    except Image.DecompressionBombError as err:
        raise UserInputError(f"image too large to decode (Pillow's decompression-bomb limit): {err}", file=path,
                             field="size") from None
    except (UnidentifiedImageError, ImportError):  # ImportError: see rfo_bench.io.images._read_raster
        try:  # DICOM without a .dcm suffix
            import pydicom

            ds = pydicom.dcmread(path, stop_before_pixels=True)
            return int(ds.Columns), int(ds.Rows)
        except Exception:
            raise UserInputError("not a readable image (unknown format)", file=path) from None
    except OSError as err:
        raise UserInputError(f"image is truncated or corrupt: {err}", file=path) from None


def fill_image_sizes(dataset: DetectionDataset, *, missing_ok: bool = False) -> DetectionDataset:
    """A copy of ``dataset`` in which every record has its width and height (read from file headers).

    Args:
        dataset: the dataset.
        missing_ok: leave the size unknown (with one warning) for missing or unreadable images
            instead of raising.
    """
    records = []
    failed = 0
    for record in dataset.images:
        if record.width and record.height:
            records.append(record)
            continue
        try:
            width, height = image_size(dataset.resolve(record))
        except UserInputError:
            if not missing_ok:
                raise
            failed += 1
            records.append(record)
            continue
        records.append(replace(record, width=width, height=height))
    if failed:
        logger.warning("%d image(s) could not be read; their size stays unknown (0 in COCO)", failed)
    return dataset.with_images(records)


def dicom_patient_key(path: Path) -> str | None:
    """The pseudonymous patient key of a DICOM file (as :attr:`LoadedImage.patient_key`), header only.

    The key is the keyed HMAC of ``PatientID`` (:func:`toolkit_core.pseudonym.patient_pseudonym`).
    Returns None for non-DICOM or unreadable files and files without ``PatientID``.
    """
    from rfo_bench.io.images import _is_dicom
    from toolkit_core.pseudonym import patient_pseudonym

    if not path.is_file() or not _is_dicom(path):
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    except Exception:  # unreadable files are reported by the validator, not here
        return None
    patient_id = str(getattr(ds, "PatientID", "") or "").strip()
    return patient_pseudonym(patient_id) if patient_id else None


def fill_patient_ids(dataset: DetectionDataset) -> DetectionDataset:
    """A copy where records without a patient id take the pseudonymous key of their DICOM ``PatientID``.

    Only DICOM headers are read; records that already have a patient id, and non-DICOM images, are
    left as they are.
    """
    records = []
    changed = 0
    for record in dataset.images:
        if record.patient_id is None:
            try:
                path = dataset.resolve(record)
            except UserInputError:  # a path outside the root is reported by the validator
                path = None
            key = dicom_patient_key(path) if path is not None else None  # a bad pseudonym key still raises
            if key is not None:
                record = replace(record, patient_id=key)
                changed += 1
        records.append(record)
    return dataset.with_images(records) if changed else dataset

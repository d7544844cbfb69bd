"""What file headers say without decoding pixels: an image's size and a DICOM file's patient key.

Used by every reader that must fill in what its annotation format leaves out (COCO, CSV and YOLO
readers, the validator, the converters); below :mod:`rfo_bench.io.formats` so that a reader and the
format dispatcher never import each other.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

from rfo_bench.io.images import DICOM_SUFFIXES
from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)


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

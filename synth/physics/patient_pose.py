"""Per-image patient pose and habitus in CT mode.

Each image places the CT patient with its own pose: a rotation about the beam axis (positioning on the
detector), a lateral and cranio-caudal shift (which slab of the chest is in the field), and habitus
scaling (a wider / taller patient, a thicker one front to back). As a map from the CT's object frame
to the image's object frame (both in mm, isocentre at the origin, ``z`` along the beam):

``p_image = R_z(θ) · diag(s_xy, s_xy, s_z) · p_ct + (t_x, t_y, 0)``

Objects are placed in CT coordinates (where the anatomy is known) and carried into the image frame by
this map; they keep their own size. The patient's projection is not traced again: its material line
integrals are warped on the detector. This is exact for the rotation about the central ray and for the
lateral scaling (a cone-beam projection scales with ``x``); the shift moves a point at depth ``z`` by
``t · M(z)`` but the warp moves it by ``t · M(0)`` (at most ``|t| · 0.1`` mm for a ±150 mm deep chest at
SID 1800 mm); the front-to-back scaling multiplies the line integrals by ``s_z`` and neglects its few
per cent change of magnification. Oblique rotations would need a new projection of the CT and are not drawn.

A CT ends above and below its slab (and at the sides of its field of view); a ray that leaves it inside
the body misses the anatomy beyond and shows as a streak along the cranio-caudal direction. The CT is
therefore projected onto a detector larger than the output (:class:`PoseLimits` gives its reach), only
as far as rays stay inside the volume at every depth of the body: a ray through detector offset ``v``
crosses depth ``z`` at ``v · (SOD + z) / SID``, farthest out at the body's front surface. Each drawn pose
is then fitted so that all four corners of the output (hence, the map being affine, every pixel) sample
inside that reach: the lateral scale is raised to what a centred patient at the drawn rotation needs,
then both shifts are shortened together until the corners fit (:func:`fit_pose`). The drawn rotation is
kept; the manifest records the fitted pose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit_core.errors import UserInputError


@dataclass(frozen=True)
class CTPoseConfig:
    """Ranges of the per-image patient pose (CT mode); ``enabled=False``: the CT as it lies.

    Attributes:
        enabled: draw a pose per image.
        rotation_deg: rotation about the beam axis, uniform in ``±rotation_deg``.
        shift_lateral, shift_craniocaudal: uniform shifts at the isocentre as fractions of the field side
            (±12 and ±22 mm for the embedded CT's 293 mm field; the cranio-caudal one narrowed to the slab).
        scale_lateral_range: habitus scaling of width and height.
        scale_ap_range: scaling of the front-to-back thickness.
    """

    enabled: bool = True
    rotation_deg: float = 5.0
    shift_lateral: float = 0.04
    shift_craniocaudal: float = 0.075
    scale_lateral_range: tuple[float, float] = (0.92, 1.08)
    scale_ap_range: tuple[float, float] = (0.9, 1.12)

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("scale_lateral_range", self.scale_lateral_range), ("scale_ap_range", self.scale_ap_range)):
            if not 0.5 <= lo <= hi <= 2.0:
                raise UserInputError(f"{name} must be (low, high) with 0.5 <= low <= high <= 2", field=name, value=(lo, hi))
        if min(self.rotation_deg, self.shift_lateral, self.shift_craniocaudal) < 0 or max(
                self.shift_lateral, self.shift_craniocaudal) > 0.5:
            raise UserInputError("need rotation_deg >= 0 and shifts in 0-0.5 of the field", field="ct_pose",
                                 value=(self.rotation_deg, self.shift_lateral, self.shift_craniocaudal))


@dataclass(frozen=True)
class PatientPose:
    """The map from the CT's object frame to the image's object frame (see the module docstring)."""

    rotation_rad: float = 0.0
    shift_mm: tuple[float, float] = (0.0, 0.0)
    scale_lateral: float = 1.0
    scale_ap: float = 1.0

    @property
    def is_identity(self) -> bool:
        return (self.rotation_rad == 0.0 and self.shift_mm == (0.0, 0.0) and self.scale_lateral == 1.0
                and self.scale_ap == 1.0)

    def _rz(self) -> np.ndarray:
        c, s = np.cos(self.rotation_rad), np.sin(self.rotation_rad)
        return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])

    @property
    def rotation(self) -> np.ndarray:
        """``(3, 3)`` rotation part (objects placed in CT coordinates turn with the patient)."""
        return self._rz()

    def to_image(self, points_ct_mm: np.ndarray) -> np.ndarray:
        """``(N, 3)`` CT-frame points → image frame."""
        p = np.asarray(points_ct_mm, dtype=np.float64) * np.array([self.scale_lateral, self.scale_lateral, self.scale_ap])
        return p @ self._rz().T + np.array([self.shift_mm[0], self.shift_mm[1], 0.0])

    def to_ct(self, points_image_mm: np.ndarray) -> np.ndarray:
        """``(N, 3)`` image-frame points → CT frame."""
        p = (np.asarray(points_image_mm, dtype=np.float64) - np.array([self.shift_mm[0], self.shift_mm[1], 0.0]))
        return (p @ self._rz()) / np.array([self.scale_lateral, self.scale_lateral, self.scale_ap])

    def to_dict(self) -> dict[str, Any]:
        return {"rotation_deg": round(float(np.degrees(self.rotation_rad)), 3),
                "shift_mm": [round(float(v), 3) for v in self.shift_mm],
                "scale_lateral": round(self.scale_lateral, 4), "scale_ap": round(self.scale_ap, 4)}


@dataclass(frozen=True)
class PoseLimits:
    """Where a pose may sample the CT's projection, in mm at the isocentre about the central ray.

    Attributes:
        output_half_mm: ``(rows, cols)`` half-extent of the output's outermost pixel centres.
        reach_half_mm: ``(rows, cols)`` half-extent of the projected area whose rays stay inside the CT
            at every depth of the body (and inside the projection's own grid).
    """

    output_half_mm: tuple[float, float]
    reach_half_mm: tuple[float, float]

    def corner_reach(self, pose: PatientPose) -> tuple[float, float]:
        """``(rows, cols)`` largest CT-frame offset any output corner maps to under ``pose``."""
        c, s = abs(np.cos(pose.rotation_rad)), np.sin(pose.rotation_rad)
        hy, hx = self.output_half_mm
        tx, ty = pose.shift_mm
        # u_ct = R(-θ) (u - t) / s; over the corners u = (±hx, ±hy) the extremes add up term by term.
        rows = (abs(s) * hx + c * hy + abs(s * tx - np.cos(pose.rotation_rad) * ty)) / pose.scale_lateral
        cols = (c * hx + abs(s) * hy + abs(np.cos(pose.rotation_rad) * tx + s * ty)) / pose.scale_lateral
        return rows, cols

    def fits(self, pose: PatientPose, tolerance_mm: float = 1e-6) -> bool:
        rows, cols = self.corner_reach(pose)
        return rows <= self.reach_half_mm[0] + tolerance_mm and cols <= self.reach_half_mm[1] + tolerance_mm


def fit_pose(pose: PatientPose, limits: PoseLimits) -> PatientPose:
    """``pose`` with the lateral scale raised and the shifts shortened until every output pixel is covered.

    Raises the scale to the least at which the centred patient fits at the drawn rotation, then scales
    both shifts by the largest factor in ``[0, 1]`` that fits (the corner reach is linear in the shift).
    """
    centred = PatientPose(pose.rotation_rad, (0.0, 0.0), 1.0, pose.scale_ap)
    rows0, cols0 = limits.corner_reach(centred)
    scale = max(pose.scale_lateral, rows0 / limits.reach_half_mm[0], cols0 / limits.reach_half_mm[1])
    c, s = np.cos(pose.rotation_rad), np.sin(pose.rotation_rad)
    tx, ty = pose.shift_mm
    factor = 1.0
    for base, room, along in ((rows0, limits.reach_half_mm[0], abs(s * tx - c * ty)),
                              (cols0, limits.reach_half_mm[1], abs(c * tx + s * ty))):
        if along > 0:
            factor = min(factor, max(scale * room - base, 0.0) / along)
    factor = float(np.clip(factor * (1.0 - 1e-9), 0.0, 1.0))
    return PatientPose(pose.rotation_rad, (tx * factor, ty * factor), float(scale), pose.scale_ap)


def draw_patient_pose(rng: np.random.Generator, config: CTPoseConfig, field_mm: float,
                      limits: PoseLimits | None = None) -> PatientPose:
    """One image's patient pose (identity when the variation is off; no random number drawn then).

    Args:
        rng: the image's stream.
        config: the ranges.
        field_mm: the field side at the isocentre (the shifts are fractions of it).
        limits: where the pose may sample the projection (:func:`fit_pose`); ``None``: unbounded.
    """
    if not config.enabled:
        return PatientPose()
    rotation = float(np.radians(rng.uniform(-config.rotation_deg, config.rotation_deg)))
    lateral = float(rng.uniform(-1.0, 1.0)) * config.shift_lateral * field_mm
    craniocaudal = float(rng.uniform(-1.0, 1.0)) * config.shift_craniocaudal * field_mm
    scale = float(rng.uniform(*config.scale_lateral_range))
    scale_ap = float(rng.uniform(*config.scale_ap_range))
    pose = PatientPose(rotation_rad=rotation, shift_mm=(lateral, craniocaudal), scale_lateral=scale,
                       scale_ap=scale_ap)
    return pose if limits is None else fit_pose(pose, limits)


def source_coordinates(pose: PatientPose, shape: tuple[int, int], source_shape: tuple[int, int],
                       magnification: float, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """``(H, W)`` float32 column and row of the CT projection (``source_shape``, same pixel, same centre)
    that each output pixel samples under ``pose``."""
    h, w = shape
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # Inverse map: image pixel → CT-projection pixel, u_ct = R^-1 (u - M t) / s (pixels about the centre).
    c, s = np.cos(pose.rotation_rad), np.sin(pose.rotation_rad)
    shift_px = np.array(pose.shift_mm) * magnification / pixel_mm
    k = 1.0 / pose.scale_lateral
    xs = (np.arange(w, dtype=np.float64) - cx - shift_px[0])[None, :]
    ys = (np.arange(h, dtype=np.float64) - cy - shift_px[1])[:, None]
    map_x = (k * (c * xs + s * ys) + (source_shape[1] - 1) / 2.0).astype(np.float32)
    map_y = (k * (-s * xs + c * ys) + (source_shape[0] - 1) / 2.0).astype(np.float32)
    return map_x, map_y


def warp_projection(maps: dict[str, np.ndarray], pose: PatientPose, magnification: float, pixel_mm: float,
                    shape: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """The posed patient's material line-integral maps ``{material: shape}`` (see the module docstring).

    Args:
        maps: the CT's projection ``{material: (H', W')}``, centred on the central ray like the output.
        shape: the output ``(H, W)``; default the maps' own.
    """
    import cv2

    first = next(iter(maps.values()))
    shape = shape or first.shape
    if pose.is_identity and shape == first.shape:
        return maps
    map_x, map_y = source_coordinates(pose, shape, first.shape, magnification, pixel_mm)
    # The fitted pose keeps every sample inside the maps (fit_pose); the border rule never decides a pixel.
    return {name: cv2.remap(np.ascontiguousarray(value, dtype=np.float32), map_x, map_y, cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE) * np.float32(pose.scale_ap)
            for name, value in maps.items()}

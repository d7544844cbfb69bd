"""Patient backgrounds: a real radiograph (2-D insertion) or a real CT (3-D, DeepDRR-style).

**Radiograph mode.** A processed radiograph does not record its exposure, so the patient's
water-equivalent thickness (WET) is estimated from the display value ``p`` (bright = dense) under the
documented assumption that ``p`` is linear in log exposure between two calibration points: the
``p_lo`` percentile is ``wet_range_mm[0]`` of water and the ``p_hi`` percentile ``wet_range_mm[1]``.
The polychromatic log-attenuation ``A(w)`` of water (beam hardening included) maps ``p → A → WET``.
The WET hardens the spectrum seen by an inserted object and sets the local dose and scatter.

**CT mode.** Hounsfield units are decomposed into air, lung, soft tissue and bone, each with a density
from HU (``ρ = 1 + HU/1000`` g/cm³ for air/lung/soft tissue, ``ρ = 1 + 0.00055·HU`` for bone; thresholds
-950, -400 and +250 HU). Cone-beam line integrals of each material's density (g/cm²) are computed by
slice-wise trilinear sampling along the rays (a Joseph-type projector with ``torch.grid_sample``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synth.physics.detector import ScatterConfig
from synth.physics.geometry import Detector
from synth.physics.materials import linear_attenuation_per_mm, mass_attenuation
from synth.physics.patient_pose import PoseLimits
from synth.physics.placement import SoftTissueRegion, soft_tissue_region
from synth.physics.spectra import Spectrum
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

CT_MATERIALS = ("air", "lung", "soft_tissue", "cortical_bone")
CT_FIELD_FRACTION = 0.8
HU_THRESHOLDS = (-950.0, -400.0, 250.0)


def water_attenuation_table(spectrum: Spectrum, max_mm: float = 600.0, step_mm: float = 1.0
                            ) -> tuple[np.ndarray, np.ndarray]:
    """Polychromatic log-attenuation of water ``A(w) = -ln Σ ŵ_E exp(-μ_w(E) w)`` on a grid of thicknesses."""
    thickness = np.arange(0.0, max_mm + step_mm, step_mm)
    mu = linear_attenuation_per_mm("water", spectrum.energies_kev)
    weights = spectrum.integrating_weights()
    transmitted = np.exp(-np.outer(thickness, mu)) @ weights
    return thickness, -np.log(transmitted)


@dataclass(frozen=True, eq=False)
class RadiographBackground:
    """A real radiograph prepared for insertion.

    Attributes:
        display: ``(H, W)`` float32 in ``[0, 1]`` (bright = dense), resampled to the output size.
        attenuation: ``(H, W)`` estimated log-attenuation ``A``.
        water_mm: ``(H, W)`` estimated water-equivalent thickness.
        body_mask: ``(H, W)`` bool, where objects may be placed.
        spr: ``(H, W)`` scatter-to-primary ratio from the scatter model (0 when scatter is off).
        detector: the geometry (pixel pitch from the file's spacing and the resampling).
        p_lo, p_hi, a_lo, a_hi: the calibration (display ↔ log-attenuation is linear).
        name, sha256: the source file.
    """

    display: np.ndarray
    attenuation: np.ndarray
    water_mm: np.ndarray
    body_mask: np.ndarray
    spr: np.ndarray
    detector: Detector
    p_lo: float
    p_hi: float
    a_lo: float
    a_hi: float
    name: str
    sha256: str

    @property
    def display_per_attenuation(self) -> float:
        return (self.p_hi - self.p_lo) / (self.a_hi - self.a_lo)


def square_resample(pixels: np.ndarray, spacing_mm: tuple[float, float], size: int) -> tuple[np.ndarray, float]:
    """Centre-crop to a square field and resample to ``size x size`` (area averaging); return pixel pitch."""
    from scipy.ndimage import zoom

    h, w = pixels.shape
    row_mm, col_mm = spacing_mm
    side_mm = min(h * row_mm, w * col_mm)
    rows, cols = int(round(side_mm / row_mm)), int(round(side_mm / col_mm))
    r0, c0 = (h - rows) // 2, (w - cols) // 2
    crop = pixels[r0:r0 + rows, c0:c0 + cols].astype(np.float32)
    out = zoom(crop, (size / rows, size / cols), order=1, prefilter=False, grid_mode=True, mode="nearest")
    return np.clip(out, 0.0, 1.0).astype(np.float32), side_mm / size


def prepare_radiograph(
    path: str | os.PathLike[str], size: int, spectrum: Spectrum, source_to_detector_mm: float,
    source_to_object_mm: float, wet_range_mm: tuple[float, float], percentiles: tuple[float, float],
    scatter_config: ScatterConfig, body_threshold_mm: float, spacing_mm: float | None = None,
) -> RadiographBackground:
    """Read a radiograph (PNG/JPEG/DICOM) and calibrate it for insertion.

    ``spacing_mm``: the detector pitch of the file (from its acquisition, :mod:`synth.physics.acquisition`);
    ``None`` keeps the reader's spacing.

    Raises:
        UserInputError: unreadable image (from :func:`rfo_bench.io.images.read_image`).
    """
    from scipy.ndimage import binary_erosion, binary_opening

    from rfo_bench.io.images import read_image
    from synth.physics.detector import scatter_signal
    from toolkit_core.utils import sha256_file

    image = read_image(path)
    spacing = image.pixel_spacing_mm if spacing_mm is None else (float(spacing_mm), float(spacing_mm))
    display, pixel_mm = square_resample(image.pixels, spacing, size)
    p_lo, p_hi = (float(v) for v in np.percentile(display, percentiles))
    if not p_hi > p_lo:
        raise UserInputError("radiograph has no contrast (constant image)", file=path)
    thickness, table = water_attenuation_table(spectrum)
    a_lo, a_hi = (float(np.interp(w, thickness, table)) for w in wet_range_mm)
    attenuation = (a_lo + (display - p_lo) * (a_hi - a_lo) / (p_hi - p_lo)).astype(np.float32)
    water = np.interp(np.clip(attenuation, table[0], table[-1]), table, thickness).astype(np.float32)
    detector = Detector(size, size, pixel_mm, source_to_detector_mm, source_to_object_mm)
    mask = binary_opening(water > body_threshold_mm, iterations=3)
    margin = max(int(15.0 / pixel_mm), 1)
    mask = binary_erosion(mask, iterations=margin, border_value=0)
    if not mask.any():
        logger.warning("%s: no body region found above %.0f mm water; objects may go anywhere", path,
                       body_threshold_mm)
        mask = np.ones_like(mask)
    primary = np.exp(-attenuation.astype(np.float64))
    mu_eff = float(table[201] / thickness[201]) if len(table) > 201 else float(table[-1] / thickness[-1])
    scatter = scatter_signal(primary, attenuation, scatter_config, pixel_mm, mu_eff)
    spr = (scatter / primary).astype(np.float32)
    return RadiographBackground(display, attenuation, water, mask, spr, detector, p_lo, p_hi, a_lo, a_hi,
                                Path(path).name, sha256_file(path))


def decompose_hu(hu: np.ndarray) -> dict[str, np.ndarray]:
    """Split a CT into per-material density volumes (g/cm³), zero outside each material.

    Args:
        hu: ``(X, Y, Z)`` Hounsfield units.

    Returns:
        ``{material: density (X, Y, Z) float32}`` for :data:`CT_MATERIALS`.
    """
    h = np.clip(hu.astype(np.float32), -1000.0, 3000.0)
    soft_density = np.clip(1.0 + h / 1000.0, 0.0, None)
    bone_density = 1.0 + 0.00055 * h
    t_air, t_lung, t_bone = HU_THRESHOLDS
    masks = {
        "air": h < t_air,
        "lung": (h >= t_air) & (h < t_lung),
        "soft_tissue": (h >= t_lung) & (h < t_bone),
        "cortical_bone": h >= t_bone,
    }
    out = {}
    for name, mask in masks.items():
        density = bone_density if name == "cortical_bone" else soft_density
        out[name] = np.where(mask, density, 0.0).astype(np.float32)
    return out


def voxel_to_object(ijk: np.ndarray, shape: tuple[int, ...], spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """``(N, 3)`` RAS+ voxel indices → object-frame mm, the volume centred at the isocentre, PA beam.

    ``x_o = +R`` (source view; flipped for display), ``y_o`` = inferior (down the image), ``z_o`` =
    anterior (the beam direction, posterior → anterior).
    """
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2.0
    ras = (np.asarray(ijk, dtype=np.float64) - centre) * np.asarray(spacing_mm)
    return np.column_stack([ras[:, 0], -ras[:, 2], ras[:, 1]])


@dataclass(frozen=True, eq=False)
class CTBackground:
    """A CT projected in the PA geometry.

    Attributes:
        detector: the geometry (source view: columns towards the patient's right; flipped for display).
        material_g_cm2: ``{material: (H, W)}`` line integrals of density.
        hu: the CT, ``(X, Y, Z)`` RAS+.
        spacing_mm: voxel size.
        body_voxels: ``(N, 3)`` object-frame positions (mm) of soft-tissue voxels where objects may go.
        soft_tissue: the soft-tissue region internal objects must lie in
            (:class:`synth.physics.placement.SoftTissueRegion`), with the CT's segmentation when one ships with it.
        anterior_mm, posterior_mm: object-frame depth of the body's front / back surface.
        name, sha256: the source file.
        reach_g_cm2: the same line integrals on a larger detector (same pixel, same centre), as far as
            rays stay inside the CT at every depth of the body; the posed patient is sampled from it.
        pose_limits: the output's and that projection's half-extents
            (:class:`synth.physics.patient_pose.PoseLimits`).
    """

    detector: Detector
    material_g_cm2: dict[str, np.ndarray]
    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    body_voxels: np.ndarray
    anterior_mm: float
    posterior_mm: float
    name: str
    sha256: str
    soft_tissue: SoftTissueRegion | None = None
    reach_g_cm2: dict[str, np.ndarray] | None = None
    pose_limits: PoseLimits | None = None

    def voxel_to_object(self, ijk: np.ndarray) -> np.ndarray:
        """``(N, 3)`` voxel indices → object-frame mm (volume centred at the isocentre, PA beam)."""
        return voxel_to_object(ijk, self.hu.shape, self.spacing_mm)

    def object_to_voxel(self, points_mm: np.ndarray) -> np.ndarray:
        shape = np.asarray(self.hu.shape, dtype=np.float64)
        p = np.asarray(points_mm, dtype=np.float64)
        ras = np.column_stack([p[:, 0], p[:, 2], -p[:, 1]])
        return ras / np.asarray(self.spacing_mm) + (shape - 1) / 2.0

    def sample_materials(self, points_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Material index (into :data:`CT_MATERIALS`) and density at object-frame points (nearest voxel)."""
        ijk = np.round(self.object_to_voxel(points_mm)).astype(np.int64)
        inside = np.all((ijk >= 0) & (ijk < np.asarray(self.hu.shape)), axis=1)
        hu = np.full(len(ijk), -1000.0, dtype=np.float32)
        hu[inside] = self.hu[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
        densities = decompose_hu(hu[:, None, None])
        index = np.zeros(len(hu), dtype=np.int64)
        density = np.zeros(len(hu), dtype=np.float64)
        for k, name in enumerate(CT_MATERIALS):
            d = densities[name][:, 0, 0]
            hit = d > 0
            index[hit] = k
            density[hit] = d[hit]
        return index, density


def _linear_taps(index: np.ndarray, size: int) -> tuple:
    """Indices and weights of 1-D linear interpolation at fractional ``index``; zero outside ``[0, size-1]``."""
    i0 = np.floor(index).astype(np.int64)
    w1 = index - i0
    w0 = 1.0 - w1
    w0 = np.where((i0 >= 0) & (i0 < size), w0, 0.0).astype(np.float32)
    w1 = np.where((i0 + 1 >= 0) & (i0 + 1 < size), w1, 0.0).astype(np.float32)
    return np.clip(i0, 0, size - 1), np.clip(i0 + 1, 0, size - 1), w0, w1


def project_ct(hu: np.ndarray, spacing_mm: tuple[float, float, float], detector: Detector, downsample: int = 2
               ) -> dict[str, np.ndarray]:
    """Cone-beam PA line integrals of each material's density, g/cm², on the detector grid.

    The volume is centred at the isocentre. Each ray is sampled where it crosses each coronal slice
    (constant anterior–posterior coordinate), bilinearly within the slice, with path length
    ``Δy · |d| / d_z`` per slice (a Joseph-type projector). Within one slice the sample positions of all
    rays form a scaled grid, so the interpolation is separable: two 1-D gathers per slice.

    Args:
        hu: ``(X, Y, Z)`` RAS+ Hounsfield units.
        spacing_mm: voxel size.
        detector: geometry (source view: columns towards the patient's right, rows towards the feet).
        downsample: rays are traced on a grid ``downsample`` times coarser, then interpolated.
    """
    from scipy.ndimage import zoom

    materials = decompose_hu(hu)
    nx, ny, nz = hu.shape
    sx, sy, sz = spacing_mm
    # (Y, M, X, Z): one contiguous coronal slab per step along the beam.
    volume = np.ascontiguousarray(np.stack([materials[m] for m in CT_MATERIALS]).transpose(2, 0, 1, 3))
    rows, cols = -(-detector.rows // downsample), -(-detector.cols // downsample)
    coarse = Detector(rows, cols, detector.pixel_mm * detector.cols / cols, detector.source_to_detector_mm,
                      detector.source_to_object_mm)
    u, v = coarse.pixel_centres_mm()
    sid, sod = detector.source_to_detector_mm, detector.source_to_object_mm
    total = np.zeros((len(CT_MATERIALS), cols, rows), dtype=np.float32)
    for j in range(ny):
        depth = (j - (ny - 1) / 2.0) * sy  # object-frame z of this slice (RAS y, anterior +)
        scale = (depth + sod) / sid
        a0, a1, wa0, wa1 = _linear_taps(u * scale / sx + (nx - 1) / 2.0, nx)  # x_o = x_RAS
        b0, b1, wb0, wb1 = _linear_taps(-v * scale / sz + (nz - 1) / 2.0, nz)  # y_o (down) = -z_RAS
        if not (wa0.any() or wa1.any()) or not (wb0.any() or wb1.any()):
            continue
        slab = volume[j]  # (M, X, Z)
        along_x = slab[:, a0, :] * wa0[None, :, None] + slab[:, a1, :] * wa1[None, :, None]  # (M, cols, Z)
        total += along_x[:, :, b0] * wb0[None, None, :] + along_x[:, :, b1] * wb1[None, None, :]
    uu, vv = np.meshgrid(u, v)
    step_mm = sy * np.sqrt(uu**2 + vv**2 + sid**2) / sid  # path length per slice along each ray
    out = {}
    for k, name in enumerate(CT_MATERIALS):
        g_cm2 = total[k].T.astype(np.float64) * step_mm / 10.0  # (rows, cols)
        full = zoom(g_cm2, (detector.rows / rows, detector.cols / cols), order=1, grid_mode=True, mode="nearest")
        out[name] = full[:detector.rows, :detector.cols].astype(np.float32)
    return out


def prepare_ct(path: str | os.PathLike[str], size: int, source_to_detector_mm: float, patient_centre_to_detector_mm: float
               ) -> CTBackground:
    """Read a NIfTI CT and project it for a PA chest geometry with a ``size x size`` detector.

    The square field covers :data:`CT_FIELD_FRACTION` of the CT's smaller lateral/cranio-caudal extent at
    the isocentre; the rest is room for the per-image patient pose (:mod:`synth.physics.patient_pose`).

    Raises:
        UserInputError: unreadable CT, no voxel spacing, or no soft tissue in it.
    """
    from rfo_bench.io.volumes import read_volume
    from toolkit_core.utils import sha256_file

    volume = read_volume(path)
    hu = volume.hu
    soft = (hu > -200) & (hu < 200)
    if not soft.any():
        raise UserInputError("CT contains no soft tissue (-200..200 HU); is it in Hounsfield units?", file=path)
    body = hu > -400
    ys = np.nonzero(body.any(axis=(0, 2)))[0]
    front = float(voxel_to_object(np.array([[0, ys.max(), 0]]), hu.shape, volume.spacing_mm)[0, 2])
    back = float(voxel_to_object(np.array([[0, ys.min(), 0]]), hu.shape, volume.spacing_mm)[0, 2])
    sod = source_to_detector_mm - patient_centre_to_detector_mm
    field_mm = CT_FIELD_FRACTION * min(volume.extent_mm[0], volume.extent_mm[2]) * source_to_detector_mm / sod
    detector = Detector(size, size, field_mm / size, source_to_detector_mm, sod)
    reach_detector, limits = pose_reach(detector, hu.shape, volume.spacing_mm, front)
    reach = project_ct(volume.hu, volume.spacing_mm, reach_detector)
    pad_rows, pad_cols = (reach_detector.rows - size) // 2, (reach_detector.cols - size) // 2
    materials = {name: np.ascontiguousarray(value[pad_rows:pad_rows + size, pad_cols:pad_cols + size])
                 for name, value in reach.items()}
    idx = np.argwhere(soft[::4, ::4, ::2]) * np.array([4, 4, 2])
    positions = voxel_to_object(idx, hu.shape, volume.spacing_mm)
    # Keep voxels whose projection falls well inside the detector.
    rc = detector.project(positions)
    inside = np.all((rc > 0.08 * size) & (rc < 0.92 * size), axis=1)
    region = soft_tissue_region(hu, volume.spacing_mm, path)
    return CTBackground(detector, materials, hu, volume.spacing_mm, positions[inside], front, back,
                        Path(path).name, sha256_file(path), region, reach, limits)


def pose_reach(detector: Detector, shape: tuple[int, int, int], spacing_mm: tuple[float, float, float],
               anterior_mm: float, downsample: int = 2) -> tuple[Detector, PoseLimits]:
    """The larger detector the posed patient is sampled from, and the limits that keep a pose inside it.

    A ray through detector offset ``v`` crosses depth ``z`` at ``v · (SOD + z) / SID``; it stays inside
    the volume's outermost slice centres at every depth of the body (up to its front surface
    ``anterior_mm``) while ``|v| <= half · SID / (SOD + anterior_mm)``. The detector grows by a multiple
    of ``downsample`` pixels on each side (so the coarse ray grid of :func:`project_ct` is unchanged)
    without passing that bound.

    Returns:
        The detector (same pixel, same centre, rows/columns towards the patient's feet/right) and
        :class:`~synth.physics.patient_pose.PoseLimits` in mm at the isocentre.
    """
    sid, sod = detector.source_to_detector_mm, detector.source_to_object_mm
    if sod + anterior_mm <= 0:
        raise UserInputError("the body's front reaches the source", field="patient_centre_to_detector_mm")
    # Rows run along the CT's z (cranio-caudal), columns along its x (lateral).
    half_volume_mm = ((shape[2] - 1) / 2.0 * spacing_mm[2], (shape[0] - 1) / 2.0 * spacing_mm[0])
    pads = []
    for half, n in zip(half_volume_mm, detector.shape):
        bound_px = half * sid / (sod + anterior_mm) / detector.pixel_mm  # from the central ray
        pad = int(np.floor((bound_px - n / 2.0) / downsample)) * downsample
        pads.append(max(pad, 0))
    reach = Detector(detector.rows + 2 * pads[0], detector.cols + 2 * pads[1], detector.pixel_mm, sid, sod)
    to_iso = detector.pixel_mm / detector.magnification
    output = tuple((n - 1) / 2.0 * to_iso for n in detector.shape)
    # The warp interpolates between pixel centres; the outermost centres bound what it may sample.
    reached = tuple(min((n - 1) / 2.0 * to_iso, half * sid / (sod + anterior_mm) / detector.magnification)
                    for n, half in zip(reach.shape, half_volume_mm))
    return reach, PoseLimits(output, reached)


def material_mass_attenuation(spectrum: Spectrum, names: tuple[str, ...]) -> np.ndarray:
    """``(M, K)`` mass attenuation (cm²/g) of materials at the spectrum's energies."""
    return np.stack([mass_attenuation(n, spectrum.energies_kev) for n in names])

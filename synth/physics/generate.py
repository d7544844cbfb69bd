"""Rendering of labelled synthetic radiographs and dataset generation (seeded, shardable).

Per image ``i`` everything random comes from ``SeedSequence([seed, i])``, so an image depends only on
the seed, its index and the configuration: a dataset is byte-identical across runs, worker counts
and shards.

Rendering of an object (both modes): per-material cone-beam path lengths over the object's footprint
box — thin parts are traced with ``supersample²`` rays per pixel and their path lengths averaged per
pixel (a partial-volume approximation: exact where ``μL`` is uniform over the pixel, second order in
the spread of ``μL`` at object edges) — then the energy-integrating Beer–Lambert sum
``R = Σ_E ŵ_E(h) exp(-Σ_parts (μ_part(E) - μ_host(E)) L_part) / Σ_E ŵ_E(h)`` where ``ŵ(h)`` is the
spectrum hardened by the patient at that pixel and the host is the material the part displaces.
Objects overlapping on the detector multiply their transmissions (their mutual hardening is neglected).
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.categories import CATEGORY_BY_NAME, category
from rfo_bench.errors import UserInputError
from synth.physics.detector import (
    BlurConfig,
    DisplayConfig,
    NoiseConfig,
    ScatterConfig,
    add_quantum_noise,
    blur,
    blur_sigma_px,
    display_transform,
    scatter_signal,
    unsharp_mask,
)
from synth.physics.geometry import Detector, Pose, random_rotation
from synth.physics.objects.library import Part, RFOObject, make_object
from synth.physics.project import ROI, footprint_roi, path_lengths
from synth.physics.spectra import Spectrum, TubeTechnique, tube_spectrum

logger = logging.getLogger(__name__)

DEFAULT_CLASSES = tuple(CATEGORY_BY_NAME)


@dataclass(frozen=True)
class PhysicsConfig:
    """Every physics and sampling parameter of a dataset (written to ``manifest.json``).

    Attributes:
        mode: ``radiograph`` (insertion into real radiographs) or ``ct`` (projection of a CT).
        size: output image side in pixels (square field).
        technique: tube technique (spectrum and dose).
        n_energy_bins: energy bins of the Beer–Lambert sum (split at absorption edges).
        source_to_detector_mm: SID.
        patient_centre_to_detector_mm: depth of the isocentre in front of the detector.
        detector_csi_mm: CsI scintillator thickness; its absorption efficiency weights the spectrum.
        classes: RFO classes drawn.
        max_objects: objects per positive image are drawn in ``1..max_objects``.
        negative_fraction: probability of an image without objects.
        supersample: sub-rays per pixel along each axis.
        wet_range_mm: radiograph calibration: water thickness at the low / high display percentiles.
        calibration_percentiles: the display percentiles used for the calibration.
        body_threshold_mm: minimum water-equivalent thickness where objects are placed.
        label_min_attenuation: an object's label footprint holds the pixels where it changes the
            log-signal by at least this much (0.005 = 0.5 % contrast) before noise.
        scatter, noise, blur, display: detector stages.
    """

    mode: str = "radiograph"
    size: int = 1024
    technique: TubeTechnique = field(default_factory=TubeTechnique)
    n_energy_bins: int = 16
    source_to_detector_mm: float = 1800.0
    patient_centre_to_detector_mm: float = 150.0
    detector_csi_mm: float = 0.6
    classes: tuple[str, ...] = DEFAULT_CLASSES
    max_objects: int = 3
    negative_fraction: float = 0.15
    supersample: int = 2
    wet_range_mm: tuple[float, float] = (20.0, 280.0)
    calibration_percentiles: tuple[float, float] = (0.5, 99.5)
    body_threshold_mm: float = 60.0
    label_min_attenuation: float = 0.005
    scatter: ScatterConfig = field(default_factory=ScatterConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("radiograph", "ct"):
            raise UserInputError("mode must be 'radiograph' or 'ct'", field="mode", value=self.mode)
        if not 16 <= int(self.size) <= 8192:
            raise UserInputError("image size must be 16-8192 pixels", field="size", value=self.size)
        for name in self.classes:
            category(name)
        if not self.classes:
            raise UserInputError("at least one RFO class is needed", field="classes")
        if self.max_objects < 0 or not 0.0 <= self.negative_fraction <= 1.0:
            raise UserInputError("need max_objects >= 0 and 0 <= negative_fraction <= 1", field="max_objects",
                                 value=(self.max_objects, self.negative_fraction))
        if self.supersample < 1:
            raise UserInputError("supersample must be >= 1", field="supersample", value=self.supersample)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detected_spectrum(config: PhysicsConfig) -> Spectrum:
    """Tube spectrum at the detector distance, weighted by the CsI absorption efficiency, rebinned."""
    from synth.physics.materials import linear_attenuation_per_mm

    spectrum = tube_spectrum(config.technique).at_distance(config.source_to_detector_mm)
    efficiency = 1.0 - np.exp(-linear_attenuation_per_mm("csi", spectrum.energies_kev) * config.detector_csi_mm)
    detected = Spectrum(spectrum.energies_kev, spectrum.photons_per_mm2 * efficiency, spectrum.reference_distance_mm)
    return detected.rebinned(config.n_energy_bins)


@dataclass(frozen=True, eq=False)
class Layer:
    """Path lengths through all parts of an object sharing a material, density and host.

    Attributes:
        material, density_g_cm3: what the parts are made of.
        host_material, host_density_g_cm3: what they displace when embedded in another part
            (``None``: they displace the surrounding medium).
        lengths_mm: ``(roi.rows, roi.cols)`` per-pixel mean path length (sub-rays averaged).
        mean_depth_mm: same shape, mean distance from the source of the segments (CT mode), or ``None``.
    """

    material: str
    density_g_cm3: float
    host_material: str | None
    host_density_g_cm3: float | None
    lengths_mm: np.ndarray
    mean_depth_mm: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class PlacedObject:
    """An object with its pose and its material layers projected over its footprint box."""

    obj: RFOObject
    pose: Pose
    roi: ROI
    layers: tuple[Layer, ...]


def _needs_supersampling(vertices: np.ndarray, faces: np.ndarray, pixel_mm: float) -> bool:
    """Thin solids (volume / area, about half the thickness, below a pixel) need sub-pixel rays."""
    from synth.physics.project import cross3

    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    area = 0.5 * np.linalg.norm(cross3(b - a, c - a), axis=1).sum()
    volume = abs(np.einsum("ij,ij->i", a, cross3(b, c)).sum()) / 6.0
    return volume / max(area, 1e-12) < pixel_mm


def place_and_project(obj: RFOObject, pose: Pose, detector: Detector, supersample: int, with_depth: bool
                      ) -> PlacedObject | None:
    """Project a posed object over its footprint box, one path-length map per material layer.

    Parts with the same material, density and host are disjoint, so their path lengths add: they are
    rasterised as one mesh over their own footprint. Thin layers are supersampled.
    """
    from synth.physics.project import block_mean

    posed = {p.name: pose.apply(p.vertices_mm) for p in obj.parts}
    roi = footprint_roi(np.concatenate(list(posed.values())), detector, pad=2)
    if roi is None:
        return None
    by_name = {p.name: p for p in obj.parts}
    groups: dict[tuple, list[Part]] = {}
    for part in obj.parts:
        host = by_name[part.host] if part.host is not None else None
        key = (part.material, round(part.density_g_cm3, 6), None if host is None else host.material,
               None if host is None else round(host.density_g_cm3, 6))
        groups.setdefault(key, []).append(part)
    layers = []
    for (material, density, host_material, host_density), parts in groups.items():
        offsets = np.cumsum([0] + [len(p.vertices_mm) for p in parts])[:-1]
        vertices = np.concatenate([posed[p.name] for p in parts])
        faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
        own = footprint_roi(vertices, detector, pad=1)
        if own is None:
            continue
        r0, c0 = max(own.row0, roi.row0), max(own.col0, roi.col0)
        r1 = min(own.row0 + own.rows, roi.row0 + roi.rows)
        c1 = min(own.col0 + own.cols, roi.col0 + roi.cols)
        own = ROI(r0, c0, r1 - r0, c1 - c0)
        s = supersample if _needs_supersampling(vertices, faces, detector.pixel_mm) else 1
        result = path_lengths(vertices, faces, detector, roi=own, supersample=s, with_depth=with_depth)
        lengths = np.zeros((roi.rows, roi.cols))
        inner = (slice(own.row0 - roi.row0, own.row0 - roi.row0 + own.rows),
                 slice(own.col0 - roi.col0, own.col0 - roi.col0 + own.cols))
        lengths[inner] = block_mean(result.lengths_mm, s)
        depth = None
        if with_depth and result.mean_depth_mm is not None:
            weighted = block_mean(np.where(result.lengths_mm > 0, result.mean_depth_mm * result.lengths_mm, 0.0), s)
            depth = np.full((roi.rows, roi.cols), np.nan)
            with np.errstate(invalid="ignore", divide="ignore"):
                depth[inner] = np.where(lengths[inner] > 0, weighted / lengths[inner], np.nan)
        layers.append(Layer(material, float(density), host_material, host_density, lengths, depth))
    return PlacedObject(obj, pose, roi, tuple(layers))


def _mu(cache: dict, material: str, density: float, energies: np.ndarray) -> np.ndarray:
    from synth.physics.materials import linear_attenuation_per_mm

    key = (material, round(float(density), 6))
    if key not in cache:
        cache[key] = linear_attenuation_per_mm(material, energies, density).astype(np.float32)
    return cache[key]


def _layer_exponent(layers: tuple[Layer, ...], mask: np.ndarray, mu_cache: dict, energies: np.ndarray,
                    default_host: str | None) -> np.ndarray:
    """``(K, n)`` Σ_layers (μ_layer - μ_host) L at the ``n`` masked pixels for each energy."""
    exponent = np.zeros((len(energies), int(mask.sum())), dtype=np.float32)
    for layer in layers:
        length = layer.lengths_mm[mask].astype(np.float32)
        if not np.any(length > 0):
            continue
        delta = _mu(mu_cache, layer.material, layer.density_g_cm3, energies)
        if layer.host_material is not None:
            delta = delta - _mu(mu_cache, layer.host_material, layer.host_density_g_cm3, energies)
        elif default_host is not None:
            delta = delta - _mu(mu_cache, default_host, _host_density(default_host), energies)
        exponent += delta[:, None] * length[None]
    return exponent


def _warm_rasteriser() -> None:
    """Compile (or load from numba's disk cache) the rasteriser now: forked workers then inherit it."""
    from synth.physics.objects.primitives import box

    vertices, faces = box((1.0, 1.0, 1.0))
    path_lengths(vertices, faces, Detector(3, 3, 1.0), with_depth=True)


def _host_density(name: str) -> float:
    from synth.physics.materials import get_material

    return get_material(name).density_g_cm3


def _annotation(placed: PlacedObject, footprint: np.ndarray, detector_shape: tuple[int, int], flip_lr: bool,
                log_attenuation: np.ndarray) -> dict[str, Any] | None:
    """COCO annotation of one object from its footprint mask within its ROI (``None`` when empty)."""
    from pycocotools import mask as mask_utils

    if not footprint.any():
        return None
    full = np.zeros(detector_shape, dtype=np.uint8, order="F")  # pycocotools wants Fortran order
    rows, cols = placed.roi.slices
    if flip_lr:  # PA display: mirror the columns
        width = detector_shape[1]
        full[rows, width - cols.stop:width - cols.start] = footprint[:, ::-1]
    else:
        full[rows, cols] = footprint
    rle = mask_utils.encode(full)
    bbox = [float(v) for v in mask_utils.toBbox(rle)]
    cat = CATEGORY_BY_NAME[placed.obj.class_name]
    return {
        "category_id": cat.id,
        "bbox": bbox,
        "area": float(mask_utils.area(rle)),
        "segmentation": {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")},
        "iscrowd": 0,
        "supercategory": cat.supercategory,
        "material": placed.obj.main_material,
        "materials": sorted({p.material for p in placed.obj.parts}),
        "object_params": placed.obj.params,
        "pose": placed.pose.to_dict(),
        "max_log_attenuation": round(float(log_attenuation.max()), 5),
    }


class Renderer:
    """Renders labelled images for one background; holds the per-background precomputation."""

    def __init__(self, config: PhysicsConfig, background, mesh_pool: list | None = None) -> None:
        self.config = config
        self.background = background
        self.spectrum = detected_spectrum(config)
        self.mesh_pool = mesh_pool or []
        self._mu_cache: dict = {}
        from synth.physics.materials import linear_attenuation_per_mm

        self._mu_water = linear_attenuation_per_mm("water", self.spectrum.energies_kev)
        self._warm_attenuation_tables()
        _warm_rasteriser()
        self.detector: Detector = background.detector
        self.flip_lr = config.mode == "ct"
        pixel_area = self.detector.pixel_mm**2
        self.quanta_open = self.spectrum.total_photons_per_mm2 * pixel_area  # detected quanta per pixel, no patient
        if config.mode == "ct":
            self._prepare_ct()
        else:
            self._body_rc = np.nonzero(background.body_mask)
            # The background rescaled into [0, headroom] so that objects denser than the patient stay
            # visible; computed once, copied per image.
            self._display_base = background.display * np.float32(config.display.radiograph_headroom)
            self._display_base_in_range = bool(self._display_base.min() >= 0.0 and self._display_base.max() <= 1.0)

    def _warm_attenuation_tables(self) -> None:
        """Tabulate μ/ρ of every registered material at the spectrum's energies now, once per process.

        The tables are cached by material; filling them here moves their cost (a few ms per material)
        out of the first images and, with forked workers, into the parent that all workers inherit.
        """
        from synth.physics.materials import list_materials, mass_attenuation
        from synth.physics.objects.library import reference_attenuation

        for name in list_materials():
            mass_attenuation(name, self.spectrum.energies_kev)
            reference_attenuation(name)

    # --- object sampling -------------------------------------------------------------------------
    def _draw_object(self, rng: np.random.Generator) -> RFOObject:
        classes = self.config.classes
        if self.mesh_pool:
            pool = [m for m in self.mesh_pool if m.class_name in classes]
            if pool:
                mesh = pool[int(rng.integers(len(pool)))]
                from synth.physics.materials import get_material

                density = mesh.density_g_cm3 or get_material(mesh.material).density_g_cm3
                part = Part("mesh", mesh.vertices_mm, mesh.faces, mesh.material, density)
                return RFOObject(mesh.class_name, (part,), {"mesh": mesh.name})
        return make_object(classes[int(rng.integers(len(classes)))], rng)

    def _draw_pose(self, obj: RFOObject, rng: np.random.Generator) -> Pose:
        det = self.detector
        rotation = random_rotation(rng)
        if obj.class_name in ("ecg_electrode", "button", "zipper"):
            # Flat external objects lie roughly parallel to the skin.
            from synth.physics.geometry import axis_angle_matrix

            tilt = axis_angle_matrix(rng.normal(size=3), rng.normal(0, 0.25))
            rotation = tilt @ axis_angle_matrix(np.array([0.0, 0.0, 1.0]), rng.uniform(0, 2 * np.pi))
        if self.config.mode == "ct":
            bg = self.background
            if obj.external:
                row, col = self._ct_body_pixels[int(rng.integers(len(self._ct_body_pixels)))]
                depth = bg.anterior_mm + 4.0 if rng.random() < 0.7 else bg.posterior_mm - 4.0
                scale = (depth + det.source_to_object_mm) / det.source_to_detector_mm * det.pixel_mm
                xy = np.array([(col - (det.cols - 1) / 2) * scale, (row - (det.rows - 1) / 2) * scale])
                return Pose(rotation, np.array([xy[0], xy[1], depth]))
            centre = bg.body_voxels[int(rng.integers(len(bg.body_voxels)))]
            return Pose(rotation, centre + rng.uniform(-2, 2, size=3))
        rows, cols = self._body_rc
        k = int(rng.integers(len(rows)))
        if obj.external:
            to_detector = rng.uniform(10, 30) if rng.random() < 0.6 else rng.uniform(220, 260)
        else:
            to_detector = rng.uniform(50, 220)
        depth = det.source_to_detector_mm - to_detector - det.source_to_object_mm
        scale = (depth + det.source_to_object_mm) / det.source_to_detector_mm * det.pixel_mm
        xy = np.array([(cols[k] + rng.uniform(-0.5, 0.5) - (det.cols - 1) / 2) * scale,
                       (rows[k] + rng.uniform(-0.5, 0.5) - (det.rows - 1) / 2) * scale])
        return Pose(rotation, np.array([xy[0], xy[1], depth]))

    def draw_scene(self, rng: np.random.Generator) -> list[PlacedObject]:
        """Objects and poses of one image (possibly none)."""
        cfg = self.config
        n = 0 if (cfg.max_objects == 0 or rng.random() < cfg.negative_fraction) else int(rng.integers(1, cfg.max_objects + 1))
        placed = []
        for _ in range(n):
            for _attempt in range(5):
                obj = self._draw_object(rng)
                pose = self._draw_pose(obj, rng)
                result = place_and_project(obj, pose, self.detector, cfg.supersample, with_depth=cfg.mode == "ct")
                if result is not None:
                    placed.append(result)
                    break
        return placed

    # --- radiograph mode -----------------------------------------------------------------------------
    def _object_ratio_radiograph(self, placed: PlacedObject) -> np.ndarray:
        """Noise-free primary transmission ratio ``R`` of one object over its ROI."""
        bg = self.background
        energies = self.spectrum.energies_kev
        mask = np.zeros((placed.roi.rows, placed.roi.cols), dtype=bool)
        for layer in placed.layers:
            mask |= layer.lengths_mm > 0
        ratio = np.ones(mask.shape)
        if not mask.any():
            return ratio
        water = bg.water_mm[placed.roi.slices][mask].astype(np.float32)
        weights = self.spectrum.integrating_weights().astype(np.float32)[:, None] * np.exp(
            -self._mu_water.astype(np.float32)[:, None] * water[None])
        host = "air" if placed.obj.external else "soft_tissue"
        exponent = _layer_exponent(placed.layers, mask, self._mu_cache, energies, host)
        ratio[mask] = (weights * np.exp(-exponent)).sum(axis=0) / weights.sum(axis=0)
        return ratio

    def render_radiograph(self, rng: np.random.Generator, placed: list[PlacedObject]
                          ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        cfg, bg, det = self.config, self.background, self.detector
        headroom = cfg.display.radiograph_headroom
        display = self._display_base.copy()
        annotations = []
        changed: list[ROI] = []
        slope = bg.display_per_attenuation * headroom
        for obj in placed:
            ratio = self._object_ratio_radiograph(obj)
            log_att = -np.log(ratio)
            footprint = log_att >= cfg.label_min_attenuation
            ann = _annotation(obj, footprint, det.shape, False, log_att)
            if ann is None:
                continue
            magnification = det.source_to_detector_mm / (det.source_to_object_mm + obj.pose.translation_mm[2])
            sigma = blur_sigma_px(cfg.blur, det.pixel_mm, magnification)
            sharpen = cfg.display.unsharp_sigma_mm / det.pixel_mm if cfg.display.unsharp_amount > 0 else 0.0
            pad = int(np.ceil(3 * max(sigma, sharpen))) + 1
            roi = obj.roi.padded(pad, det)
            inner = (slice(obj.roi.row0 - roi.row0, obj.roi.row0 - roi.row0 + obj.roi.rows),
                     slice(obj.roi.col0 - roi.col0, obj.roi.col0 - roi.col0 + obj.roi.cols))
            full_ratio = np.ones((roi.rows, roi.cols))
            full_ratio[inner] = ratio
            spr = bg.spr[roi.slices] if cfg.scatter.enabled else 0.0
            total_ratio = (full_ratio + spr) / (1.0 + spr)  # scatter of the patient is unchanged by a small object
            delta = -np.log(total_ratio)
            if cfg.noise.enabled:
                quanta_bg = self.quanta_open * np.exp(-bg.attenuation[roi.slices].astype(np.float64))
                quanta = quanta_bg * total_ratio
                extra = np.clip(1.0 / np.maximum(quanta, 1.0) - 1.0 / np.maximum(quanta_bg, 1.0), 0.0, None)
                delta = delta + np.sqrt(extra) * rng.standard_normal(delta.shape) * (total_ratio < 1.0)
            delta = blur(delta, sigma)
            # The background was processed by its console; the object's signal gets the same kind of
            # edge enhancement (linear, so it can be applied to the object's contribution alone).
            delta = unsharp_mask(delta, cfg.display, det.pixel_mm)
            display[roi.slices] = display[roi.slices] + (delta * slope).astype(np.float32)
            changed.append(roi)
            annotations.append(ann)
        if not self._display_base_in_range:
            return np.clip(display, 0.0, 1.0), annotations
        for roi in changed:  # elsewhere the background is already in [0, 1]; clipping is idempotent
            np.clip(display[roi.slices], 0.0, 1.0, out=display[roi.slices])
        return display, annotations

    # --- CT mode -------------------------------------------------------------------------------------
    def _prepare_ct(self) -> None:
        from synth.physics.backgrounds import CT_MATERIALS, material_mass_attenuation

        bg = self.background
        self._ct_mass_mu = material_mass_attenuation(self.spectrum, CT_MATERIALS)  # (M, K)
        maps = np.stack([bg.material_g_cm2[m] for m in CT_MATERIALS]).astype(np.float32)  # (M, H, W)
        weights = self.spectrum.integrating_weights()
        primary = np.zeros(maps.shape[1:], dtype=np.float64)
        for k in range(len(weights)):  # one energy at a time keeps memory at a few images
            primary += weights[k] * np.exp(-np.tensordot(self._ct_mass_mu[:, k].astype(np.float32), maps, axes=1))
        self._ct_primary = primary  # relative to the open beam
        soft = bg.material_g_cm2["soft_tissue"] + bg.material_g_cm2["cortical_bone"]
        body = soft > 0.125 * soft.max()
        rows, cols = np.nonzero(body)
        keep = (rows > 0.05 * len(body)) & (rows < 0.95 * len(body)) & (cols > 0.05 * len(body)) & (cols < 0.95 * len(body))
        self._ct_body_pixels = np.column_stack([rows[keep], cols[keep]])

    def _object_primary_ct(self, placed: PlacedObject) -> np.ndarray:
        """The primary over the object's ROI with the object in place (patient material displaced)."""
        from synth.physics.backgrounds import CT_MATERIALS

        bg, det = self.background, self.detector
        energies = self.spectrum.energies_kev
        sl = placed.roi.slices
        mask = np.ones((placed.roi.rows, placed.roi.cols), dtype=bool)
        maps = np.stack([bg.material_g_cm2[m][sl] for m in CT_MATERIALS]).astype(np.float32)
        exponent = np.tensordot(self._ct_mass_mu.T.astype(np.float32), maps, axes=1)  # (K, h, w)
        exponent += _layer_exponent(placed.layers, mask, self._mu_cache, energies, None).reshape(exponent.shape)
        # Displaced patient material, sampled where each ray crosses the object (mid-depth of its segments).
        u, v = det.pixel_centres_mm()
        uu, vv = np.meshgrid(u[placed.roi.col0:placed.roi.col0 + placed.roi.cols],
                             v[placed.roi.row0:placed.roi.row0 + placed.roi.rows])
        direction = np.stack([uu, vv, np.full_like(uu, det.source_to_detector_mm)], axis=-1)
        direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
        for layer in placed.layers:
            if layer.host_material is not None or layer.mean_depth_mm is None:
                continue
            hit = layer.lengths_mm > 0
            if not hit.any():
                continue
            points = det.source_mm + direction[hit] * layer.mean_depth_mm[hit][:, None]
            index, density = bg.sample_materials(points)
            length = layer.lengths_mm[hit]
            displaced = np.zeros((len(energies), int(hit.sum())), dtype=np.float32)
            for k in range(len(CT_MATERIALS)):
                sel = index == k
                displaced[:, sel] = self._ct_mass_mu[k][:, None] * density[sel][None] * length[sel][None] / 10.0
            exponent[:, hit] -= displaced
        weights = self.spectrum.integrating_weights().astype(np.float32)
        return np.tensordot(weights, np.exp(-exponent), axes=1).astype(np.float64)

    def render_ct(self, rng: np.random.Generator, placed: list[PlacedObject]) -> tuple[np.ndarray, list[dict[str, Any]]]:
        cfg, det = self.config, self.detector
        primary = self._ct_primary.copy()
        annotations = []
        for obj in placed:
            before = primary[obj.roi.slices].copy()
            # Objects overlapping earlier ones multiply their transmissions.
            after = self._object_primary_ct(obj) * (before / np.maximum(self._ct_primary[obj.roi.slices], 1e-300))
            log_att = -np.log(np.maximum(after, 1e-300) / np.maximum(before, 1e-300))
            ann = _annotation(obj, log_att >= cfg.label_min_attenuation, det.shape, self.flip_lr, log_att)
            primary[obj.roi.slices] = after
            if ann is not None:
                annotations.append(ann)
        attenuation = -np.log(np.maximum(primary, 1e-12))
        signal = primary.copy()
        if cfg.scatter.enabled:
            signal += scatter_signal(primary, attenuation, cfg.scatter, det.pixel_mm, float(np.mean(self._mu_water)))
        quanta = add_quantum_noise(signal * self.quanta_open, rng, cfg.noise)
        mean_depth = np.mean([o.pose.translation_mm[2] for o in placed]) if placed else 0.0
        sigma = blur_sigma_px(cfg.blur, det.pixel_mm, det.source_to_detector_mm / (det.source_to_object_mm + mean_depth))
        quanta = blur(quanta, sigma)
        log_image = unsharp_mask(-np.log(np.maximum(quanta, 0.5) / self.quanta_open), cfg.display, det.pixel_mm)
        lo, hi = np.percentile(log_image[::4, ::4], cfg.display.window_percentiles)
        image = display_transform(log_image, float(lo), float(hi), cfg.display)
        if self.flip_lr:
            image = image[:, ::-1]
        return np.ascontiguousarray(image), annotations

    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """One image ``(H, W)`` float32 in ``[0, 1]`` and its annotations (without ids)."""
        placed = self.draw_scene(rng)
        if self.config.mode == "ct":
            return self.render_ct(rng, placed)
        image, annotations = self.render_radiograph(rng, placed)
        if self.config.display.photometric == "MONOCHROME1":
            image = 1.0 - image
        return image, annotations


# --- dataset generation ---------------------------------------------------------------------------------

def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` → ``(K, N)`` with ``0 <= K < N``.

    Raises:
        UserInputError: malformed or out of range (``3/2``).
    """
    if text is None:
        return 0, 1
    try:
        k_text, n_text = str(text).split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise UserInputError("shard must look like K/N, e.g. 0/4", field="--shard", value=text) from None
    if n < 1 or not 0 <= k < n:
        raise UserInputError("shard K/N needs 0 <= K < N", field="--shard", value=text)
    return k, n


def list_backgrounds(mode: str, path: str | os.PathLike[str] | None) -> list[Path]:
    """Background files: the embedded radiograph / CT by default, or a file, or the files of a folder."""
    from rfo_bench.io.embedded import embedded_ct_path, embedded_radiograph_path
    from rfo_bench.io.images import IMAGE_SUFFIXES

    if path is None:
        return [embedded_ct_path() if mode == "ct" else embedded_radiograph_path()]
    source = Path(path)
    if not source.exists():
        raise UserInputError("backgrounds path does not exist", file=source)
    if source.is_file():
        return [source]
    if mode == "ct":
        files = sorted(p for p in source.iterdir() if p.name.endswith((".nii", ".nii.gz")))
    else:
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        kind = "NIfTI (.nii/.nii.gz)" if mode == "ct" else "image (PNG/JPEG/DICOM)"
        raise UserInputError(f"no {kind} files in the backgrounds folder", file=source)
    return files


_WORKER: dict[str, Any] = {}


def _renderer_for(index: int) -> Renderer:
    from synth.physics.backgrounds import prepare_ct, prepare_radiograph

    cfg: PhysicsConfig = _WORKER["config"]
    files: list[Path] = _WORKER["backgrounds"]
    cache: dict[int, Renderer] = _WORKER.setdefault("renderers", {})
    if index not in cache:
        path = files[index]
        if cfg.mode == "ct":
            background = prepare_ct(path, cfg.size, cfg.source_to_detector_mm, cfg.patient_centre_to_detector_mm)
        else:
            spectrum = detected_spectrum(cfg)
            background = prepare_radiograph(
                path, cfg.size, spectrum, cfg.source_to_detector_mm,
                cfg.source_to_detector_mm - cfg.patient_centre_to_detector_mm, cfg.wet_range_mm,
                cfg.calibration_percentiles, cfg.scatter, cfg.body_threshold_mm,
            )
        cache[index] = Renderer(cfg, background, _WORKER.get("meshes"))
    return cache[index]


def build_renderer(config: PhysicsConfig, background: str | os.PathLike[str] | None = None,
                   objects_dir: str | os.PathLike[str] | None = None) -> Renderer:
    """A :class:`Renderer` for one background file (default: the embedded radiograph or CT)."""
    from synth.physics.objects.meshes import load_mesh_dir

    files = list_backgrounds(config.mode, background)[:1]
    meshes = load_mesh_dir(objects_dir) if objects_dir is not None else None
    _init_worker(config, files, meshes, 0, ".")
    renderer = _renderer_for(0)
    _WORKER.clear()
    return renderer


def _init_worker(config: PhysicsConfig, backgrounds: list[Path], meshes: list | None, seed: int, image_dir: str) -> None:
    _WORKER.clear()
    _WORKER.update(config=config, backgrounds=backgrounds, meshes=meshes, seed=seed, image_dir=image_dir)


def _render_one(index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from rfo_bench.io.images import write_png16
    from synth.export import annotation_id, image_file_name

    rng = np.random.default_rng(np.random.SeedSequence([int(_WORKER["seed"]), int(index)]))
    files = _WORKER["backgrounds"]
    bg_index = int(rng.integers(len(files)))
    renderer = _renderer_for(bg_index)
    image, annotations = renderer.render(rng)
    name = image_file_name(index)
    write_png16(Path(_WORKER["image_dir"]) / name, image)
    record = {"id": int(index) + 1, "file_name": f"images/{name}", "height": int(image.shape[0]),
              "width": int(image.shape[1]), "background": files[bg_index].name,
              "pixel_spacing_mm": round(float(renderer.detector.pixel_mm), 6),
              "photometric": renderer.config.display.photometric, "negative": not annotations}
    for k, ann in enumerate(annotations):
        ann["id"] = annotation_id(index, k)
        ann["image_id"] = record["id"]
    return record, annotations


def generate_dataset(
    out: str | os.PathLike[str], n: int, seed: int, config: PhysicsConfig, backgrounds: str | None = None,
    objects_dir: str | None = None, shard: str | None = None, workers: int = 1, overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Render a labelled dataset into ``out`` (annotations.json, images/*.png 16-bit, manifest.json).

    Args:
        out: destination directory (must be empty or absent unless ``overwrite``).
        n: number of images of the whole (unsharded) dataset.
        seed: master seed; image ``i`` uses ``SeedSequence([seed, i])``.
        config: physics configuration.
        backgrounds: a radiograph / CT file or folder; default the embedded real data.
        objects_dir: folder of user RFO meshes (replaces the procedural library for their classes).
        shard: ``"K/N"``: render only images ``i`` with ``i % N == K``.
        workers: processes.
        overwrite: replace an existing non-empty ``out``.
        progress: show a progress bar.

    Returns:
        The manifest.
    """
    import multiprocessing

    from tqdm import tqdm

    from rfo_bench.categories import coco_categories
    from rfo_bench.utils import sha256_file
    from synth.export import coco_document, staged_directory, write_json
    from synth.physics.objects.meshes import load_mesh_dir

    if n < 0:
        raise UserInputError("number of images must be >= 0", field="--n", value=n)
    if workers < 1:
        raise UserInputError("workers must be >= 1", field="--workers", value=workers)
    k, num = parse_shard(shard)
    files = list_backgrounds(config.mode, backgrounds)
    meshes = load_mesh_dir(objects_dir) if objects_dir is not None else None
    indices = [i for i in range(n) if i % num == k]
    records, annotations = [], []
    with staged_directory(out, overwrite) as staging:
        image_dir = staging / "images"
        image_dir.mkdir()
        args = (config, files, meshes, seed, str(image_dir))
        bar = tqdm(total=len(indices), desc="rendering", unit="img", disable=not progress)
        _init_worker(*args)
        can_fork = "fork" in multiprocessing.get_all_start_methods()
        if workers == 1 or len(indices) <= 1:
            for record, anns in (_render_one(i) for i in indices):
                records.append(record)
                annotations.extend(anns)
                bar.update()
        else:
            if can_fork and len(files) <= 8:
                # Prepare the backgrounds (spectrum, calibration, CT projection) once; forked workers inherit them.
                for b in range(len(files)):
                    _renderer_for(b)
            context = multiprocessing.get_context("fork" if can_fork else "spawn")
            initializer = None if can_fork else _init_worker
            with context.Pool(workers, initializer=initializer, initargs=args if initializer else ()) as pool:
                for record, anns in pool.imap(_render_one, indices, chunksize=1):
                    records.append(record)
                    annotations.extend(anns)
                    bar.update()
        bar.close()
        _WORKER.clear()
        categories = coco_categories(list(config.classes))
        info = {"description": f"rfo-synth physics ({config.mode} mode)", "version": _version(), "seed": seed}
        write_json(staging / "annotations.json", coco_document(records, annotations, categories, info))
        manifest = {
            "generator": "synth.physics",
            "version": _version(),
            "seed": seed,
            "n_images_total": n,
            "shard": f"{k}/{num}",
            "n_images": len(records),
            "n_annotations": len(annotations),
            "config": _jsonable(config.to_dict()),
            "backgrounds": [{"file": f.name, "sha256": sha256_file(f)} for f in files],
            "objects": None if meshes is None else [{"file": m.name, "class": m.class_name, "material": m.material}
                                                    for m in meshes],
            "spectrum": _spectrum_summary(config),
            "seeding": "image i uses numpy SeedSequence([seed, i])",
            "libraries": _library_versions(),
        }
        write_json(staging / "manifest.json", manifest)
    return manifest


def _spectrum_summary(config: PhysicsConfig) -> dict[str, Any]:
    from synth.physics.spectra import spekpy_hvl_mm_al

    tube = tube_spectrum(config.technique)
    detected = detected_spectrum(config)
    return {"kvp": config.technique.kvp, "filters": [list(f) for f in config.technique.filters],
            "mas": config.technique.mas, "mean_energy_kev": round(tube.mean_energy_kev(), 3),
            "hvl_mm_al": round(tube.hvl_mm("aluminum"), 4), "spekpy_hvl_mm_al": round(spekpy_hvl_mm_al(config.technique), 4),
            "energy_bins_kev": [round(float(e), 3) for e in detected.energies_kev],
            "detected_quanta_per_mm2_open_field": round(detected.total_photons_per_mm2, 1)}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _version() -> str:
    import synth

    return synth.__version__


def _library_versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("numpy", "scipy", "torch", "xraydb", "spekpy", "trimesh", "pycocotools", "pillow"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:  # pragma: no cover
            out[name] = "missing"
    return out

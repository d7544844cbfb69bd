"""Rendering of one labelled image over one background (radiograph insertion or CT projection).

A :class:`Renderer` holds what one background needs once (spectrum, calibration, CT projection, the
soft-tissue region); :meth:`Renderer.render_with_info` draws everything random of one image from the
image's stream, in a fixed order: the film (radiograph mode) or patient pose (CT mode), the objects and
their poses, then the noise. Equal streams give equal bytes.

Radiograph mode, per image: a new film (:mod:`synth.physics.film`), each object's primary
transmission through the patient's local water-equivalent thickness, scatter, its extra quantum noise,
detector and focal-spot blur and the console's edge enhancement (the film was processed so; the object's
contribution is linear and processed alone), fresh detector noise over the whole film, then the image's
processing curve. CT mode: the posed patient's material line integrals (:mod:`synth.physics.patient_pose`),
objects placed in soft tissue (:mod:`synth.physics.placement`), displaced patient material, scatter,
detector noise, blur, edge enhancement, window.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synth.physics.config import PhysicsConfig, detected_spectrum
from synth.physics.detector import (
    add_detector_noise,
    blur,
    blur_sigma_px,
    display_transform,
    scatter_signal,
    unsharp_mask,
)
from synth.physics.film import Film, draw_film, enhance, process
from synth.physics.geometry import Detector, Pose, axis_angle_matrix
from synth.physics.objects.registry import Part, RFOObject, make_object
from synth.physics.patient_pose import PatientPose, draw_patient_pose, warp_projection
from synth.physics.placement import draw_rotation, min_half_extent_mm, object_sample_points
from synth.physics.project import ROI
from synth.physics.scene import PlacedObject, annotation, layer_exponent, place_and_project, warm_rasteriser
from synth.physics.visibility import anatomical_sigma, blurred_noise_fraction, peak_cnr

PLACEMENT_ATTEMPTS = 120


class Renderer:
    """Renders labelled images for one background; holds the per-background precomputation.

    Args:
        config: the configuration with the background's acquisition already applied
            (:meth:`PhysicsConfig.with_acquisition`).
        background: a prepared :class:`~synth.physics.backgrounds.RadiographBackground` or
            :class:`~synth.physics.backgrounds.CTBackground`.
        mesh_pool: user meshes (replace the procedural objects of their classes).
    """

    def __init__(self, config: PhysicsConfig, background, mesh_pool: list | None = None) -> None:
        from synth.physics.materials import linear_attenuation_per_mm

        self.config = config
        self.background = background
        self.spectrum = detected_spectrum(config)
        self.mesh_pool = mesh_pool or []
        self._mu_cache: dict = {}
        self._mu_water = linear_attenuation_per_mm("water", self.spectrum.energies_kev)
        self._warm_attenuation_tables()
        warm_rasteriser()
        self.detector: Detector = background.detector
        self.flip_lr = config.mode == "ct"
        self.quanta_open = self.spectrum.total_photons_per_mm2 * self.detector.pixel_mm**2  # per pixel, no patient
        if config.mode == "ct":
            self._prepare_ct()
        else:
            self._body_rc = np.nonzero(background.body_mask)
            # The film rescaled into [0, headroom] so that objects denser than the patient stay visible.
            self._display_base = background.display * np.float32(config.display.radiograph_headroom)
            self._display_base_in_range = bool(self._display_base.min() >= 0.0 and self._display_base.max() <= 1.0)
            self._still_film = Film(background.display)
            self._noise_scale: float | None = None
            if config.film.enabled and config.noise.enabled:
                _ = self.fresh_noise_scale  # once here: forked workers inherit it

    def _warm_attenuation_tables(self) -> None:
        """Tabulate μ/ρ of every registered material at the spectrum's energies now, once per process."""
        from synth.physics.materials import list_materials, mass_attenuation
        from synth.physics.objects.registry import reference_attenuation

        for name in list_materials():
            mass_attenuation(name, self.spectrum.energies_kev)
            reference_attenuation(name)

    # --- one image ----------------------------------------------------------------------------------
    def render(self, rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """One image ``(H, W)`` float32 in ``[0, 1]`` and its annotations (without ids)."""
        image, annotations, _ = self.render_with_info(rng)
        return image, annotations

    def render_with_info(self, rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]], dict[str, Any]]:
        """:meth:`render` plus what was drawn for the image as a whole (film or patient pose)."""
        if self.config.mode == "ct":
            pose = self.draw_patient_pose(rng)
            placed = self.draw_scene(rng, pose=pose)
            image, annotations = self.render_ct(rng, placed, pose)
            return image, annotations, {"patient_pose": pose.to_dict(), **self._not_visible(placed, annotations)}
        film = self.draw_film(rng)
        placed = self.draw_scene(rng, film=film)
        image, annotations = self.render_radiograph(rng, placed, film)
        if self.config.display.photometric == "MONOCHROME1":
            image = 1.0 - image
        hidden = self._not_visible(placed, annotations)
        if not film.params:
            return image, annotations, hidden
        noise = round(self.fresh_noise_scale, 4) if self.config.noise.enabled else 0.0
        return image, annotations, {"film": {**film.params, "fresh_noise_scale": noise}, **hidden}

    @staticmethod
    def _not_visible(placed: list[PlacedObject], annotations: list[dict[str, Any]]) -> dict[str, Any]:
        """How many placed objects went unlabelled (below the visibility threshold, or no footprint)."""
        return {"objects_not_labelled": len(placed) - len(annotations)}

    def draw_patient_pose(self, rng: np.random.Generator) -> PatientPose:
        """This image's patient pose (CT mode), fitted to the CT's reach (:func:`~synth.physics.patient_pose.fit_pose`)."""
        det = self.detector
        return draw_patient_pose(rng, self.config.ct_pose, det.cols * det.pixel_mm / det.magnification,
                                 self.background.pose_limits)

    def draw_film(self, rng: np.random.Generator) -> Film:
        """This image's film (the prepared film itself when the variation is off; no number drawn then)."""
        cfg = self.config
        if not cfg.film.enabled:
            return self._still_film
        return draw_film(self.background.display, rng, cfg.film, self.detector.pixel_mm, cfg.display.radiograph_headroom)

    # --- object sampling ----------------------------------------------------------------------------
    def _draw_object(self, class_name: str, rng: np.random.Generator) -> RFOObject:
        if self.mesh_pool:
            pool = [m for m in self.mesh_pool if m.class_name == class_name]
            if pool:
                from synth.physics.materials import get_material

                mesh = pool[int(rng.integers(len(pool)))]
                density = mesh.density_g_cm3 or get_material(mesh.material).density_g_cm3
                part = Part("mesh", mesh.vertices_mm, mesh.faces, mesh.material, density)
                return RFOObject(mesh.class_name, (part,), {"mesh": mesh.name})
        return make_object(class_name, rng)

    def _rotation(self, obj: RFOObject, rng: np.random.Generator) -> np.ndarray:
        return draw_rotation(obj.class_name, obj.vertices_mm, rng, self.config.orientation)

    def _pose_radiograph(self, obj: RFOObject, rng: np.random.Generator, film: Film) -> Pose:
        det = self.detector
        rotation = self._rotation(obj, rng)
        rows, cols = self._body_rc
        for _ in range(64):  # a body pixel of this image's film (the film is warped per image)
            r, c = int(rng.integers(det.rows)), int(rng.integers(det.cols))
            fr, fc = film.film_pixel(np.array([r]), np.array([c]))
            if self.background.body_mask[fr[0], fc[0]]:
                break
        else:
            k = int(rng.integers(len(rows)))
            r, c = int(rows[k]), int(cols[k])
        if obj.external:
            to_detector = rng.uniform(10, 30) if rng.random() < 0.6 else rng.uniform(220, 260)
        else:
            to_detector = rng.uniform(50, 220)
        depth = det.source_to_detector_mm - to_detector - det.source_to_object_mm
        scale = (depth + det.source_to_object_mm) / det.source_to_detector_mm * det.pixel_mm
        xy = np.array([(c + rng.uniform(-0.5, 0.5) - (det.cols - 1) / 2) * scale,
                       (r + rng.uniform(-0.5, 0.5) - (det.rows - 1) / 2) * scale])
        return Pose(rotation, np.array([xy[0], xy[1], depth]))

    def _pose_ct(self, obj: RFOObject, rng: np.random.Generator, patient: PatientPose) -> Pose | None:
        """A pose in the posed patient: external objects on the skin, internal ones wholly in soft tissue."""
        bg, det = self.background, self.detector
        rotation = patient.rotation @ self._rotation(obj, rng)
        if obj.external:
            row, col = self._ct_body_pixels[int(rng.integers(len(self._ct_body_pixels)))]
            depth = bg.anterior_mm + 4.0 if rng.random() < 0.7 else bg.posterior_mm - 4.0
            scale = (depth + det.source_to_object_mm) / det.source_to_detector_mm * det.pixel_mm
            centre_ct = np.array([(col - (det.cols - 1) / 2) * scale, (row - (det.rows - 1) / 2) * scale, depth])
            return Pose(rotation, patient.to_image(centre_ct[None])[0])  # the skin moves with the habitus
        region = bg.soft_tissue
        if region is None:  # no soft-tissue map: the centre in a soft-tissue voxel (as before)
            centre = bg.body_voxels[int(rng.integers(len(bg.body_voxels)))] + rng.uniform(-2, 2, size=3)
            return Pose(rotation, patient.to_image(centre[None])[0])
        thinnest = min_half_extent_mm(obj.vertices_mm) + 1.0
        longest = float(np.ptp(obj.vertices_mm, axis=0).max()) / 2.0
        # Every other attempt starts from deep soft tissue (a third of the object's half-length from any
        # bone, gas or lung), where long instruments fit far more often.
        pools = (region.candidates(max(thinnest, longest / 3.0)), region.candidates(thinnest))
        points = object_sample_points(obj.parts)
        turn = np.eye(3)
        for attempt in range(PLACEMENT_ATTEMPTS):
            candidates = pools[attempt % 2]
            ijk = region.centres_ijk[candidates[int(rng.integers(len(candidates)))]]
            centre = patient.to_image(bg.voxel_to_object(ijk[None] + rng.uniform(-0.5, 0.5, size=3)))[0]
            row, col = det.project(centre[None])[0]
            if not (0.08 * det.rows < row < 0.92 * det.rows and 0.08 * det.cols < col < 0.92 * det.cols):
                continue  # the centre must lie well inside the field
            pose = Pose(turn @ rotation, centre)
            if region.contains(bg.object_to_voxel(patient.to_ct(pose.apply(points)))).all():
                return pose
            # Another in-plane heading about the beam keeps the prior's tilt.
            turn = axis_angle_matrix(np.array([0.0, 0.0, 1.0]), rng.uniform(0.0, 2.0 * np.pi))
        return None

    def draw_scene(self, rng: np.random.Generator, film: Film | None = None, pose: PatientPose | None = None
                   ) -> list[PlacedObject]:
        """Objects and poses of one image (possibly none). A slot keeps its class over its attempts."""
        cfg = self.config
        n = 0 if (cfg.max_objects == 0 or rng.random() < cfg.negative_fraction) else int(rng.integers(1, cfg.max_objects + 1))
        film = film if film is not None else (self._still_film if cfg.mode == "radiograph" else None)
        patient = pose if pose is not None else PatientPose()
        placed = []
        for _ in range(n):
            class_name = cfg.classes[int(rng.integers(len(cfg.classes)))]
            for _attempt in range(5):
                obj = self._draw_object(class_name, rng)
                if cfg.mode == "ct":
                    obj_pose = self._pose_ct(obj, rng, patient)
                    if obj_pose is None:
                        continue
                else:
                    obj_pose = self._pose_radiograph(obj, rng, film)
                result = place_and_project(obj, obj_pose, self.detector, cfg.supersample, with_depth=cfg.mode == "ct")
                if result is not None:
                    placed.append(result)
                    break
        return placed

    # --- radiograph mode ------------------------------------------------------------------------------
    def _object_ratio_radiograph(self, placed: PlacedObject, film: Film) -> np.ndarray:
        """Noise-free primary transmission ratio ``R`` of one object over its ROI."""
        energies = self.spectrum.energies_kev
        mask = np.zeros((placed.roi.rows, placed.roi.cols), dtype=bool)
        for layer in placed.layers:
            mask |= layer.lengths_mm > 0
        ratio = np.ones(mask.shape)
        if not mask.any():
            return ratio
        water = film.resample(self.background.water_mm, *placed.roi.slices)[mask].astype(np.float32)
        weights = self.spectrum.integrating_weights().astype(np.float32)[:, None] * np.exp(
            -self._mu_water.astype(np.float32)[:, None] * water[None])
        host = "air" if placed.obj.external else "soft_tissue"
        exponent = layer_exponent(placed.layers, mask, self._mu_cache, energies, host)
        ratio[mask] = (weights * np.exp(-exponent)).sum(axis=0) / weights.sum(axis=0)
        return ratio

    def _log_noise_variance(self, attenuation: np.ndarray, ratio: np.ndarray | float = 1.0) -> np.ndarray:
        """Variance of the log-signal at log-attenuation ``A`` times ``ratio``: ``var(q)/q²``, ``q`` the quanta."""
        quanta = np.maximum(self.quanta_open * np.exp(-attenuation.astype(np.float64)) * ratio, 1.0)
        return self.config.noise.variance_quanta2(quanta) / quanta**2

    def render_radiograph(self, rng: np.random.Generator, placed: list[PlacedObject], film: Film | None = None
                          ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The image over ``film`` (default the prepared film) with the placed objects, and their labels."""
        cfg, bg, det = self.config, self.background, self.detector
        film = film if film is not None else self._still_film
        varied = film.map_x is not None
        headroom = cfg.display.radiograph_headroom
        display = film.display * np.float32(headroom) if varied else self._display_base.copy()
        annotations = []
        changed: list[ROI] = []
        slope = bg.display_per_attenuation * headroom
        mtf_sigma = blur_sigma_px(cfg.blur, det.pixel_mm, 1.0)
        film_amount = film.unsharp_amount if varied else 0.0  # the film's own enhancement, applied by process()
        film_px = film.unsharp_sigma_px if film_amount > 0 else 0.0
        for obj in placed:
            ratio = self._object_ratio_radiograph(obj, film)
            magnification = det.source_to_detector_mm / (det.source_to_object_mm + obj.pose.translation_mm[2])
            sigma = blur_sigma_px(cfg.blur, det.pixel_mm, magnification)
            sharpen = cfg.display.unsharp_sigma_mm / det.pixel_mm if cfg.display.unsharp_amount > 0 else 0.0
            pad = int(np.ceil(3 * max(sigma, sharpen, film_px))) + 1
            roi = obj.roi.padded(pad, det)
            inner = (slice(obj.roi.row0 - roi.row0, obj.roi.row0 - roi.row0 + obj.roi.rows),
                     slice(obj.roi.col0 - roi.col0, obj.roi.col0 - roi.col0 + obj.roi.cols))
            full_ratio = np.ones((roi.rows, roi.cols))
            full_ratio[inner] = ratio
            spr = film.resample(bg.spr, *roi.slices).astype(np.float64) if cfg.scatter.enabled else 0.0
            total_ratio = (full_ratio + spr) / (1.0 + spr)  # scatter of the patient is unchanged by a small object
            clean = -np.log(total_ratio)
            # The label: where the object's noise-free signal at the detector (after the MTF and focal-spot
            # blur, before the console's edge enhancement) changes the log-signal by at least the threshold,
            # either way (a wadded sponge's cotton and gas are darker than the tissue they displace).
            blurred = blur(clean, sigma)
            footprint = np.abs(blurred) >= cfg.label_min_attenuation
            ann = annotation(obj, footprint, det.shape, False, -np.log(ratio), roi)
            attenuation = film.resample(bg.attenuation, *roi.slices)
            # Visible as displayed: the object's signal, the film's texture (its display in log-signal units)
            # and the fresh noise the renderer adds (blurred by the scintillator alone: the focal spot blurs
            # the object, not the detector), each after every enhancement the image gets: the console's
            # (already in the film's display and in the noise's gain) and the film's own, applied last by
            # process(), whose curve then scales all three alike.
            shown = unsharp_mask(blurred, cfg.display, det.pixel_mm)
            around, seen = film.display[roi.slices], shown
            if varied:
                around, seen = enhance(around, film), enhance(shown, film)
            texture = anatomical_sigma(around / np.float32(bg.display_per_attenuation), det.pixel_mm)
            quantum = self._fresh_noise_log_sigma(attenuation) * blurred_noise_fraction(mtf_sigma) * (1.0 + film_amount)
            cnr = peak_cnr(seen, footprint, quantum, texture)
            if ann is None or cnr < cfg.label_min_cnr:
                continue
            ann["visibility_cnr"] = round(cnr, 2)
            delta = clean
            if cfg.noise.enabled:
                extra = np.clip(self._log_noise_variance(attenuation, total_ratio) - self._log_noise_variance(attenuation),
                                0.0, None)
                delta = clean + np.sqrt(extra) * rng.standard_normal(delta.shape) * (total_ratio < 1.0)
                delta = unsharp_mask(blur(delta, sigma), cfg.display, det.pixel_mm)
            else:
                delta = shown
            display[roi.slices] = display[roi.slices] + (delta * slope).astype(np.float32)
            changed.append(roi)
            annotations.append(ann)
        if varied:
            if cfg.noise.enabled:
                display += self._film_noise(rng, film, slope)
            return process(display, film), annotations
        if not self._display_base_in_range:
            return np.clip(display, 0.0, 1.0), annotations
        for roi in changed:  # elsewhere the background is already in [0, 1]; clipping is idempotent
            np.clip(display[roi.slices], 0.0, 1.0, out=display[roi.slices])
        return display, annotations

    def _film_noise_sigma(self, display: np.ndarray, slope: float) -> np.ndarray:
        """Per-pixel σ (display units) of the detector model's noise over a film-frame display."""
        import cv2

        bg = self.background
        h, w = display.shape
        small = cv2.resize(display, (max(w // 4, 1), max(h // 4, 1)), interpolation=cv2.INTER_AREA)
        attenuation = bg.a_lo + (small.astype(np.float64) - bg.p_lo) / bg.display_per_attenuation
        sigma = (slope * self._fresh_noise_log_sigma(attenuation, scaled=False)).astype(np.float32)
        return cv2.resize(sigma, (w, h), interpolation=cv2.INTER_LINEAR)

    def _fresh_noise_log_sigma(self, attenuation: np.ndarray, *, scaled: bool = True) -> np.ndarray:
        """Per-pixel σ (log-signal units, before the scintillator's blur) of the fresh noise a film gets at
        log-attenuation ``attenuation``: the detector model's, times the console's edge-enhancement gain on
        fine noise, times :attr:`fresh_noise_scale` (``scaled``). The label rule judges objects against it."""
        gain = 1.0 + max(self.config.display.unsharp_amount, 0.0)
        sigma = gain * np.sqrt(self._log_noise_variance(attenuation))
        return sigma * self.fresh_noise_scale if scaled else sigma

    def _white_noise(self, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
        """Unit white noise through the scintillator's MTF."""
        import cv2

        white = rng.standard_normal(shape, dtype=np.float32)
        mtf = blur_sigma_px(self.config.blur, self.detector.pixel_mm, 1.0)
        return cv2.GaussianBlur(white, (0, 0), mtf, borderType=cv2.BORDER_REPLICATE) if mtf > 0 else white

    @property
    def fresh_noise_scale(self) -> float:
        """The fresh noise's scale: the film's own measured noise over the model's, at most 1 (computed once).

        The detector model at the header's dose (with the console's assumed edge enhancement) may
        over- or underestimate what the film shows. Both are measured alike — Immerkær's estimator
        per 32-pixel block (:func:`synth.physics.film.block_noise_sigma`) on the film and on one draw of
        the model's noise — and the 20th percentile of their ratio over the body's blocks (the flattest,
        least anatomy) scales the model down, so that fresh noise is about as strong as the film's own.
        """
        if self._noise_scale is None:
            from synth.physics.film import block_noise_sigma

            bg, cfg = self.background, self.config
            headroom = cfg.display.radiograph_headroom
            slope = bg.display_per_attenuation * headroom
            shown = bg.display * np.float32(headroom)
            model = self._film_noise_sigma(bg.display, slope) * self._white_noise(np.random.default_rng(0), shown.shape)
            film_sigma, model_sigma = block_noise_sigma(shown), block_noise_sigma(model)
            h, w = film_sigma.shape
            body = bg.body_mask[:h * 32, :w * 32].reshape(h, 32, w, 32).all(axis=(1, 3))
            ratio = film_sigma[body] / np.maximum(model_sigma[body], 1e-12)
            self._noise_scale = float(np.clip(np.percentile(ratio, 20), 0.0, 1.0)) if ratio.size else 1.0
        return self._noise_scale

    def _film_noise(self, rng: np.random.Generator, film: Film, slope: float) -> np.ndarray:
        """Fresh detector noise at the film's own dose, in display units (see :mod:`synth.physics.film`)."""
        sigma = self._film_noise_sigma(film.display, slope) * np.float32(self.fresh_noise_scale)
        return self._white_noise(rng, film.display.shape) * sigma

    # --- CT mode -----------------------------------------------------------------------------------------
    def _prepare_ct(self) -> None:
        from synth.physics.backgrounds import CT_MATERIALS, material_mass_attenuation

        bg = self.background
        self._ct_mass_mu = material_mass_attenuation(self.spectrum, CT_MATERIALS)  # (M, K)
        self._ct_primary = self._primary(bg.material_g_cm2)  # relative to the open beam
        soft = bg.material_g_cm2["soft_tissue"] + bg.material_g_cm2["cortical_bone"]
        body = soft > 0.125 * soft.max()
        rows, cols = np.nonzero(body)
        keep = (rows > 0.05 * len(body)) & (rows < 0.95 * len(body)) & (cols > 0.05 * len(body)) & (cols < 0.95 * len(body))
        self._ct_body_pixels = np.column_stack([rows[keep], cols[keep]])

    def _primary(self, maps: dict[str, np.ndarray]) -> np.ndarray:
        from synth.physics.backgrounds import CT_MATERIALS

        stacked = np.stack([maps[m] for m in CT_MATERIALS]).astype(np.float32)  # (M, H, W)
        weights = self.spectrum.integrating_weights()
        primary = np.zeros(stacked.shape[1:], dtype=np.float64)
        for k in range(len(weights)):  # one energy at a time keeps memory at a few images
            primary += weights[k] * np.exp(-np.tensordot(self._ct_mass_mu[:, k].astype(np.float32), stacked, axes=1))
        return primary

    def _object_primary_ct(self, placed: PlacedObject, maps: dict[str, np.ndarray], patient: PatientPose) -> np.ndarray:
        """The primary over the object's ROI with the object in place (patient material displaced)."""
        from synth.physics.backgrounds import CT_MATERIALS

        bg, det = self.background, self.detector
        energies = self.spectrum.energies_kev
        sl = placed.roi.slices
        mask = np.ones((placed.roi.rows, placed.roi.cols), dtype=bool)
        stacked = np.stack([maps[m][sl] for m in CT_MATERIALS]).astype(np.float32)
        exponent = np.tensordot(self._ct_mass_mu.T.astype(np.float32), stacked, axes=1)  # (K, h, w)
        exponent += layer_exponent(placed.layers, mask, self._mu_cache, energies, None).reshape(exponent.shape)
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
            index, density = bg.sample_materials(patient.to_ct(points))
            length = layer.lengths_mm[hit]
            displaced = np.zeros((len(energies), int(hit.sum())), dtype=np.float32)
            for k in range(len(CT_MATERIALS)):
                sel = index == k
                displaced[:, sel] = self._ct_mass_mu[k][:, None] * density[sel][None] * length[sel][None] / 10.0
            exponent[:, hit] -= displaced
        weights = self.spectrum.integrating_weights().astype(np.float32)
        return np.tensordot(weights, np.exp(-exponent), axes=1).astype(np.float64)

    def _visibility_ct(self, obj: PlacedObject, before: np.ndarray, after: np.ndarray, footprint: np.ndarray,
                       base: np.ndarray, scatter: np.ndarray | None) -> float:
        """Peak CNR of one object (:mod:`synth.physics.visibility`) with the patient's scatter diluting it."""
        cfg, det = self.config, self.detector
        sl = obj.roi.slices
        s_roi = scatter[sl] if scatter is not None else 0.0
        delta = -np.log(np.maximum(after + s_roi, 1e-300) / np.maximum(before + s_roi, 1e-300))
        sigma = blur_sigma_px(cfg.blur, det.pixel_mm,
                              det.source_to_detector_mm / (det.source_to_object_mm + obj.pose.translation_mm[2]))
        quanta = self.quanta_open * (before + s_roi)
        quantum = np.sqrt(cfg.noise.variance_quanta2(quanta) / np.maximum(quanta, 1.0)**2) * blurred_noise_fraction(sigma)
        pad = obj.roi.padded(int(np.ceil(2 * 4.0 / det.pixel_mm)), det)  # the neighbourhood: two anatomy scales
        patient = base[pad.slices] + (scatter[pad.slices] if scatter is not None else 0.0)
        texture = anatomical_sigma(-np.log(np.maximum(patient, 1e-300)), det.pixel_mm)
        return peak_cnr(blur(delta, sigma), footprint, quantum, texture)

    def render_ct(self, rng: np.random.Generator, placed: list[PlacedObject], pose: PatientPose | None = None
                  ) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The posed patient's projection with the placed objects, and their labels."""
        cfg, det = self.config, self.detector
        patient = pose if pose is not None else PatientPose()
        if patient.is_identity:
            maps, base = self.background.material_g_cm2, self._ct_primary
        else:
            bg = self.background
            source = bg.reach_g_cm2 if bg.reach_g_cm2 is not None else bg.material_g_cm2
            maps = warp_projection(source, patient, det.magnification, det.pixel_mm, det.shape)
            base = self._primary(maps)
        primary = base.copy()
        annotations = []
        scatter = None
        if placed and cfg.scatter.enabled:  # the patient's scatter, unchanged by a small object
            scatter = scatter_signal(base, -np.log(np.maximum(base, 1e-12)), cfg.scatter, det.pixel_mm,
                                     float(np.mean(self._mu_water)))
        for obj in placed:
            before = primary[obj.roi.slices].copy()
            # Objects overlapping earlier ones multiply their transmissions.
            after = self._object_primary_ct(obj, maps, patient) * (before / np.maximum(base[obj.roi.slices], 1e-300))
            log_att = -np.log(np.maximum(after, 1e-300) / np.maximum(before, 1e-300))
            # Either way, as in radiograph mode: a sponge's cotton and gas displace denser tissue and darken it.
            footprint = np.abs(log_att) >= cfg.label_min_attenuation
            ann = annotation(obj, footprint, det.shape, self.flip_lr, log_att)
            primary[obj.roi.slices] = after
            if ann is None:
                continue
            cnr = self._visibility_ct(obj, before, after, footprint, base, scatter)
            if cnr >= cfg.label_min_cnr:
                ann["visibility_cnr"] = round(cnr, 2)
                annotations.append(ann)
        attenuation = -np.log(np.maximum(primary, 1e-12))
        signal = primary.copy()
        if cfg.scatter.enabled:
            signal += scatter_signal(primary, attenuation, cfg.scatter, det.pixel_mm, float(np.mean(self._mu_water)))
        quanta = add_detector_noise(signal * self.quanta_open, rng, cfg.noise)
        mean_depth = np.mean([o.pose.translation_mm[2] for o in placed]) if placed else 0.0
        sigma = blur_sigma_px(cfg.blur, det.pixel_mm, det.source_to_detector_mm / (det.source_to_object_mm + mean_depth))
        quanta = blur(quanta, sigma)
        log_image = unsharp_mask(-np.log(np.maximum(quanta, 0.5) / self.quanta_open), cfg.display, det.pixel_mm)
        lo, hi = np.percentile(log_image[::4, ::4], cfg.display.window_percentiles)
        image = display_transform(log_image, float(lo), float(hi), cfg.display)
        if self.flip_lr:
            image = image[:, ::-1]
        return np.ascontiguousarray(image), annotations

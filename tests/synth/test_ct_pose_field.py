"""CT mode: every output pixel of a posed patient is a ray that stays inside the CT where it crosses the body."""

from __future__ import annotations

import numpy as np
import pytest

from synth.physics.config import PhysicsConfig
from synth.physics.patient_pose import source_coordinates


def _rays_inside(renderer, n_poses: int, seed: int) -> None:
    """Assert that every output pixel samples the reach projection, through rays inside the slab at the body."""
    bg, det = renderer.background, renderer.detector
    shape = next(iter(bg.reach_g_cm2.values())).shape
    sid, sod = det.source_to_detector_mm, det.source_to_object_mm
    half_slab_mm = (bg.hu.shape[2] - 1) / 2.0 * bg.spacing_mm[2]
    half_lateral_mm = (bg.hu.shape[0] - 1) / 2.0 * bg.spacing_mm[0]
    moved = 0
    for i in range(n_poses):
        pose = renderer.draw_patient_pose(np.random.default_rng([seed, i]))
        moved += pose.shift_mm != (0.0, 0.0) and pose.rotation_rad != 0.0
        map_x, map_y = source_coordinates(pose, det.shape, shape, det.magnification, det.pixel_mm)
        tol = 1e-3  # pixels: float32 rounding of the map at a corner fitted exactly to the reach
        assert map_x.min() >= -tol and map_y.min() >= -tol
        assert map_x.max() <= shape[1] - 1 + tol and map_y.max() <= shape[0] - 1 + tol
        # The CT ray through each sampled detector point, at the body's front surface (its farthest reach).
        at_front = (sod + bg.anterior_mm) / sid * det.pixel_mm
        cranio_caudal = np.abs(map_y - (shape[0] - 1) / 2.0) * at_front
        lateral = np.abs(map_x - (shape[1] - 1) / 2.0) * at_front
        assert cranio_caudal.max() <= half_slab_mm + 1e-3
        assert lateral.max() <= half_lateral_mm + 1e-3
    assert moved >= n_poses // 2  # the variation is still there


def test_posed_rays_stay_inside_the_phantom_slab(tmp_path) -> None:
    """The phantom's body runs through its whole 120 mm slab, like a chest CT cut above and below."""
    from synth.physics.generate import build_renderer
    from tests.synth.test_placement import _phantom

    _phantom(tmp_path)
    renderer = build_renderer(PhysicsConfig(mode="ct", size=48), tmp_path / "phantom.nii.gz")
    _rays_inside(renderer, 60, 0)


@pytest.mark.slow
def test_real_ct_posed_rays_stay_inside_the_slab() -> None:
    """The embedded CT (133 slices x 2.5 mm; about 15 s of set-up)."""
    from synth.physics.generate import build_renderer

    _rays_inside(build_renderer(PhysicsConfig(mode="ct", size=128, max_objects=0)), 80, 1)

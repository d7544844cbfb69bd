"""Detector stages against hand-computed cases, and radiograph insertion invariants."""

from __future__ import annotations

import numpy as np
import pytest

from synth.physics.detector import (
    BlurConfig,
    DisplayConfig,
    NoiseConfig,
    ScatterConfig,
    add_quantum_noise,
    blur_sigma_px,
    display_transform,
    scatter_signal,
)


def test_scatter_of_uniform_slab_has_the_reference_spr() -> None:
    mu = 0.02  # 1/mm
    thickness = 200.0
    attenuation = np.full((37, 23), mu * thickness)  # non-square
    primary = np.exp(-attenuation)
    config = ScatterConfig(spr_reference=0.45, reference_water_mm=200.0, kernel_sigma_mm=20.0)
    scatter = scatter_signal(primary, attenuation, config, pixel_mm=2.0, mu_water_per_mm=mu)
    np.testing.assert_allclose(scatter / primary, 0.45, rtol=1e-6)
    # Half the thickness: the model's SPR scales with the log-attenuation.
    half = scatter_signal(np.exp(-attenuation / 2), attenuation / 2, config, 2.0, mu)
    np.testing.assert_allclose(half / np.exp(-attenuation / 2), 0.225, rtol=1e-6)
    assert not scatter_signal(primary, attenuation, ScatterConfig(enabled=False), 2.0, mu).any()


def test_quantum_noise_statistics() -> None:
    rng = np.random.default_rng(0)
    for lam in (4.0, 2500.0):  # Poisson branch and Gaussian branch
        samples = add_quantum_noise(np.full(200_000, lam), rng, NoiseConfig())
        assert samples.mean() == pytest.approx(lam, rel=0.01)
        assert samples.var() == pytest.approx(lam, rel=0.03)
    assert np.all(add_quantum_noise(np.full(5, 7.0), rng, NoiseConfig(enabled=False)) == 7.0)


def test_blur_sigma_from_mtf50_and_focal_spot() -> None:
    # MTF(f) = exp(-2 pi^2 sigma^2 f^2) = 0.5 at f = 2 lp/mm -> sigma = sqrt(ln 2 / 2) / (2 pi) mm.
    sigma_det_mm = np.sqrt(np.log(2) / 2) / (2 * np.pi)
    assert blur_sigma_px(BlurConfig(mtf50_lp_mm=2.0, focal_spot_mm=0.0), 0.1, 1.2) == pytest.approx(sigma_det_mm / 0.1)
    focal = 1.2 * 0.2 / 2.355
    expected = np.hypot(sigma_det_mm, focal) / 0.1
    assert blur_sigma_px(BlurConfig(mtf50_lp_mm=2.0, focal_spot_mm=1.2), 0.1, 1.2) == pytest.approx(expected)
    assert blur_sigma_px(BlurConfig(enabled=False), 0.1, 1.2) == 0.0


def test_display_transform_window_and_photometric() -> None:
    a = np.array([[0.0, 1.0, 2.0, 3.0]])
    m2 = display_transform(a, 1.0, 3.0, DisplayConfig())
    np.testing.assert_allclose(m2, [[0.0, 0.0, 0.5, 1.0]])
    m1 = display_transform(a, 1.0, 3.0, DisplayConfig(photometric="MONOCHROME1"))
    np.testing.assert_allclose(m1, 1.0 - m2)


def test_radiograph_insertion_changes_only_the_object_neighbourhood(tmp_path) -> None:
    from rfo_bench.io.images import write_png16
    from synth.physics.generate import PhysicsConfig, build_renderer

    # A synthetic "radiograph": a bright body ellipse on a dark field, 96 x 80 pixels.
    yy, xx = np.mgrid[0:96, 0:80]
    body = ((yy - 48) / 44.0) ** 2 + ((xx - 40) / 36.0) ** 2 < 1
    pixels = np.where(body, 0.6 + 0.2 * np.sin(xx / 7.0), 0.05)
    write_png16(tmp_path / "bg.png", pixels)
    # label_min_cnr=0: the sine "anatomy" is far stronger than a real film's texture; this test is about where pixels change.
    config = PhysicsConfig(size=64, classes=("clamp",), max_objects=1, negative_fraction=0.0, body_threshold_mm=30.0,
                           label_min_cnr=0.0)
    renderer = build_renderer(config, tmp_path / "bg.png")
    rng = np.random.default_rng(5)
    placed = renderer.draw_scene(rng)
    image, annotations = renderer.render_radiograph(rng, placed)
    assert len(annotations) == 1
    baseline = renderer.background.display * np.float32(config.display.radiograph_headroom)
    changed = np.abs(image - baseline) > 1e-6
    roi = placed[0].roi.padded(6, renderer.detector)
    outside = np.ones_like(changed)
    outside[roi.slices] = False
    assert changed.any() and not changed[outside].any()
    # A steel clamp is denser than tissue: its footprint gets brighter (MONOCHROME2).
    x, y, w, h = (int(v) for v in annotations[0]["bbox"])
    assert (image - baseline)[y:y + h, x:x + w].max() > 0.02


def test_gaussian_equals_scipy_reference() -> None:
    from scipy.ndimage import gaussian_filter

    from synth.physics.detector import gaussian, lowpass

    image = np.random.default_rng(3).random((41, 29))  # non-square, smaller than the kernel for σ = 9
    for sigma in (0.7, 2.5, 9.0):
        np.testing.assert_allclose(gaussian(image, sigma), gaussian_filter(image, sigma, mode="nearest"),
                                   rtol=0, atol=1e-12)
    smooth = np.outer(np.sin(np.linspace(0, 3, 300)), np.cos(np.linspace(0, 2, 260)))
    # Wide kernels run on a coarse grid: close to the exact filter on a smooth image.
    np.testing.assert_allclose(lowpass(smooth, 40.0), gaussian_filter(smooth, 40.0, mode="nearest"), atol=0.025)

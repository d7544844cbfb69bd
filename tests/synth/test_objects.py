"""The procedural RFO library: closed meshes, no overlapping parts, embedded parts inside their host."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from rfo_bench.categories import CATEGORY_BY_NAME
from synth.physics.objects.meshes import load_mesh, load_mesh_dir
from synth.physics.objects.primitives import winding_number
from synth.physics.objects.registry import list_object_classes, make_object
from toolkit_core.errors import UserInputError


def test_every_class_has_a_generator() -> None:
    assert set(list_object_classes()) == set(CATEGORY_BY_NAME)


def test_the_registry_finds_every_generator_module_without_being_told() -> None:
    """A fresh process that imports only the registry still draws rigid and textile objects: the
    generator modules register themselves when the registry discovers them (no import cycle needed)."""
    import subprocess
    import sys

    code = ("import numpy as np; from synth.physics.objects.registry import list_object_classes, make_object; "
            "rng = np.random.default_rng(0); "
            "print(sorted(list_object_classes())); print(make_object('sponge', rng).class_name, "
            "make_object('needle', rng).class_name)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    classes, drawn = done.stdout.strip().splitlines()
    assert classes == str(sorted(CATEGORY_BY_NAME)) and drawn == "sponge needle"


@pytest.mark.parametrize("name", sorted(CATEGORY_BY_NAME))
def test_object_parts_are_closed_and_disjoint(name: str) -> None:
    obj = make_object(name, np.random.default_rng(7))
    assert obj.params
    by_name = {p.name: p for p in obj.parts}
    rng = np.random.default_rng(0)
    for part in obj.parts:
        mesh = trimesh.Trimesh(part.vertices_mm, part.faces, process=False)
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, part.name
        probe = mesh.vertices - mesh.vertex_normals * 1e-3
        probe = probe[rng.choice(len(probe), min(60, len(probe)), replace=False)]
        lo, hi = part.vertices_mm.min(axis=0), part.vertices_mm.max(axis=0)
        for other in obj.parts:
            if other is part:
                continue
            olo, ohi = other.vertices_mm.min(axis=0), other.vertices_mm.max(axis=0)
            if np.any(olo > hi) or np.any(ohi < lo):
                continue  # disjoint bounding boxes cannot overlap
            w = winding_number(probe, (other.vertices_mm, other.faces))
            if other.name == part.host:
                assert w.min() > 0.5, f"{part.name} pokes out of {other.name}"
            else:
                assert w.max() < 0.5, f"{part.name} overlaps {other.name}"
        if part.host is not None:
            assert part.host in by_name


@pytest.mark.parametrize("name", sorted(CATEGORY_BY_NAME))
def test_object_parts_do_not_overlap_themselves(name: str) -> None:
    """A self-intersecting surface is still watertight, but its inside is counted twice by a ray: the
    winding number, 1 inside a simple closed surface, reaches 2 where it folds over itself."""
    rng = np.random.default_rng(11)
    for seed in range(3):
        obj = make_object(name, np.random.default_rng(seed))
        for part in obj.parts:
            lo, hi = part.vertices_mm.min(axis=0), part.vertices_mm.max(axis=0)
            points = lo + (hi - lo) * rng.random((300, 3))
            w = winding_number(points, (part.vertices_mm, part.faces))
            assert np.all(np.abs(w - np.clip(np.round(w), 0, 1)) < 0.05), (name, seed, part.name, w.max())


def test_blade_outlines_are_simple_polygons() -> None:
    from synth.physics.objects.library import _blade_outline
    from synth.physics.objects.primitives import _triangulate_polygon

    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(60):
        outline, size, _length = _blade_outline(rng)
        sizes.add(size)
        x, y = outline[:, 0], outline[:, 1]
        shoelace = 0.5 * abs(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        t = outline[_triangulate_polygon(outline)]
        areas = 0.5 * np.abs((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1])
                             - (t[:, 1, 1] - t[:, 0, 1]) * (t[:, 2, 0] - t[:, 0, 0]))
        # The ears tile the polygon exactly only when it is simple (no edge crosses another).
        assert areas.sum() == pytest.approx(shoelace, rel=1e-9), size
    assert sizes == {"10", "11", "15"}


def test_same_seed_same_object() -> None:
    a = make_object("sponge", np.random.default_rng(3))
    b = make_object("sponge", np.random.default_rng(3))
    assert a.params == b.params
    np.testing.assert_array_equal(a.vertices_mm, b.vertices_mm)


def test_unknown_class_is_a_user_error() -> None:
    with pytest.raises(UserInputError):
        make_object("teapot", np.random.default_rng(0))


def test_mesh_files(tmp_path) -> None:
    good = tmp_path / "needle_a.stl"
    trimesh.creation.capsule(radius=0.5, height=10).export(good)
    open_mesh = trimesh.creation.icosphere(subdivisions=2)
    broken = trimesh.Trimesh(open_mesh.vertices, open_mesh.faces[:-30], process=False)
    bad = tmp_path / "blade_b.obj"
    broken.export(bad)
    vertices, faces = load_mesh(good)
    assert np.allclose(vertices.mean(axis=0), 0, atol=0.5)
    garbage = tmp_path / "clamp_c.obj"
    garbage.write_text("this is not a mesh\n")
    with pytest.raises(UserInputError):
        load_mesh(garbage)
    with pytest.raises(UserInputError, match="watertight"):
        load_mesh_dir(tmp_path)
    bad.unlink()
    garbage.unlink()
    meshes = load_mesh_dir(tmp_path)
    assert [m.class_name for m in meshes] == ["needle"]

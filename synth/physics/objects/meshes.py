"""Loading and checking user meshes (``.obj`` / ``.stl`` / ``.ply``) of retained foreign objects.

A path length is only defined for a closed, consistently oriented surface. Meshes are checked with
trimesh; an open or inconsistently wound mesh is repaired (duplicate vertices merged, holes filled,
normals unified and pointed outwards) with a warning, and refused with a clear reason when repair
cannot make it watertight — a wrong path length is never produced silently.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

MESH_SUFFIXES = (".obj", ".stl", ".ply", ".off", ".glb", ".gltf")


def validate_mesh(vertices: np.ndarray, faces: np.ndarray, source: str = "mesh",
                  repair: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(vertices, faces)`` of a watertight, outward-oriented triangle mesh.

    Args:
        vertices: ``(V, 3)`` float coordinates in mm.
        faces: ``(F, 3)`` vertex indices.
        source: name shown in messages (a file name).
        repair: try to repair an open or inconsistently wound mesh (with a warning).

    Raises:
        UserInputError: empty, non-finite, or not watertight (after repair when allowed).
    """
    import trimesh

    v = np.asarray(vertices, dtype=np.float64)
    f = np.asarray(faces, dtype=np.int64)
    if v.ndim != 2 or v.shape[1] != 3 or f.ndim != 2 or f.shape[1] != 3 or len(f) == 0:
        raise UserInputError("mesh needs (V, 3) vertices and at least one (F, 3) triangle", file=source,
                             value=(v.shape, f.shape))
    if not np.all(np.isfinite(v)):
        raise UserInputError("mesh has NaN or infinite vertex coordinates", file=source)
    mesh = trimesh.Trimesh(v, f, process=False)
    if not (mesh.is_watertight and mesh.is_winding_consistent):
        if not repair:
            raise UserInputError("mesh is not a closed (watertight) surface; path lengths would be wrong",
                                 file=source)
        mesh = trimesh.Trimesh(v, f, process=True)
        trimesh.repair.fill_holes(mesh)
        trimesh.repair.fix_winding(mesh)
        if not (mesh.is_watertight and mesh.is_winding_consistent):
            raise UserInputError(
                "mesh is not watertight and could not be repaired (open boundary or non-manifold edges); "
                "path lengths through it are undefined", file=source,
            )
        logger.warning("%s: mesh was not watertight; repaired (merged vertices, filled holes, fixed winding)", source)
    if mesh.volume < 0:
        mesh.invert()
    if not abs(mesh.volume) > 0:
        raise UserInputError("mesh encloses no volume", file=source)
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.faces, dtype=np.int64)


@dataclass(frozen=True)
class MeshFile:
    """A user mesh ready to render.

    Attributes:
        name: file stem.
        class_name: RFO class (from ``objects.yaml`` or the file-name prefix).
        material: registered material.
        vertices_mm: ``(V, 3)`` centred at the mesh's centroid, mm.
        faces: ``(F, 3)``.
    """

    name: str
    class_name: str
    material: str
    vertices_mm: np.ndarray
    faces: np.ndarray
    density_g_cm3: float | None = None


def load_mesh(path: str | os.PathLike[str], scale_to_mm: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Read a mesh file into validated ``(vertices_mm, faces)`` centred at its volume centroid.

    Raises:
        UserInputError: missing, unreadable or empty file; not watertight after repair.
    """
    import trimesh

    file = Path(path)
    if not file.is_file():
        raise UserInputError("mesh file does not exist", file=file)
    try:
        loaded = trimesh.load(file, force="mesh", process=False)
    except Exception as err:  # trimesh raises many types for malformed files
        raise UserInputError(f"cannot read mesh: {str(err).splitlines()[0] if str(err) else type(err).__name__}",
                             file=file) from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise UserInputError("file holds no triangle mesh", file=file)
    vertices, faces = validate_mesh(np.asarray(loaded.vertices) * float(scale_to_mm), loaded.faces, source=str(file))
    centroid = trimesh.Trimesh(vertices, faces, process=False).center_mass
    return vertices - centroid, faces


def load_mesh_dir(directory: str | os.PathLike[str]) -> list[MeshFile]:
    """Load every mesh of a directory of RFO models.

    The class and material of each file come from an optional ``objects.yaml`` mapping
    ``file name -> {class: ..., material: ..., scale_to_mm: ..., density_g_cm3: ...}``; otherwise the
    file name must start with a class name (``needle_2.obj``) and the material defaults to stainless
    steel (cotton body + marker for sponges is only available procedurally).

    Raises:
        UserInputError: not a directory, no mesh inside, an unknown class or material, a bad mesh.
    """
    import yaml

    from rfo_bench.categories import CATEGORY_BY_NAME, category
    from synth.physics.materials import get_material

    folder = Path(directory)
    if not folder.is_dir():
        raise UserInputError("objects directory does not exist", file=folder)
    spec: dict = {}
    spec_file = folder / "objects.yaml"
    if spec_file.exists():
        try:
            spec = yaml.safe_load(spec_file.read_text()) or {}
        except yaml.YAMLError as err:
            raise UserInputError(f"invalid YAML: {err}", file=spec_file) from None
        if not isinstance(spec, dict):
            raise UserInputError("expected a mapping of file name to settings", file=spec_file)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in MESH_SUFFIXES)
    if not files:
        raise UserInputError(f"no mesh files ({', '.join(MESH_SUFFIXES)}) in directory", file=folder)
    meshes = []
    for file in files:
        entry = spec.get(file.name, {}) or {}
        class_name = entry.get("class")
        if class_name is None:
            prefixes = sorted((n for n in CATEGORY_BY_NAME if file.stem.lower().startswith(n)), key=len, reverse=True)
            if not prefixes:
                raise UserInputError(
                    "cannot tell the RFO class: name the file <class>_*.obj or list it in objects.yaml; classes: "
                    + ", ".join(CATEGORY_BY_NAME), file=file,
                )
            class_name = prefixes[0]
        category(class_name)
        material = get_material(entry.get("material", "stainless_steel")).name
        vertices, faces = load_mesh(file, float(entry.get("scale_to_mm", 1.0)))
        density = entry.get("density_g_cm3")
        meshes.append(MeshFile(file.stem, class_name, material, vertices, faces,
                               None if density is None else float(density)))
    return meshes

"""Objects on the detector: per-material path-length layers over an object's footprint, and its label.

Rendering of an object (both modes): per-material cone-beam path lengths over the object's footprint
box — thin parts are traced with ``supersample²`` rays per pixel and their path lengths averaged per
pixel (a partial-volume approximation: exact where ``μL`` is uniform over the pixel, second order in
the spread of ``μL`` at object edges) — then the energy-integrating Beer–Lambert sum
``R = Σ_E ŵ_E(h) exp(-Σ_parts (μ_part(E) - μ_host(E)) L_part) / Σ_E ŵ_E(h)`` where ``ŵ(h)`` is the
spectrum hardened by the patient at that pixel and the host is the material the part displaces.
Objects overlapping on the detector multiply their transmissions (their mutual hardening is neglected).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from rfo_bench.categories import CATEGORY_BY_NAME
from synth.physics.geometry import Detector, Pose
from synth.physics.objects.registry import Part, RFOObject
from synth.physics.project import ROI, footprint_roi, path_lengths


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


def mu_table(cache: dict, material: str, density: float, energies: np.ndarray) -> np.ndarray:
    from synth.physics.materials import linear_attenuation_per_mm

    key = (material, round(float(density), 6))
    if key not in cache:
        cache[key] = linear_attenuation_per_mm(material, energies, density).astype(np.float32)
    return cache[key]


def layer_exponent(layers: tuple[Layer, ...], mask: np.ndarray, mu_cache: dict, energies: np.ndarray,
                    default_host: str | None) -> np.ndarray:
    """``(K, n)`` Σ_layers (μ_layer - μ_host) L at the ``n`` masked pixels for each energy."""
    exponent = np.zeros((len(energies), int(mask.sum())), dtype=np.float32)
    for layer in layers:
        length = layer.lengths_mm[mask].astype(np.float32)
        if not np.any(length > 0):
            continue
        delta = mu_table(mu_cache, layer.material, layer.density_g_cm3, energies)
        if layer.host_material is not None:
            delta = delta - mu_table(mu_cache, layer.host_material, layer.host_density_g_cm3, energies)
        elif default_host is not None:
            delta = delta - mu_table(mu_cache, default_host, host_density(default_host), energies)
        exponent += delta[:, None] * length[None]
    return exponent


def warm_rasteriser() -> None:
    """Compile (or load from numba's disk cache) the rasteriser now: forked workers then inherit it."""
    from synth.physics.objects.primitives import box

    vertices, faces = box((1.0, 1.0, 1.0))
    path_lengths(vertices, faces, Detector(3, 3, 1.0), with_depth=True)


def host_density(name: str) -> float:
    from synth.physics.materials import get_material

    return get_material(name).density_g_cm3


def annotation(placed: PlacedObject, footprint: np.ndarray, detector_shape: tuple[int, int], flip_lr: bool,
                log_attenuation: np.ndarray, roi: ROI | None = None) -> dict[str, Any] | None:
    """COCO annotation of one object from its footprint mask within ``roi`` (default its own ROI; ``None`` when empty)."""
    from pycocotools import mask as mask_utils

    if not footprint.any():
        return None
    full = np.zeros(detector_shape, dtype=np.uint8, order="F")  # pycocotools wants Fortran order
    rows, cols = (roi or placed.roi).slices
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

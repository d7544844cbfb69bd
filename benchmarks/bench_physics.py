"""Benchmark of ``synth.physics``: radiographs per second, CT-mode time, RFO projection speed and accuracy.

Usage::

    .venv/bin/python benchmarks/bench_physics.py [--size 1024] [--n 20] [--workers 1 2] [--skip-ct] \\
        [--out runs/bench_physics.json]

Reports (JSON on stdout and in ``--out``):

* radiograph mode at ``size²``: 1–3 objects per image, all stages on (polychromatic, scatter, noise,
  blur, display); images per second of rendering in this process, and end to end through
  ``generate_dataset`` (PNG writing included) for each of ``--workers``, with and without set-up; wall
  and CPU time (CPU time per image is the figure to compare on a machine shared with other work);
* CT mode: one-time CT projection and per-image time;
* the RFO projection alone (needle, sponge, clamp at ``size²``): time, and the line integrals checked
  against an independent brute-force ray/triangle (Möller–Trumbore) parity reference;
* DiffDRR at equal geometry if it can be imported (``make bench-deps`` installs its dependencies;
  without them it is skipped with a message), in two comparisons that measure different things:

  - ``diffdrr_ct`` (like for like): the same real CT projected by both at the same cone-beam geometry,
    one CPU thread each (and DiffDRR again with torch's default threads): this toolkit's ``project_ct``
    (Joseph-type, per material, at its default half-resolution ray grid and at full resolution) against
    DiffDRR's Siddon renderer given the same total-density volume; time and agreement of the line
    integrals in g/cm²;
  - ``diffdrr`` (mesh vs voxels, not like for like): an RFO mesh traced exactly here against the same
    object voxelised at 0.05–0.25 mm for DiffDRR; DiffDRR's time there is that of a voxel grid much
    finer than a CT's, so the ratio says how much a mesh saves over voxelising the object, not how
    the two projectors compare.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _moller_trumbore(source: np.ndarray, dirs: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    e1, e2 = b - a, c - a
    out = np.full(len(dirs), np.nan)
    for k, d in enumerate(dirs):
        p = np.cross(d, e2)
        det = np.einsum("ij,ij->i", e1, p)
        ok = np.abs(det) > 1e-12
        inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
        tvec = source - a
        u = np.einsum("ij,ij->i", tvec, p) * inv
        q = np.cross(tvec, e1)
        v = (q @ d) * inv
        t = np.einsum("ij,ij->i", e2, q) * inv
        ts = np.sort(t[ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)])
        if len(ts) % 2 == 0:
            out[k] = np.sum(ts[1::2] - ts[0::2])
    return out


def bench_projection(size: int, repeats: int = 3) -> dict:
    """Time and verify the exact path-length projection of procedural RFOs."""
    from synth.physics.geometry import Detector, Pose, random_rotation
    from synth.physics.objects.library import make_object
    from synth.physics.project import path_lengths

    det = Detector(size, size, 430.0 / size, 1800.0, 1650.0)
    rng = np.random.default_rng(0)
    results = {}
    for name in ("needle", "sponge", "clamp"):
        obj = make_object(name, rng)
        pose = Pose(random_rotation(rng), np.array([10.0, -20.0, 30.0]))
        # All parts of one material layer are disjoint, so they are traced as one mesh (as the renderer does);
        # an embedded part (a marker inside a sponge) is its own layer and is checked on its own.
        layers: dict[tuple, list] = {}
        for part in obj.parts:
            layers.setdefault((part.material, part.host), []).append(part)
        elapsed, errors, checked, triangles = 0.0, [], 0, 0
        for parts in layers.values():
            vertices = np.concatenate([pose.apply(p.vertices_mm) for p in parts])
            offsets = np.cumsum([0] + [len(p.vertices_mm) for p in parts])[:-1]
            faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
            triangles += len(faces)
            path_lengths(vertices, faces, det)  # untimed: compiles (or loads) the rasteriser on first use
            start = time.perf_counter()
            for _ in range(repeats):
                result = path_lengths(vertices, faces, det)
            elapsed += (time.perf_counter() - start) / repeats
            # Independent reference on up to 300 rays through the layer.
            hit_rows, hit_cols = np.nonzero(result.lengths_mm > 0)
            pick = rng.choice(len(hit_rows), min(300, len(hit_rows)), replace=False)
            u, v = det.pixel_centres_mm()
            rows, cols = hit_rows[pick] + result.roi.row0, hit_cols[pick] + result.roi.col0
            dirs = np.stack([u[cols], v[rows], np.full(len(pick), det.source_to_detector_mm)], axis=1)
            dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
            reference = _moller_trumbore(det.source_mm, dirs, vertices, faces)
            ours = result.lengths_mm[hit_rows[pick], hit_cols[pick]]
            decided = np.isfinite(reference) & (reference > 1e-6)
            errors.append(np.abs(ours[decided] - reference[decided]) / reference[decided])
            checked += int(decided.sum())
        rel = np.concatenate(errors) if errors else np.zeros(0)
        results[name] = {
            "triangles": int(triangles), "layers": len(layers), "seconds": round(elapsed, 4), "rays_checked": checked,
            "max_relative_error": float(rel.max()) if rel.size else None,
            "within_1_percent": bool(rel.size and rel.max() < 0.01),
        }
    return results


def _voxelize(vertices: np.ndarray, faces: np.ndarray, pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Occupancy of voxel centres in a closed mesh, by crossing parity along ``+z`` columns.

    Each triangle adds ``-sign(n_z)`` (+1 entering, -1 leaving) at the first voxel centre above its
    crossing with every column inside its ``xy`` footprint; a cumulative sum along ``z`` is then the
    winding number of each centre. Column centres are nudged by a tiny irrational offset so that no
    column passes exactly through an edge. Returns the volume (1 inside) and its lower corner in mm.
    """
    lo = vertices.min(axis=0) - 2 * pitch
    shape = np.ceil((vertices.max(axis=0) + 2 * pitch - lo) / pitch).astype(int)
    delta = np.zeros((shape[0], shape[1], shape[2] + 1), dtype=np.int32)
    nudge = np.array([np.sqrt(2.0), np.sqrt(3.0)]) * 1e-7 * pitch
    for tri in vertices[faces]:
        a, b, c = tri
        normal = np.cross(b - a, c - a)
        if normal[2] == 0.0:
            continue
        i0, i1 = [int(v) for v in np.clip(np.floor((np.array([tri[:, 0].min(), tri[:, 0].max()]) - lo[0]) / pitch), 0, shape[0] - 1)]
        j0, j1 = [int(v) for v in np.clip(np.floor((np.array([tri[:, 1].min(), tri[:, 1].max()]) - lo[1]) / pitch), 0, shape[1] - 1)]
        ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1), indexing="ij")
        px = lo[0] + (ii + 0.5) * pitch + nudge[0]
        py = lo[1] + (jj + 0.5) * pitch + nudge[1]
        # Barycentric test in the xy projection.
        d = (b[1] - c[1]) * (a[0] - c[0]) + (c[0] - b[0]) * (a[1] - c[1])
        if d == 0.0:
            continue
        w0 = ((b[1] - c[1]) * (px - c[0]) + (c[0] - b[0]) * (py - c[1])) / d
        w1 = ((c[1] - a[1]) * (px - c[0]) + (a[0] - c[0]) * (py - c[1])) / d
        inside = (w0 >= 0) & (w1 >= 0) & (w0 + w1 <= 1)
        if not inside.any():
            continue
        z = w0 * a[2] + w1 * b[2] + (1 - w0 - w1) * c[2]
        k = np.clip(np.ceil((z - lo[2]) / pitch - 0.5), 0, shape[2]).astype(int)
        np.add.at(delta, (ii[inside], jj[inside], k[inside]), -int(np.sign(normal[2])))
    occupancy = np.cumsum(delta, axis=2)[:, :, :shape[2]]
    return (occupancy > 0).astype(np.float32), lo


def bench_diffdrr(size: int, repeats: int = 3) -> dict:
    """The RFO projection against DiffDRR's Siddon renderer at equal geometry, when DiffDRR can render.

    Same detector (pitch of a ``size²`` 430 mm detector, SID 1800 mm, object at 1650 mm), same rays.
    DiffDRR integrates a voxel volume, so the object is given to it as a volume: (a) an L-shaped pair of
    boxes aligned with the voxels, represented exactly by both, to check the geometry and the line
    integrals; (b) procedural RFOs voxelised at 0.1-0.25 mm (the voxel staircase then dominates the
    per-pixel difference, so the total and the median are reported). Both run on one CPU thread.
    """
    try:
        import torch
        from diffdrr.data import read
        from diffdrr.drr import DRR
        from torchio import ScalarImage
    except Exception as err:
        return {"skipped": f"DiffDRR's renderer cannot be imported ({type(err).__name__}: {err}); "
                           "`make bench-deps` installs its dependencies"}
    from synth.physics.geometry import Detector, Pose, random_rotation
    from synth.physics.objects.library import make_object
    from synth.physics.objects.primitives import box
    from synth.physics.project import path_lengths

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    pixel = 430.0 / size

    def both(volume: np.ndarray, pitch: float, vertices: np.ndarray, faces: np.ndarray, rows: int, cols: int) -> dict:
        # DiffDRR centres the volume at the isocentre; voxel i covers [i, i+1) * pitch from the corner.
        subject = read(ScalarImage(tensor=torch.from_numpy(volume * 1000.0)[None], affine=np.diag([pitch] * 3 + [1.0])),
                       orientation=None)  # density = value / max: 1 inside
        drr = DRR(subject, sdd=1800.0, height=rows, width=cols, delx=pixel, dely=pixel)
        rot, trans = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, 1650.0]])
        with torch.no_grad():
            drr(rot, trans, parameterization="euler_angles", convention="ZXY")  # warm-up
            start = time.perf_counter()
            for _ in range(repeats):
                theirs = drr(rot, trans, parameterization="euler_angles", convention="ZXY")[0, 0].double().numpy()
            t_theirs = (time.perf_counter() - start) / repeats
        det = Detector(rows, cols, pixel, 1800.0, 1650.0)
        roi = None
        path_lengths(vertices, faces, det)
        start = time.perf_counter()
        for _ in range(repeats):
            result = path_lengths(vertices, faces, det, roi=roi)
        t_ours = (time.perf_counter() - start) / repeats
        ours = np.zeros((rows, cols))
        if result is not None:
            ours[result.roi.slices] = result.lengths_mm
        hit = ours > 0.25 * ours.max()
        rel = np.abs(theirs[hit] - ours[hit]) / ours[hit]
        return {"detector": [rows, cols], "voxels": list(volume.shape), "voxel_mm": pitch,
                "diffdrr_seconds": round(t_theirs, 4), "ours_seconds": round(t_ours, 5),
                "speed_ratio": round(t_theirs / max(t_ours, 1e-9), 1),
                "total_integral_relative_difference": round(float(abs(theirs.sum() - ours.sum()) / ours.sum()), 5),
                "median_pixel_relative_difference": round(float(np.median(rel)), 5),
                "pixels_within_1_percent": round(float(np.mean(rel <= 0.01)), 4),
                "max_abs_difference_mm": round(float(np.abs(theirs - ours).max()), 5)}

    report: dict = {"threads": 1}
    # (a) exact case: an L of two voxel-aligned boxes, 26 x 4 x 6 mm and 6 x 10 x 2 mm, at 0.1 mm voxels.
    pitch, shape = 0.1, (260, 140, 60)
    volume = np.zeros(shape, dtype=np.float32)
    volume[:, :40, :] = 1.0
    volume[:60, 40:, 20:40] = 1.0
    centre = np.array(shape) * pitch / 2
    va, fa = box((26.0, 4.0, 6.0))
    vb, fb = box((6.0, 10.0, 2.0))
    vertices = np.concatenate([va + np.array([13.0, 2.0, 3.0]) - centre, vb + np.array([3.0, 9.0, 3.0]) - centre])
    faces = np.concatenate([fa, fb + len(va)])
    report["voxel_aligned_boxes"] = both(volume, pitch, vertices, faces, 48, 80)
    # (b) procedural RFOs, randomly rotated, voxelised finely enough for their size (clamps are ~15 cm
    # long); the needle also at half the pitch, to show the difference is the voxel staircase.
    rng = np.random.default_rng(0)
    for name, pitches in (("needle", (0.1, 0.05)), ("blade", (0.1,)), ("clamp", (0.25,))):
        obj = make_object(name, rng)
        pose = Pose(random_rotation(rng), np.zeros(3))
        parts = [p for p in obj.parts if p.host is None]
        verts = np.concatenate([pose.apply(p.vertices_mm) for p in parts])
        offsets = np.cumsum([0] + [len(p.vertices_mm) for p in parts])[:-1]
        faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
        for pitch in pitches:
            start = time.perf_counter()
            volume, lo = _voxelize(verts, faces, pitch)
            voxelise = time.perf_counter() - start
            centre = lo + np.array(volume.shape) * pitch / 2
            det = Detector(size, size, pixel, 1800.0, 1650.0)
            roi = path_lengths(verts - centre, faces, det).roi
            span = max(roi.rows, roi.cols) + 8
            entry = both(volume, pitch, verts - centre, faces, span, span)
            entry["voxelise_seconds"] = round(voxelise, 2)
            entry["triangles"] = int(len(faces))
            report[f"{name}_voxels_{pitch}mm"] = entry
    torch.set_num_threads(threads)
    return report


def bench_diffdrr_ct(size: int, repeats: int = 2) -> dict:
    """Like for like: the embedded CT projected by ``project_ct`` and by DiffDRR at one geometry.

    Detector ``size²`` over the CT-mode field (``CT_FIELD_FRACTION`` of the CT's smaller lateral /
    cranio-caudal extent at the isocentre), SID 1800 mm,
    SOD 1650 mm (the toolkit's CT-mode geometry). DiffDRR gets the total density (the sum of this
    toolkit's per-material density volumes, g/cm³) in the object frame with ``orientation=None``; its
    own HU→density mapping then is ``ρ / ρ_max`` (all values lie in its linear "soft tissue" branch), so
    its image times ``ρ_max / 10`` is the line integral in g/cm², the quantity ``project_ct`` returns
    summed over materials.
    """
    try:
        import torch
        from diffdrr.data import read
        from diffdrr.drr import DRR
        from torchio import ScalarImage
    except Exception as err:
        return {"skipped": f"DiffDRR's renderer cannot be imported ({type(err).__name__}: {err}); "
                           "`make bench-deps` installs its dependencies"}
    from rfo_bench.io.embedded import embedded_ct_path
    from rfo_bench.io.volumes import read_volume
    from synth.physics.backgrounds import CT_FIELD_FRACTION, decompose_hu, project_ct
    from synth.physics.geometry import Detector

    volume = read_volume(embedded_ct_path())
    hu, (sx, sy, sz) = volume.hu, volume.spacing_mm
    sid, sod = 1800.0, 1650.0
    field = CT_FIELD_FRACTION * min(volume.extent_mm[0], volume.extent_mm[2]) * sid / sod
    det = Detector(size, size, field / size, sid, sod)
    threads = torch.get_num_threads()
    report: dict = {"ct": embedded_ct_path().name, "ct_shape": list(hu.shape), "detector": [size, size],
                    "pixel_mm": round(det.pixel_mm, 5), "sid_mm": sid, "sod_mm": sod, "default_torch_threads": threads}
    ours = {}
    for downsample in (2, 1):
        project_ct(hu[:8], volume.spacing_mm, det, downsample=downsample)  # warm the allocator
        start, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(repeats):
            maps = project_ct(hu, volume.spacing_mm, det, downsample=downsample)
        ours[downsample] = sum(m.astype(np.float64) for m in maps.values())
        report[f"ours_downsample{downsample}_seconds"] = round((time.perf_counter() - start) / repeats, 3)
        report[f"ours_downsample{downsample}_cpu_seconds"] = round((_cpu_seconds() - cpu) / repeats, 3)
    rho = sum(decompose_hu(hu).values())  # (X, Y, Z) RAS+, g/cm^3
    rho_max = float(rho.max())
    # Object frame: x = RAS x, y = inferior (-RAS z), z = anterior (RAS y), the beam direction.
    frame = np.ascontiguousarray(rho.transpose(0, 2, 1)[:, ::-1, :], dtype=np.float32)
    subject = read(ScalarImage(tensor=torch.from_numpy(frame * 100.0)[None], affine=np.diag([sx, sz, sy, 1.0])),
                   orientation=None)
    patch = max(d for d in (1, 2, 4, 8, 16) if size % d == 0 and size // d <= 128) if size > 128 else None
    drr = DRR(subject, sdd=sid, height=size, width=size, delx=det.pixel_mm, dely=det.pixel_mm,
              patch_size=None if patch is None else size // patch)
    rot, trans = torch.zeros(1, 3), torch.tensor([[0.0, 0.0, sod]])

    def render() -> np.ndarray:
        with torch.no_grad():
            return drr(rot, trans, parameterization="euler_angles", convention="ZXY")[0, 0].double().numpy()

    for label, n_threads in (("one_thread", 1), ("default_threads", threads)):
        torch.set_num_threads(n_threads)
        render()
        start, cpu = time.perf_counter(), _cpu_seconds()
        for _ in range(repeats):
            theirs = render() * rho_max / 10.0
        report[f"diffdrr_{label}_seconds"] = round((time.perf_counter() - start) / repeats, 3)
        report[f"diffdrr_{label}_cpu_seconds"] = round((_cpu_seconds() - cpu) / repeats, 3)
    torch.set_num_threads(threads)
    # DiffDRR's display convention may mirror the columns (reverse_x_axis): report the better alignment.
    for downsample, image in ours.items():
        candidates = {"as_is": theirs, "columns_mirrored": theirs[:, ::-1]}
        name, best = min(candidates.items(), key=lambda kv: float(np.abs(kv[1] - image).mean()))
        body = image > 0.25 * image.max()
        rel = np.abs(best[body] - image[body]) / image[body]
        report[f"agreement_downsample{downsample}"] = {
            "diffdrr_orientation": name,
            "total_relative_difference": round(float(abs(best.sum() - image.sum()) / image.sum()), 5),
            "median_pixel_relative_difference": round(float(np.median(rel)), 5),
            "p95_pixel_relative_difference": round(float(np.percentile(rel, 95)), 5),
            "pixels_within_1_percent": round(float(np.mean(rel <= 0.01)), 4),
            "max_g_cm2": round(float(image.max()), 3),
        }
    report["speed_ratio_one_thread_downsample2"] = round(
        report["diffdrr_one_thread_seconds"] / max(report["ours_downsample2_seconds"], 1e-9), 2)
    report["speed_ratio_one_thread_downsample1"] = round(
        report["diffdrr_one_thread_seconds"] / max(report["ours_downsample1_seconds"], 1e-9), 2)
    return report


def _pin_opencv_threads() -> None:
    """One OpenCV thread (its warps and filters otherwise use every core): CPU time per image is then
    that of one core, and worker processes do not contend with their own thread pools."""
    import cv2

    cv2.setNumThreads(1)


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and of its finished child processes."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _rasteriser() -> str:
    try:
        from synth.physics.raster_kernel import numba_available
    except ImportError:  # an older tree without the compiled kernel
        return "numpy"
    return "numba" if numba_available() else "numpy"


def bench_radiograph(size: int, n: int) -> dict:
    """Rendering alone (no file writing) in this process: wall and CPU time per image after set-up."""
    from synth.physics.generate import PhysicsConfig, build_renderer

    config = PhysicsConfig(mode="radiograph", size=size, max_objects=3, negative_fraction=0.0)
    start = time.perf_counter()
    renderer = build_renderer(config)
    setup = time.perf_counter() - start
    renderer.render(np.random.default_rng(10_000))  # warm caches (and compile the rasteriser)
    start, cpu = time.perf_counter(), _cpu_seconds()
    for i in range(n):
        renderer.render(np.random.default_rng(i))
    per_image = (time.perf_counter() - start) / n
    cpu_per_image = (_cpu_seconds() - cpu) / n
    return {"size": size, "images": n, "rasteriser": _rasteriser(), "setup_seconds": round(setup, 2),
            "seconds_per_image": round(per_image, 4), "images_per_second": round(1.0 / per_image, 2),
            "cpu_seconds_per_image": round(cpu_per_image, 4),
            "images_per_cpu_second": round(1.0 / max(cpu_per_image, 1e-9), 2),
            "load_average_1min": round(os.getloadavg()[0], 2)}


def bench_end_to_end(size: int, n: int, workers: int) -> dict:
    """``generate_dataset`` with ``workers`` processes: set-up, rendering, annotations and 16-bit PNG writing."""
    from synth.physics.generate import PhysicsConfig, generate_dataset

    config = PhysicsConfig(mode="radiograph", size=size, max_objects=3, negative_fraction=0.0)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        # A first small run fills the per-process caches (imports, spectra, attenuation tables, compiled
        # kernels), so that the two timed runs differ only by their n extra images.
        generate_dataset(Path(tmp) / "warm", n=2, seed=0, config=config, workers=workers, progress=False)
        for count in (n, 2 * n):
            start, cpu = time.perf_counter(), _cpu_seconds()
            generate_dataset(Path(tmp) / f"ds{count}", n=count, seed=0, config=config, workers=workers, progress=False)
            runs.append((time.perf_counter() - start, _cpu_seconds() - cpu))
        png_mb = sum(p.stat().st_size for p in (Path(tmp) / f"ds{n}" / "images").glob("*.png")) / n / 1e6
    (elapsed, cpu_used), (elapsed2, cpu_used2) = runs
    # The n extra images of the second run cost (t(2n) - t(n)): the rate once set-up is paid.
    marginal, marginal_cpu = max(elapsed2 - elapsed, 1e-9), max(cpu_used2 - cpu_used, 1e-9)
    return {"size": size, "images": n, "workers": workers, "seconds": round(elapsed, 2),
            "images_per_second": round(n / elapsed, 2), "cpu_seconds": round(cpu_used, 2),
            "cpu_seconds_per_image": round(cpu_used / n, 4),
            "steady_images_per_second": round(n / marginal, 2),
            "steady_cpu_seconds_per_image": round(marginal_cpu / n, 4),
            "steady_images_per_cpu_second": round(n / marginal_cpu, 2),
            "mean_png_megabytes": round(png_mb, 3), "load_average_1min": round(os.getloadavg()[0], 2),
            "note": "images_per_second includes per-process set-up (spectrum, background calibration); steady_* are "
                    "from the n extra images of a second run with 2n; both include annotations and 16-bit PNG writing"}


def bench_ct(size: int, n: int) -> dict:
    from synth.physics.generate import PhysicsConfig, build_renderer

    config = PhysicsConfig(mode="ct", size=size, max_objects=3, negative_fraction=0.0)
    start = time.perf_counter()
    renderer = build_renderer(config)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    for i in range(n):
        renderer.render(np.random.default_rng(i))
    per_image = (time.perf_counter() - start) / n
    return {"size": size, "images": n, "ct_projection_setup_seconds": round(setup, 2),
            "seconds_per_image": round(per_image, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--n", type=int, default=20, help="images per timing")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts of the end-to-end run")
    parser.add_argument("--skip-ct", action="store_true")
    parser.add_argument("--only-projection", action="store_true", help="only the projection timing and check")
    parser.add_argument("--only-diffdrr-ct", action="store_true", help="only the like-for-like CT comparison")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    args = parser.parse_args()
    _pin_opencv_threads()
    if args.only_diffdrr_ct:
        report = {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                  "diffdrr_ct": bench_diffdrr_ct(args.size)}
        print(json.dumps(report, indent=2))
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
        return
    report = {
        "cpu_count": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "projection": bench_projection(args.size),
        "diffdrr": bench_diffdrr(args.size),
        "diffdrr_ct": bench_diffdrr_ct(args.size),
    }
    if not args.only_projection:
        report["radiograph_mode"] = bench_radiograph(args.size, args.n)
        report["radiograph_end_to_end"] = [bench_end_to_end(args.size, args.n, w) for w in args.workers]
    if not (args.skip_ct or args.only_projection):
        report["ct_mode"] = bench_ct(args.size, max(args.n // 4, 2))
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

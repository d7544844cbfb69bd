"""Closed, outward-oriented triangle meshes from which the procedural RFOs are built.

Every function returns ``(vertices_mm (V, 3), faces (F, 3))`` describing a watertight surface with
outward normals (checked by the tests), so path lengths through it are well defined.
"""

from __future__ import annotations

import math

import numpy as np

Mesh = tuple[np.ndarray, np.ndarray]


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cross product over the last axis of ``(..., 3)`` arrays.

    The same products and differences as ``np.cross`` (so bit-identical results) without its axis
    bookkeeping, which dominates for the many small calls made while building meshes.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape == b.shape == (3,) and a.dtype == b.dtype == np.float64:
        # One pair of vectors (curve and frame stepping): Python floats are IEEE doubles, same rounding.
        (a0, a1, a2), (b0, b1, b2) = a.tolist(), b.tolist()
        return np.array([a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0])
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


def _oriented(vertices: np.ndarray, faces: np.ndarray) -> Mesh:
    """Flip all faces when the signed volume is negative (inward normals)."""
    a, b, c = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    volume = np.einsum("ij,ij->i", a, cross(b, c)).sum() / 6.0
    if volume < 0:
        faces = faces[:, ::-1].copy()
    return vertices, faces


def _frames(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rotation-minimising (parallel transport) frames ``(T, N, B)`` along a polyline, each ``(n, 3)``."""
    d = np.gradient(points, axis=0)
    tangent = d / np.linalg.norm(d, axis=1, keepdims=True)
    ref = np.array([0.0, 0.0, 1.0]) if abs(tangent[0, 2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    first = cross(tangent[0], ref)
    nx, ny, nz = (first / np.linalg.norm(first)).tolist()
    # The transport is sequential; on Python floats it runs ~10x faster than on 3-element arrays.
    normals = [(nx, ny, nz)]
    for tx, ty, tz in tangent[1:].tolist():
        along = nx * tx + ny * ty + nz * tz
        nx, ny, nz = nx - along * tx, ny - along * ty, nz - along * tz
        length = math.sqrt(nx * nx + ny * ny + nz * nz)
        nx, ny, nz = nx / length, ny / length, nz / length
        normals.append((nx, ny, nz))
    normal = np.array(normals)
    binormal = cross(tangent, normal)
    return tangent, normal, binormal


def tube(points: np.ndarray, radii: float | np.ndarray, sides: int = 10) -> Mesh:
    """A capped tube of (varying) circular cross-section swept along a smooth open polyline.

    Args:
        points: ``(n, 3)`` centre line, n >= 2; the curvature radius must exceed the tube radius.
        radii: scalar or ``(n,)`` radius at each centre-line point, mm (> 0).
        sides: vertices per cross-section ring.
    """
    p = np.asarray(points, dtype=np.float64)
    r = np.broadcast_to(np.asarray(radii, dtype=np.float64), (len(p),))
    _, normal, binormal = _frames(p)
    theta = 2 * np.pi * np.arange(sides) / sides
    ring = (np.cos(theta)[None, :, None] * normal[:, None, :] + np.sin(theta)[None, :, None] * binormal[:, None, :])
    rings = p[:, None, :] + r[:, None, None] * ring  # (n, sides, 3)
    n = len(p)
    vertices = np.concatenate([rings.reshape(-1, 3), p[:1], p[-1:]])
    faces = []
    i = np.arange(n - 1)[:, None]
    j = np.arange(sides)[None, :]
    a = i * sides + j
    b = i * sides + (j + 1) % sides
    c = (i + 1) * sides + j
    d = (i + 1) * sides + (j + 1) % sides
    faces.append(np.stack([a, b, c], axis=-1).reshape(-1, 3))
    faces.append(np.stack([b, d, c], axis=-1).reshape(-1, 3))
    start, end = n * sides, n * sides + 1
    js = np.arange(sides)
    faces.append(np.stack([np.full(sides, start), (js + 1) % sides, js], axis=1))
    faces.append(np.stack([np.full(sides, end), (n - 1) * sides + js, (n - 1) * sides + (js + 1) % sides], axis=1))
    return _oriented(vertices, np.concatenate(faces).astype(np.int64))


def torus(major_mm: float, minor_mm: float, major_sections: int = 24, minor_sections: int = 10) -> Mesh:
    """A torus in the ``xy`` plane centred at the origin (axis ``z``)."""
    u = 2 * np.pi * np.arange(major_sections) / major_sections
    v = 2 * np.pi * np.arange(minor_sections) / minor_sections
    uu, vv = np.meshgrid(u, v, indexing="ij")
    rad = major_mm + minor_mm * np.cos(vv)
    vertices = np.stack([rad * np.cos(uu), rad * np.sin(uu), minor_mm * np.sin(vv)], axis=-1).reshape(-1, 3)
    i = np.arange(major_sections)[:, None]
    j = np.arange(minor_sections)[None, :]
    a = i * minor_sections + j
    b = ((i + 1) % major_sections) * minor_sections + j
    c = i * minor_sections + (j + 1) % minor_sections
    d = ((i + 1) % major_sections) * minor_sections + (j + 1) % minor_sections
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([c, b, d], -1).reshape(-1, 3)])
    return _oriented(vertices, faces.astype(np.int64))


def revolve(profile_rz: np.ndarray, sections: int = 32) -> Mesh:
    """Solid of revolution about ``z`` of a profile ``(r, z)`` running from the axis back to the axis.

    Args:
        profile_rz: ``(n, 2)`` points; the first and last have ``r = 0``, the others ``r > 0``.
        sections: angular steps.
    """
    prof = np.asarray(profile_rz, dtype=np.float64)
    if prof[0, 0] != 0 or prof[-1, 0] != 0 or np.any(prof[1:-1, 0] <= 0):
        raise ValueError("profile must start and end on the axis (r = 0) and stay off it in between")
    inner = prof[1:-1]
    m = len(inner)
    phi = 2 * np.pi * np.arange(sections) / sections
    ring = np.stack([inner[None, :, 0] * np.cos(phi)[:, None], inner[None, :, 0] * np.sin(phi)[:, None],
                     np.broadcast_to(inner[None, :, 1], (sections, m))], axis=-1).reshape(-1, 3)
    top = np.array([[0.0, 0.0, prof[0, 1]], [0.0, 0.0, prof[-1, 1]]])
    vertices = np.concatenate([ring, top])
    s = np.arange(sections)[:, None]
    k = np.arange(m - 1)[None, :]
    a = s * m + k
    b = ((s + 1) % sections) * m + k
    faces = [np.stack([a, b, a + 1], -1).reshape(-1, 3), np.stack([a + 1, b, b + 1], -1).reshape(-1, 3)]
    ss = np.arange(sections)
    first, last = sections * m, sections * m + 1
    faces.append(np.stack([np.full(sections, first), ((ss + 1) % sections) * m, ss * m], 1))
    faces.append(np.stack([np.full(sections, last), ss * m + m - 1, ((ss + 1) % sections) * m + m - 1], 1))
    return _oriented(vertices, np.concatenate(faces).astype(np.int64))


def ring_revolve(profile_rz: np.ndarray, sections: int = 32) -> Mesh:
    """Solid of revolution about ``z`` of a closed profile polygon lying entirely at ``r > 0`` (a washer)."""
    prof = np.asarray(profile_rz, dtype=np.float64)
    m = len(prof)
    phi = 2 * np.pi * np.arange(sections) / sections
    vertices = np.stack([prof[None, :, 0] * np.cos(phi)[:, None], prof[None, :, 0] * np.sin(phi)[:, None],
                         np.broadcast_to(prof[None, :, 1], (sections, m))], axis=-1).reshape(-1, 3)
    s = np.arange(sections)[:, None]
    k = np.arange(m)[None, :]
    a = s * m + k
    b = ((s + 1) % sections) * m + k
    a1 = s * m + (k + 1) % m
    b1 = ((s + 1) % sections) * m + (k + 1) % m
    faces = np.concatenate([np.stack([a, b, a1], -1).reshape(-1, 3), np.stack([a1, b, b1], -1).reshape(-1, 3)])
    return _oriented(vertices, faces.astype(np.int64))


def _triangulate_polygon(poly: np.ndarray) -> np.ndarray:
    """Ear-clipping triangulation of a simple polygon ``(n, 2)``; returns ``(n - 2, 3)`` indices.

    A convex corner is an ear when no other vertex lies in its triangle; only reflex vertices can, so
    only they are tested (on Python floats: the polygons here have tens of vertices).
    """
    pts = np.asarray(poly, dtype=np.float64)
    area = 0.5 * np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    xy = pts.tolist()
    order = list(range(len(xy))) if area > 0 else list(range(len(xy)))[::-1]
    triangles = []

    def turn(i: int, j: int, k: int) -> float:
        (ox, oy), (ax, ay), (bx, by) = xy[i], xy[j], xy[k]
        return (ax - ox) * (by - oy) - (ay - oy) * (bx - ox)

    def inside(q: int, i: int, j: int, k: int) -> bool:
        return turn(i, j, q) >= 0 and turn(j, k, q) >= 0 and turn(k, i, q) >= 0

    while len(order) > 3:
        n = len(order)
        reflex = {order[k] for k in range(n) if turn(order[k - 1], order[k], order[(k + 1) % n]) <= 1e-12}
        for k in range(n):
            i0, i1, i2 = order[k - 1], order[k], order[(k + 1) % n]
            if i1 in reflex:
                continue
            if not any(q not in (i0, i1, i2) and inside(q, i0, i1, i2) for q in reflex):
                triangles.append((i0, i1, i2))
                order.pop(k)
                break
        else:
            raise ValueError("polygon is not simple; cannot triangulate")
    triangles.append(tuple(order))
    return np.asarray(triangles, dtype=np.int64)


def extrude(polygon_xy: np.ndarray, thickness_mm: float) -> Mesh:
    """A prism: a simple polygon ``(n, 2)`` in ``xy`` extruded over ``z ∈ [-t/2, t/2]``."""
    poly = np.asarray(polygon_xy, dtype=np.float64)
    n = len(poly)
    tri = _triangulate_polygon(poly)
    h = thickness_mm / 2.0
    vertices = np.concatenate([np.column_stack([poly, np.full(n, -h)]), np.column_stack([poly, np.full(n, h)])])
    area = 0.5 * np.sum(poly[:, 0] * np.roll(poly[:, 1], -1) - np.roll(poly[:, 0], -1) * poly[:, 1])
    if area < 0:
        tri = tri[:, ::-1]
    k = np.arange(n)
    k1 = (k + 1) % n
    sides = np.concatenate([np.stack([k, k1, k + n], 1), np.stack([k1, k1 + n, k + n], 1)])
    faces = np.concatenate([tri[:, ::-1], tri + n, sides])
    return _oriented(vertices, faces.astype(np.int64))


def sheet(width_mm: float, height_mm: float, thickness_mm: float, step_mm: float) -> Mesh:
    """A subdivided thin box ``[-w/2, w/2] x [-h/2, h/2] x [-t/2, t/2]`` that can be bent smoothly."""
    nx = max(int(np.ceil(width_mm / step_mm)), 1) + 1
    ny = max(int(np.ceil(height_mm / step_mm)), 1) + 1
    xs = np.linspace(-width_mm / 2, width_mm / 2, nx)
    ys = np.linspace(-height_mm / 2, height_mm / 2, ny)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    h = thickness_mm / 2.0
    bottom = np.column_stack([grid, np.full(len(grid), -h)])
    top = np.column_stack([grid, np.full(len(grid), h)])
    vertices = np.concatenate([bottom, top])
    off = len(grid)
    i = np.arange(nx - 1)[:, None]
    j = np.arange(ny - 1)[None, :]
    a = i * ny + j
    b = (i + 1) * ny + j
    c = i * ny + j + 1
    d = (i + 1) * ny + j + 1
    top_faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)]) + off
    bottom_faces = np.concatenate([np.stack([a, d, b], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])
    # Side walls along the boundary loop of the grid.
    loop = ([i * ny for i in range(nx)] + [(nx - 1) * ny + j for j in range(1, ny)]
            + [i * ny + ny - 1 for i in range(nx - 2, -1, -1)] + [j for j in range(ny - 2, 0, -1)])
    loop_arr = np.asarray(loop)
    nxt = np.roll(loop_arr, -1)
    walls = np.concatenate([np.stack([loop_arr, nxt, nxt + off], 1), np.stack([loop_arr, nxt + off, loop_arr + off], 1)])
    faces = np.concatenate([top_faces, bottom_faces, walls])
    return _oriented(vertices, faces.astype(np.int64))


def box(extents_mm: tuple[float, float, float], centre_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> Mesh:
    """An axis-aligned box."""
    ex = np.asarray(extents_mm, dtype=np.float64) / 2.0
    vertices = _BOX_CORNERS * ex + np.asarray(centre_mm, dtype=np.float64)
    if np.all(ex > 0):  # the template is outward-oriented; positive scaling and translation keep it so
        return vertices, _BOX_FACES.copy()
    return _oriented(vertices, _BOX_FACES.copy())


_BOX_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
_BOX_FACES = np.array([
    [0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
    [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3],
], dtype=np.int64)


def transform(mesh: Mesh, rotation: np.ndarray | None = None, translation: np.ndarray | None = None) -> Mesh:
    """Apply ``x' = R x + t`` to a mesh (faces unchanged: R is a proper rotation)."""
    v, f = mesh
    if rotation is not None:
        v = v @ np.asarray(rotation).T
    if translation is not None:
        v = v + np.asarray(translation)
    return v, f


def smooth_curve(rng: np.random.Generator, length_mm: float, n_points: int, wiggle: float, step_mm: float | None = None,
                 planar: bool = False) -> np.ndarray:
    """A smooth random 3-D curve of about ``length_mm``, centred at the origin.

    The heading follows a low-pass random walk on the sphere; ``wiggle`` (rad per point, about 0.05–0.3)
    sets how much it bends.
    """
    step = length_mm / (n_points - 1) if step_mm is None else step_mm
    kicks = wiggle * rng.normal(size=(max(n_points - 1, 0), 3))
    if planar:  # turn about z only: the curve stays in the xy plane
        kicks[:, :2] = 0.0
    hx, hy, hz = 1.0, 0.0, 0.0
    tx = ty = tz = 0.0
    headings = []
    for kx, ky, kz in kicks.tolist():  # sequential; Python floats are ~10x faster than 3-element arrays
        tx, ty, tz = 0.8 * tx + kx, 0.8 * ty + ky, 0.8 * tz + kz
        hx, hy, hz = hx + (ty * hz - tz * hy), hy + (tz * hx - tx * hz), hz + (tx * hy - ty * hx)
        norm = math.sqrt(hx * hx + hy * hy + hz * hz)
        hx, hy, hz = hx / norm, hy / norm, hz / norm
        headings.append((hx, hy, hz))
    curve = np.zeros((n_points, 3))
    if headings:
        curve[1:] = np.cumsum(step * np.asarray(headings), axis=0)
    return curve - curve.mean(axis=0)


def winding_number(points: np.ndarray, mesh: Mesh) -> np.ndarray:
    """Generalised winding number of ``(N, 3)`` points w.r.t. a closed mesh (≈1 inside, ≈0 outside).

    Van Oosterom–Strackee solid angles summed over triangles; ``O(N x F)`` — for checks, not rendering.
    """
    v, f = mesh
    p = np.asarray(points, dtype=np.float64)
    total = np.zeros(len(p))
    for start in range(0, len(f), 2048):
        tri = v[f[start:start + 2048]]  # (F, 3, 3)
        a = tri[None, :, 0, :] - p[:, None, :]
        b = tri[None, :, 1, :] - p[:, None, :]
        c = tri[None, :, 2, :] - p[:, None, :]
        la, lb, lc = (np.linalg.norm(x, axis=-1) for x in (a, b, c))
        num = np.einsum("pfi,pfi->pf", a, cross(b, c))
        den = la * lb * lc + np.einsum("pfi,pfi->pf", a, b) * lc + np.einsum("pfi,pfi->pf", b, c) * la \
            + np.einsum("pfi,pfi->pf", c, a) * lb
        total += 2 * np.arctan2(num, den).sum(axis=1)
    return total / (4 * np.pi)

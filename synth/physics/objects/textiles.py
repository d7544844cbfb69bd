"""Textile RFOs: surgical sponges / laparotomy pads (wadded or flat) and cottonoid patties.

Registered in :data:`synth.physics.objects.registry.OBJECT_GENERATORS` when the registry discovers its modules.
Cotton soaked with fluid is nearly tissue-equivalent; what shows on a film is the BaSO4 marker thread,
trapped gas and, faintly, the cotton's different density.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from synth.physics.geometry import axis_angle_matrix
from synth.physics.materials import get_material
from synth.physics.objects import primitives as P
from synth.physics.objects.registry import Part, RFOObject, register_object
from synth.physics.objects.registry import rounded as _r

# --- deformations shared by sponges and patties -------------------------------------------------

def _bend(points: np.ndarray, angle: float, x0: float, zc: float, radius: float) -> np.ndarray:
    """Fold a flat stack over a line (direction ``angle`` in ``xy``, offset ``x0``) by 180° around a cylinder."""
    rot = axis_angle_matrix(np.array([0.0, 0.0, 1.0]), angle)
    p = points @ rot  # into the fold frame: fold line parallel to y'
    s = p[:, 0] - x0
    z = p[:, 2] - zc
    out = p.copy()
    theta = np.clip(s / radius, 0.0, np.pi)
    arc = (s > 0) & (s <= np.pi * radius)
    flat = s > np.pi * radius
    out[arc, 0] = x0 + (radius - z[arc]) * np.sin(theta[arc])
    out[arc, 2] = zc + radius - (radius - z[arc]) * np.cos(theta[arc])
    out[flat, 0] = x0 - (s[flat] - np.pi * radius)
    out[flat, 2] = zc + 2 * radius - z[flat]
    return out @ rot.T


def _smooth_field(rng: np.random.Generator, n_modes: int, wavelength_mm: tuple[float, float]):
    k = 2 * np.pi / rng.uniform(*wavelength_mm, size=n_modes)
    direction = rng.uniform(0, 2 * np.pi, size=n_modes)
    phase = rng.uniform(0, 2 * np.pi, size=n_modes)
    amp = rng.normal(size=n_modes) / np.sqrt(n_modes)
    kx, ky = k * np.cos(direction), k * np.sin(direction)

    def field(xy: np.ndarray) -> np.ndarray:
        return (amp[None, :] * np.sin(xy[:, :1] * kx[None, :] + xy[:, 1:2] * ky[None, :] + phase[None, :])).sum(1)

    return field, float(np.max(k))


def _crumple(points: np.ndarray, rng: np.random.Generator, amplitude_mm: float, wavelength_mm: tuple[float, float],
             inplane_mm: float) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth bijective deformation: an in-plane warp followed by a height field (keeps layers ordered)."""
    hx, kmax_h = _smooth_field(rng, 6, wavelength_mm)
    wx, kmax_x = _smooth_field(rng, 4, (wavelength_mm[0] * 1.5, wavelength_mm[1] * 2))
    wy, kmax_y = _smooth_field(rng, 4, (wavelength_mm[0] * 1.5, wavelength_mm[1] * 2))
    # Keep the in-plane warp a bijection: its gradient must stay well below 1.
    inplane = min(inplane_mm, 0.3 / max(kmax_x, kmax_y))

    def deform(p: np.ndarray) -> np.ndarray:
        out = p.copy()
        out[:, 0] += inplane * wx(p[:, :2])
        out[:, 1] += inplane * wy(p[:, :2])
        out[:, 2] += amplitude_mm * hx(out[:, :2])
        return out

    return deform


# --- sponges and patties ------------------------------------------------------------------------------

def _wad_radius_function(rng: np.random.Generator, amplitude: float) -> Callable[[np.ndarray], np.ndarray]:
    """A smooth positive function on unit directions, ``1 + amplitude · f(d)`` with ``|f| <= 1``."""
    n_terms = 5
    axes = rng.normal(size=(n_terms, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    freq = rng.uniform(1.0, 3.0, size=n_terms)
    phase = rng.uniform(0, 2 * np.pi, size=n_terms)
    weight = rng.uniform(0.5, 1.0, size=n_terms)
    weight /= weight.sum()

    def radius(directions: np.ndarray) -> np.ndarray:
        return 1.0 + amplitude * (weight[None] * np.cos(freq[None] * (directions @ axes.T) + phase[None])).sum(axis=1)

    return radius


def _tangled_thread(rng: np.random.Generator, inside: Callable[[np.ndarray, float], np.ndarray], length_mm: float,
                    radius_mm: float, clearance_mm: float, avoid: list[np.ndarray]) -> np.ndarray:
    """A persistent random walk that stays inside a solid and keeps ``2r + step`` from itself and ``avoid``.

    Steps of at most 1.5 mm turn by at most 0.6 rad, so the tube around it bends with a radius above
    its own and never meets itself; within 6 mm of the surface the walk is steered back towards the
    centre; a walk that cannot go on ends early. ``inside(points, extra_margin_mm)`` tests containment.
    """
    step = min(1.5, max(0.6, 3.0 * radius_mm))
    gap = 2.0 * radius_mm + step + clearance_mm
    skip = int(np.ceil(gap / step)) + 2  # neighbours along the walk are close by construction
    points = [np.zeros(3)]
    heading = rng.normal(size=3)
    heading /= np.linalg.norm(heading)
    others = np.concatenate(avoid) if avoid else np.zeros((0, 3))
    for _ in range(int(length_mm / step)):
        here = points[-1]
        steer = np.zeros(3)
        if not inside(here[None], 6.0)[0]:
            steer = -here / max(np.linalg.norm(here), 1e-9)
        for attempt in range(24):
            turn = rng.normal(size=3) * (0.25 + 0.05 * attempt) + steer * (0.5 + 0.1 * attempt)
            proposal = heading + turn - np.dot(turn, heading) * heading
            proposal /= np.linalg.norm(proposal)
            angle = np.arccos(np.clip(np.dot(proposal, heading), -1.0, 1.0))
            if angle > 0.6:  # limit the bend per step
                proposal = heading * np.cos(0.6) + (proposal - np.dot(proposal, heading) * heading) / max(
                    np.linalg.norm(proposal - np.dot(proposal, heading) * heading), 1e-12) * np.sin(0.6)
            candidate = points[-1] + step * proposal
            if not inside(candidate[None], 0.0)[0]:
                continue
            old = np.asarray(points[:-skip]) if len(points) > skip else np.zeros((0, 3))
            near = np.concatenate([old, others])
            if len(near) and np.min(np.linalg.norm(near - candidate, axis=1)) < gap:
                continue
            points.append(candidate)
            heading = proposal
            break
        else:
            break
    return np.asarray(points)


@register_object("sponge")
def make_sponge(rng: np.random.Generator) -> RFOObject:
    """A retained gauze sponge or laparotomy pad: usually wadded with a tangled marker thread, sometimes flat.

    Wadded (80 %): the cotton of the pad (its sheet volume times a bulk factor of 1.0–1.6) as an
    irregular, star-shaped wad; a tangled 3-D BaSO4 marker thread (the pad's length, two threads on half
    the laparotomy pads) runs through it; 8–40 trapped gas pockets (1–3.5 mm) give the mottled, whorled
    look of a gossypiboma. Flat (20 %): the pad folded at most twice and crumpled, its thread woven
    along its length (a pad laid flat in a wound).
    """
    if rng.random() < 0.2:
        return _flat_sponge(rng)
    kind, width, height, thickness = _sponge_kind_and_size(rng)
    density = rng.uniform(0.6, 1.1)
    bulk = rng.uniform(1.0, 1.6)
    radius = (3.0 * width * height * thickness * bulk / (4.0 * np.pi)) ** (1.0 / 3.0)
    scales = np.array([1.0, rng.uniform(0.75, 1.0), rng.uniform(0.55, 0.9)])
    scales /= np.cbrt(np.prod(scales))  # the same volume
    amplitude = rng.uniform(0.08, 0.22)
    shape = _wad_radius_function(rng, amplitude)
    angles = np.linspace(0.0, np.pi, 25)
    profile = np.column_stack([np.sin(angles), -np.cos(angles)])
    profile[0, 0] = profile[-1, 0] = 0.0
    unit_v, body_f = P.revolve(profile, 40)
    directions = unit_v / np.linalg.norm(unit_v, axis=1, keepdims=True)
    body_v = directions * (radius * shape(directions))[:, None] * scales

    def inside(points: np.ndarray, margin: float) -> np.ndarray:
        q = points / scales
        norm = np.linalg.norm(q, axis=1)
        d = q / np.maximum(norm, 1e-12)[:, None]
        return norm < radius * shape(d) - margin / scales.min()

    thread_r = rng.uniform(0.25, 0.5)
    n_threads = 2 if kind == "laparotomy_pad" and rng.random() < 0.5 else 1
    threads: list[np.ndarray] = []
    for _ in range(n_threads):
        line = _tangled_thread(rng, lambda p, extra: inside(p, thread_r + 0.8 + extra), height, thread_r, 0.2,
                               threads)
        if len(line) >= 4:
            threads.append(line)
    parts = [Part("body", body_v, body_f, "cellulose", density)]
    for i, line in enumerate(threads):
        v, f = P.tube(line, thread_r, sides=8)
        parts.append(Part(f"marker_{i}", v, f, "marker_thread", get_material("marker_thread").density_g_cm3, "body"))
    # Gas pockets: small ellipsoids away from the threads, each other and the wad's surface.
    coarse = profile[::3].copy()
    coarse[0, 0] = coarse[-1, 0] = 0.0
    sphere_v, sphere_f = P.revolve(coarse, 12)
    pockets: list[tuple[np.ndarray, float]] = []
    thread_points = np.concatenate(threads) if threads else np.zeros((0, 3))
    for _ in range(int(rng.integers(8, 41))):
        r_gas = rng.uniform(1.0, 3.5)
        centre = rng.uniform(-1, 1, size=3) * radius * scales * 0.8
        if not inside(centre[None], r_gas * 1.3 + 1.0)[0]:
            continue
        if len(thread_points) and np.min(np.linalg.norm(thread_points - centre, axis=1)) < r_gas * 1.3 + thread_r + 0.5:
            continue
        if any(np.linalg.norm(centre - c) < (r_gas + r) * 1.3 + 0.5 for c, r in pockets):
            continue
        pockets.append((centre, r_gas))
        stretch = np.array([1.0, rng.uniform(0.6, 1.0), rng.uniform(0.5, 1.0)]) * r_gas
        rot = axis_angle_matrix(rng.normal(size=3), rng.uniform(0, np.pi))
        parts.append(Part(f"gas_{len(pockets) - 1}", (sphere_v * stretch) @ rot.T + centre, sphere_f, "air",
                          get_material("air").density_g_cm3, "body"))
    params = {"kind": kind, "form": "wadded", "width_mm": _r(width, 1), "height_mm": _r(height, 1),
              "thickness_mm": _r(thickness, 2), "cotton_density_g_cm3": _r(density), "wad_radius_mm": _r(radius, 2),
              "marker_radius_mm": _r(thread_r), "n_marker_threads": len(threads),
              "marker_length_mm": _r(sum(np.linalg.norm(np.diff(t, axis=0), axis=1).sum() for t in threads), 1),
              "n_gas_pockets": len(pockets)}
    return RFOObject("sponge", tuple(parts), params)


def _sponge_kind_and_size(rng: np.random.Generator) -> tuple[str, float, float, float]:
    """A gauze sponge (70-105 mm) or a laparotomy pad (140-230 mm): kind, width, height, thickness in mm."""
    kind = "laparotomy_pad" if rng.random() < 0.4 else "gauze"
    if kind == "gauze":
        width, height = rng.uniform(70, 105, size=2)
        thickness = rng.uniform(1.8, 3.0)
    else:
        width, height = rng.uniform(140, 230, size=2)
        thickness = rng.uniform(2.5, 4.0)
    return kind, float(width), float(height), float(thickness)


def _flat_sponge(rng: np.random.Generator) -> RFOObject:
    """Gauze sponge or laparotomy pad with a woven BaSO4 marker thread, folded and crumpled."""
    kind, width, height, thickness = _sponge_kind_and_size(rng)
    density = rng.uniform(0.6, 1.1)  # cotton soaked with fluid (some trapped gas), as g/cm^3 of cellulose
    thread_r = rng.uniform(0.25, min(0.5, thickness / 4))
    # Fold radii are drawn first so the mesh is fine enough to follow the tightest bend.
    n_folds = int(rng.integers(0, 3))
    radii, half = [], thickness / 2
    for _ in range(n_folds):
        radii.append(half + rng.uniform(1.0, 3.0))
        half = radii[-1] + half
    step = min(max(width, height) / 45, np.pi * min(radii, default=1e9) / 6)
    body_v, body_f = P.sheet(width, height, thickness, step)
    # Marker thread woven through the plies along the length.
    x_m = rng.uniform(-0.3, 0.3) * width
    n_pts = int(height / 0.5)
    y = np.linspace(-height / 2 + 2, height / 2 - 2, n_pts)
    meander = rng.uniform(0.5, 2.0) * np.sin(2 * np.pi * y / rng.uniform(8, 20) + rng.uniform(0, 6.3))
    weave_amp = 0.35 * (thickness / 2 - thread_r)
    weave = weave_amp * np.sin(2 * np.pi * y / rng.uniform(2.5, 4.5))
    thread = np.column_stack([x_m + meander, y, weave])
    threads = [thread]
    if kind == "laparotomy_pad" and rng.random() < 0.5:
        threads.append(np.column_stack([-x_m * 0.5 - width * 0.2 + meander[::-1], y, -weave]))

    folds = []
    pts_all = [body_v] + threads
    for radius in radii:
        stacked = pts_all[0]
        zc = (stacked[:, 2].min() + stacked[:, 2].max()) / 2
        angle = rng.uniform(0, np.pi)
        rot = axis_angle_matrix(np.array([0.0, 0.0, 1.0]), angle)
        along = (stacked @ rot)[:, 0]
        x0 = float(rng.uniform(np.percentile(along, 30), np.percentile(along, 70)))
        pts_all = [_bend(p, angle, x0, zc, radius) for p in pts_all]
        folds.append({"angle_deg": _r(np.degrees(angle), 1), "radius_mm": _r(radius, 2)})
    amplitude = rng.uniform(1.0, 4.0) if kind == "gauze" else rng.uniform(3.0, 12.0)
    wavelengths = (25.0, 80.0) if kind == "gauze" else (50.0, 140.0)
    deform = _crumple(body_v, rng, amplitude, wavelengths, rng.uniform(0.0, 6.0))
    pts_all = [deform(p) for p in pts_all]
    parts = [Part("body", pts_all[0], body_f, "cellulose", density)]
    for i, line in enumerate(pts_all[1:]):
        v, f = P.tube(line, thread_r, sides=8)
        parts.append(Part(f"marker_{i}", v, f, "marker_thread", get_material("marker_thread").density_g_cm3, "body"))
    params = {"kind": kind, "form": "flat", "width_mm": _r(width, 1), "height_mm": _r(height, 1),
              "thickness_mm": _r(thickness, 2),
              "cotton_density_g_cm3": _r(density), "marker_radius_mm": _r(thread_r), "folds": folds,
              "crumple_amplitude_mm": _r(amplitude, 2), "n_marker_threads": len(threads)}
    return RFOObject("sponge", tuple(parts), params)


@register_object("cottonoid")
def make_cottonoid(rng: np.random.Generator) -> RFOObject:
    """Cottonoid (neuro) patty with an embedded radiopaque strip and a marker string."""
    width, height = rng.uniform(10, 25), rng.uniform(20, 76)
    thickness = rng.uniform(1.0, 2.0)
    density = rng.uniform(0.5, 1.0)
    body_v, body_f = P.sheet(width, height, thickness, min(width, height) / 8)
    strip_t = min(0.3, thickness / 3)
    strip_w = rng.uniform(1.0, min(3.0, width / 3))
    strip_v, strip_f = P.sheet(strip_w, height * rng.uniform(0.5, 0.8), strip_t, strip_w)
    string_r = rng.uniform(0.2, 0.35)
    n = 120
    length = rng.uniform(60, 150)
    heading = np.array([0.0, -1.0, 0.0])
    pts = [np.array([0.0, -height / 2 - string_r - 0.4, 0.0])]
    turn = 0.0
    for _ in range(n - 1):
        turn = 0.85 * turn + rng.normal(0, 0.05)
        heading = axis_angle_matrix(np.array([0.0, 0.0, 1.0]), turn) @ heading
        heading[1] = min(heading[1], -0.3)  # keep moving away from the patty
        heading[2] = 0.15 * np.sin(len(pts) / 15.0)
        heading /= np.linalg.norm(heading)
        pts.append(pts[-1] + heading * length / n)
    deform = _crumple(body_v, rng, rng.uniform(0.3, 2.0), (20.0, 60.0), 1.0)
    string_v, string_f = P.tube(deform(np.asarray(pts)), string_r, sides=8)
    parts = (
        Part("body", deform(body_v), body_f, "cellulose", density),
        Part("strip", deform(strip_v), strip_f, "marker_thread", get_material("marker_thread").density_g_cm3, "body"),
        Part("string", string_v, string_f, "marker_thread", get_material("marker_thread").density_g_cm3),
    )
    params = {"width_mm": _r(width, 1), "height_mm": _r(height, 1), "thickness_mm": _r(thickness, 2),
              "cotton_density_g_cm3": _r(density), "strip_width_mm": _r(strip_w, 2), "string_length_mm": _r(length, 1)}
    return RFOObject("cottonoid", parts, params)

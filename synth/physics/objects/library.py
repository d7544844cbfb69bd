"""The procedural, parametric library of retained foreign objects (and external distractors).

One generator per RFO class of :mod:`rfo_bench.categories`, registered by name in
:mod:`synth.physics.objects.registry` (textiles: :mod:`.textiles`). A generator takes a
``numpy.random.Generator`` and returns an :class:`RFOObject`: closed meshes (mm, centred near the
origin) made of registered materials, plus the parameters drawn, which are written into the COCO
annotation. Parts of one object never overlap, except an embedded part (``host`` set) lying inside the
part it replaces — so summing per-part path lengths is exact.

Dimensions follow the devices: 4x4" gauze and 18x18" laparotomy pads (crumpled when retained), ½" x 3"
cottonoid patties, ½ and ⅜ circle suture needles (10–40 mm chord, 0.25–1 mm wire), #10/#11/#15
scalpel blades (0.4 mm steel), 14–16 cm Kelly hemostats, 0.014–0.035" guidewires.
"""

from __future__ import annotations

import numpy as np

from synth.physics.geometry import axis_angle_matrix
from synth.physics.materials import get_material
from synth.physics.objects import primitives as P
from synth.physics.objects.registry import (
    Part,
    RFOObject,
    list_object_classes,
    make_object,
    reference_attenuation,
    register_object,
)
from synth.physics.objects.registry import rounded as _r

__all__ = ["Part", "RFOObject", "list_object_classes", "make_object", "reference_attenuation"]


# --- critical objects (sponges and cottonoids: :mod:`synth.physics.objects.textiles`) ---------------

@register_object("needle")
def make_needle(rng: np.random.Generator) -> RFOObject:
    """Curved suture needle: ½ or ⅜ circle, tapered point, swaged end; 316 steel."""
    fraction = "1/2" if rng.random() < 0.5 else "3/8"
    arc = np.pi if fraction == "1/2" else 0.75 * np.pi
    chord = rng.uniform(10.0, 40.0)
    radius_curve = chord / (2 * np.sin(arc / 2))
    wire_r = float(np.clip(chord / rng.uniform(45, 80), 0.12, 0.5))
    n = 90
    t = np.linspace(-arc / 2, arc / 2, n)
    centre_line = np.column_stack([radius_curve * np.sin(t), radius_curve * np.cos(t), np.zeros(n)])
    u = np.linspace(0, 1, n)
    radii = np.full(n, wire_r)
    radii[u < 0.12] = wire_r * 1.12  # swaged end holding the suture
    taper = u > 0.75
    radii[taper] = wire_r * np.clip(1 - (u[taper] - 0.75) / 0.25, 0.04, 1)
    v, f = P.tube(centre_line, radii, sides=10)
    params = {"circle_fraction": fraction, "chord_mm": _r(chord, 2), "wire_diameter_mm": _r(2 * wire_r),
              "curvature_radius_mm": _r(radius_curve, 2)}
    return RFOObject("needle", (Part("needle", v, f, "stainless_steel", 8.0),), params)


def _blade_outline(rng: np.random.Generator) -> tuple[np.ndarray, str, float]:
    size = str(rng.choice(["10", "11", "15"]))
    length = {"10": 39.0, "11": 40.0, "15": 37.0}[size] * rng.uniform(0.97, 1.03)
    tang_w = rng.uniform(5.0, 6.0)
    belly = {"10": 3.0, "11": 1.2, "15": 1.5}[size]
    x_t = 0.45 * length
    xs = np.linspace(x_t, length, 24)
    s = (xs - x_t) / (length - x_t)
    if size == "11":  # straight cutting edge rising to a sharp point, straight back
        tip_y = 0.35 * tang_w
        bottom = -tang_w / 2 - belly * (1 - s) + s * (tip_y + tang_w / 2)  # a straight edge ending at the tip
        top = tang_w / 2 - s**4 * (tang_w / 2 - tip_y)
    else:  # convex belly curving up to the tip
        bottom = -tang_w / 2 - belly * np.sin(np.pi * np.clip(s * 1.2, 0, 1)) + s**2 * (tang_w * 0.55)
        top = tang_w / 2 + 0.4 * np.sin(np.pi * s) - s**3 * (tang_w * 0.45)
    outline = [(0.0, -tang_w / 2)]
    outline += list(zip(xs, bottom))
    outline += list(zip(xs[::-1][1:-1], top[::-1][1:-1]))
    outline += [(x_t, tang_w / 2), (0.0, tang_w / 2)]
    # Handle slot reached through a 0.02 mm slit from the back edge (keeps the polygon simple).
    slit, slot_h = 0.01, rng.uniform(0.9, 1.2)
    x0, x1 = 0.1 * length, 0.38 * length
    outline += [(0.0, slit), (x0, slit), (x0, slot_h), (x1, slot_h), (x1, -slot_h), (x0, -slot_h), (x0, -slit),
                (0.0, -slit)]
    return np.asarray(outline), size, length


@register_object("blade")
def make_blade(rng: np.random.Generator) -> RFOObject:
    """Scalpel blade #10, #11 or #15 with its handle slot, 0.35–0.45 mm thick steel."""
    outline, size, length = _blade_outline(rng)
    thickness = rng.uniform(0.35, 0.45)
    v, f = P.extrude(outline, thickness)
    material = "stainless_steel" if rng.random() < 0.5 else "iron"
    params = {"blade_number": size, "length_mm": _r(length, 2), "thickness_mm": _r(thickness)}
    return RFOObject("blade", (Part("blade", v, f, material, get_material(material).density_g_cm3),), params)


@register_object("clamp")
def make_clamp(rng: np.random.Generator) -> RFOObject:
    """Hemostat (Kelly/Crile): two arms with finger rings, stacked at the box lock, straight or curved jaws."""
    total = rng.uniform(125, 160)
    jaw_len = total * rng.uniform(0.25, 0.32)
    ring_major, ring_minor = rng.uniform(7.0, 9.0), rng.uniform(1.2, 1.7)
    shank_r = rng.uniform(1.4, 1.9)
    curved = rng.random() < 0.5
    spread = rng.uniform(9.0, 13.0)
    opening = rng.uniform(0.0, np.radians(8.0))
    layer = shank_r + 0.05
    parts = []
    for side, sign in (("a", 1.0), ("b", -1.0)):
        handle_len = total - jaw_len - 2 * ring_major
        ring_c = np.array([-handle_len - ring_major, sign * spread, 0.0])
        start = ring_c + (np.array([0.0, 0.0, 0.0]) - ring_c) / np.linalg.norm(ring_c) * (ring_major + ring_minor + 0.1)
        s = np.linspace(0, 1, 30)[:, None]
        shank = start[None, :] * (1 - s)
        u = np.linspace(0, 1, 30)[1:]
        bend = (np.radians(25) if curved else 0.0) * u**2
        ang = sign * opening / 2 + bend
        jaw = np.column_stack([jaw_len * u * np.cos(ang), jaw_len * u * np.sin(ang), np.zeros_like(u)])
        line = np.concatenate([shank, jaw])
        line[:, 2] = sign * layer
        radii = np.concatenate([np.full(len(shank), shank_r),
                                shank_r * (1 - 0.55 * u)])
        tv, tf = P.tube(line, radii, sides=10)
        parts.append(Part(f"arm_{side}", tv, tf, "stainless_steel", 8.0))
        rv, rf = P.torus(ring_major, ring_minor, 28, 10)
        rv = rv + ring_c + np.array([0.0, 0.0, sign * layer])
        parts.append(Part(f"ring_{side}", rv, rf, "stainless_steel", 8.0))
        # Ratchet block beside the shank, near the ring, facing the other arm.
        direction = -start / np.linalg.norm(start)
        across = np.array([-direction[1], direction[0], 0.0])
        across *= -sign * np.sign(across[1]) if across[1] != 0 else 1.0
        centre = start * 0.85 + across * (shank_r + 0.9) + np.array([0.0, 0.0, sign * layer])
        angle = np.arctan2(direction[1], direction[0])
        rb = P.transform(P.box((6.0, 1.2, 1.6)), axis_angle_matrix(np.array([0.0, 0.0, 1.0]), angle), centre)
        parts.append(Part(f"ratchet_{side}", rb[0], rb[1], "stainless_steel", 8.0))
    params = {"length_mm": _r(total, 1), "jaw_length_mm": _r(jaw_len, 1), "curved": bool(curved),
              "ring_diameter_mm": _r(2 * ring_major, 2), "opening_deg": _r(np.degrees(opening), 2)}
    return RFOObject("clamp", tuple(parts), params)


@register_object("guidewire")
def make_guidewire(rng: np.random.Generator) -> RFOObject:
    """Guidewire fragment (0.014–0.035"), optionally with a J tip; steel or nitinol."""
    length = rng.uniform(30, 200)
    radius = float(rng.choice([0.178, 0.318, 0.445])) * rng.uniform(0.97, 1.03)
    n = int(length / 1.0)
    line = P.smooth_curve(rng, length, n, rng.uniform(0.01, 0.04))
    j_tip = rng.random() < 0.4
    if j_tip:
        t = line[-1] - line[-2]
        t /= np.linalg.norm(t)
        side = P.cross(t, np.array([0.0, 0.0, 1.0]))
        side /= np.linalg.norm(side)
        rad = rng.uniform(3.0, 6.0)
        phi = np.linspace(0, np.pi * 0.95, 30)[1:]
        centre = line[-1] + side * rad
        arc = centre[None, :] - side[None, :] * rad * np.cos(phi)[:, None] + t[None, :] * rad * np.sin(phi)[:, None]
        line = np.concatenate([line, arc])
    material = "stainless_steel" if rng.random() < 0.6 else "nitinol"
    v, f = P.tube(line, radius, sides=8)
    params = {"length_mm": _r(length, 1), "diameter_mm": _r(2 * radius), "j_tip": bool(j_tip)}
    return RFOObject("guidewire", (Part("wire", v, f, material, get_material(material).density_g_cm3),), params)


# --- non-critical distractors ------------------------------------------------------------------------

@register_object("chain")
def make_chain(rng: np.random.Generator) -> RFOObject:
    """Necklace (rolo) chain of interlocking round links along a draped curve."""
    link_r = rng.uniform(0.9, 2.0)
    wire_r = link_r / rng.uniform(3.2, 4.5)
    pitch = 2 * link_r - 2 * wire_r - 0.15 * wire_r
    length = rng.uniform(60, 220)
    n_links = max(int(length / pitch), 3)
    fine = P.smooth_curve(rng, n_links * pitch * 1.0, n_links * 4 + 1, rng.uniform(0.01, 0.03), planar=True)
    seg = np.linalg.norm(np.diff(fine, axis=0), axis=1)
    arclen = np.concatenate([[0.0], np.cumsum(seg)])
    centres = np.column_stack([np.interp(np.arange(n_links) * pitch, arclen, fine[:, k]) for k in range(3)])
    tangent, normal, binormal = P._frames(centres)
    material = str(rng.choice(["silver", "stainless_steel", "brass"]))
    parts = []
    base_v, base_f = P.torus(link_r, wire_r, 16, 8)
    for i, c in enumerate(centres):
        other = normal[i] if i % 2 == 0 else binormal[i]
        axis = P.cross(tangent[i], other)
        rot = np.column_stack([tangent[i], other, axis])
        if np.linalg.det(rot) < 0:
            rot[:, 2] *= -1
        parts.append(Part(f"link_{i}", base_v @ rot.T + c, base_f, material, get_material(material).density_g_cm3))
    params = {"link_diameter_mm": _r(2 * link_r, 2), "wire_diameter_mm": _r(2 * wire_r), "n_links": n_links,
              "material": material}
    return RFOObject("chain", tuple(parts), params)


@register_object("zipper")
def make_zipper(rng: np.random.Generator) -> RFOObject:
    """Clothing zipper: two interleaved rows of teeth, a slider and a pull tab; open above the slider."""
    length = rng.uniform(50, 160)
    pitch = rng.uniform(1.8, 3.0)
    tooth_l, tooth_w, tooth_t = 0.45 * pitch, rng.uniform(3.5, 5.0), rng.uniform(1.0, 1.6)
    material = str(rng.choice(["brass", "aluminum", "stainless_steel"]))
    density = get_material(material).density_g_cm3
    slider_y = rng.uniform(-0.2, 0.45) * length
    splay = rng.uniform(0.0, 0.25)
    parts = []
    n = int(length / pitch)
    for k in range(n):
        for side, offset in (("l", 0.0), ("r", 0.5)):
            y = (k + offset) * pitch - length / 2
            sign = -1.0 if side == "l" else 1.0
            open_shift = sign * splay * max(y - slider_y, 0.0)
            cx = sign * (tooth_w / 2 - 0.8) + open_shift
            v, f = P.box((tooth_w, tooth_l, tooth_t), (cx, y, 0.0))
            parts.append(Part(f"tooth_{side}{k}", v, f, material, density))
    plate_t = rng.uniform(0.5, 0.8)
    for sign in (1.0, -1.0):
        v, f = P.box((tooth_w * 2 + 2.5, 12.0, plate_t), (0.0, slider_y, sign * (tooth_t / 2 + 0.3 + plate_t / 2)))
        parts.append(Part(f"slider_{'top' if sign > 0 else 'bottom'}", v, f, material, density))
    tab_z = tooth_t / 2 + 0.3 + plate_t + 0.4 + 0.4
    v, f = P.box((6.0, rng.uniform(14, 22), 0.8), (0.0, slider_y - 12.0, tab_z))
    parts.append(Part("pull_tab", v, f, material, density))
    params = {"length_mm": _r(length, 1), "tooth_pitch_mm": _r(pitch, 2), "material": material,
              "open_splay": _r(splay, 3)}
    return RFOObject("zipper", tuple(parts), params)


@register_object("button")
def make_button(rng: np.random.Generator) -> RFOObject:
    """A metal jeans button with its tack, a metal snap, or a plastic sewing button."""
    kind = str(rng.choice(["jeans", "snap", "plastic"], p=[0.45, 0.3, 0.25]))
    a = rng.uniform(6.0, 9.5) if kind != "snap" else rng.uniform(5.0, 7.0)
    parts = []
    if kind == "plastic":
        t = rng.uniform(1.5, 3.0)
        profile = np.array([[0, -t / 2 + 0.4], [a * 0.7, -t / 2 + 0.4], [a * 0.75, -t / 2], [a, -t / 2 + 0.2],
                            [a, t / 2], [a * 0.8, t / 2], [a * 0.7, t / 2 - 0.5], [0, t / 2 - 0.5]])
        v, f = P.revolve(profile, 36)
        material = str(rng.choice(["pvc", "polyethylene"]))
        parts.append(Part("disc", v, f, material, get_material(material).density_g_cm3))
    else:
        material = str(rng.choice(["brass", "stainless_steel", "aluminum"]))
        wall = rng.uniform(0.3, 0.5)
        h = rng.uniform(1.5, 3.0)
        # A thin pressed-metal cap: an annular shell ring plus a domed top plate (no overlap).
        ring = np.array([[a - wall, 0.0], [a, 0.0], [a, h], [a - wall, h]])
        rv, rf = P.ring_revolve(ring, 48)
        parts.append(Part("cap_rim", rv, rf, material, get_material(material).density_g_cm3))
        dome = np.array([[0, h + 0.01], [a - 0.02, h + 0.01], [a - 0.02, h + 0.01 + wall], [a * 0.5, h + 0.3 + wall],
                         [0, h + 0.45 + wall]])
        dv, df = P.revolve(dome, 48)
        parts.append(Part("cap_top", dv, df, material, get_material(material).density_g_cm3))
        stem = np.array([[0, -3.0], [1.2, -3.0], [1.2, -2.6], [0.6, -2.4], [0.6, -0.1], [0, -0.1]])
        sv, sf = P.revolve(stem, 24)
        parts.append(Part("tack", sv, sf, material, get_material(material).density_g_cm3))
    params = {"kind": kind, "diameter_mm": _r(2 * a, 2), "material": parts[0].material}
    return RFOObject("button", tuple(parts), params)


@register_object("ecg_electrode")
def make_ecg_electrode(rng: np.random.Generator) -> RFOObject:
    """ECG electrode: foam pad, hydrogel, Ag/AgCl eyelet and a metal snap stud."""
    pad_r = rng.uniform(17.0, 28.0)
    gel_r = rng.uniform(6.0, 10.0)
    pad_t, gel_t = rng.uniform(0.8, 1.5), rng.uniform(0.8, 1.5)
    snap_material = str(rng.choice(["stainless_steel", "brass"]))

    def disc(r: float, z0: float, z1: float, n: int = 48):
        return P.revolve(np.array([[0, z0], [r, z0], [r, z1], [0, z1]]), n)

    gel = disc(gel_r, -gel_t - 0.11, -0.11)
    eyelet = disc(rng.uniform(4.0, 5.5), -0.1, -0.01)
    pad = disc(pad_r, 0.0, pad_t, 64)
    z = pad_t + 0.01
    stud = np.array([[0, z], [2.3, z], [2.3, z + 0.4], [1.3, z + 0.5], [1.3, z + 1.7], [1.95, z + 2.1],
                     [1.95, z + 2.7], [1.4, z + 3.3], [0, z + 3.4]])
    sv, sf = P.revolve(stud, 32)
    parts = (
        Part("gel", *gel, "water", 1.0),
        Part("eyelet", *eyelet, "silver", get_material("silver").density_g_cm3),
        Part("foam_pad", *pad, "polyethylene", rng.uniform(0.05, 0.15)),
        Part("snap", sv, sf, snap_material, get_material(snap_material).density_g_cm3),
    )
    params = {"pad_diameter_mm": _r(2 * pad_r, 1), "snap_material": snap_material}
    return RFOObject("ecg_electrode", parts, params)

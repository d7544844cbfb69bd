"""X-ray attenuation of the materials found in patients and in retained foreign objects.

Every coefficient comes from ``xraydb`` (Elam, Ravel & Sieber tables): elements and compounds by
chemical formula through :func:`xraydb.material_mu`, mixtures (alloys, ICRU tissues, loaded polymers)
as the mass-fraction weighted sum of the elements' or compounds' mass attenuation coefficients. The
module only holds *definitions* (composition and nominal density); no coefficient is typed in.

Units: mass attenuation in cm²/g, density in g/cm³, linear attenuation in 1/mm (the toolkit measures
lengths in mm).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from toolkit_core.errors import UserInputError


@dataclass(frozen=True)
class Material:
    """A material definition.

    Attributes:
        name: registry key.
        density_g_cm3: nominal density.
        formula: chemical formula (xraydb syntax) for a compound or element, or ``None``.
        mass_fractions: for a mixture, ``((component, fraction), ...)`` where a component is an
            element symbol, a formula, or another registered material name; fractions sum to 1.
        description: where the composition comes from.
    """

    name: str
    density_g_cm3: float
    formula: str | None = None
    mass_fractions: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    description: str = ""


def _mix(**fractions: float) -> tuple[tuple[str, float], ...]:
    total = sum(fractions.values())
    return tuple((k, v / total) for k, v in fractions.items())


MATERIALS: dict[str, Material] = {}


def register_material(material: Material) -> Material:
    """Add a material to the registry; a duplicate name is an error."""
    if material.name in MATERIALS:
        raise ValueError(f"material {material.name!r} is already registered")
    if material.formula is None and not material.mass_fractions:
        raise ValueError(f"material {material.name!r} needs a formula or mass fractions")
    MATERIALS[material.name] = material
    return material


for _m in (
    # Metals and alloys.
    Material("stainless_steel", 8.0, mass_fractions=_mix(Fe=0.655, Cr=0.17, Ni=0.12, Mo=0.025, Mn=0.02, Si=0.01),
             description="AISI 316 stainless steel (nominal composition)"),
    Material("iron", 7.874, formula="Fe"),
    Material("titanium", 4.506, formula="Ti"),
    Material("silver", 10.49, formula="Ag"),
    Material("tungsten", 19.3, formula="W"),
    Material("aluminum", 2.699, formula="Al"),
    Material("copper", 8.96, formula="Cu"),
    Material("brass", 8.5, mass_fractions=_mix(Cu=0.63, Zn=0.37), description="cartridge brass (zippers, buttons)"),
    Material("nitinol", 6.45, mass_fractions=_mix(Ni=0.55, Ti=0.45), description="NiTi guidewire core"),
    # Contrast media and polymers.
    Material("barium_sulfate", 4.5, formula="BaSO4"),
    Material("cellulose", 1.5, formula="C6H10O5", description="cotton fibre (bulk density of the fibre)"),
    Material("pvc", 1.38, formula="C2H3Cl"),
    Material("polyethylene", 0.94, formula="C2H4"),
    Material("marker_thread", 2.36, mass_fractions=_mix(barium_sulfate=0.6, pvc=0.4),
             description="radiopaque sponge marker: PVC monofilament loaded with 60 % BaSO4 by mass"),
    # Patient and environment (ICRU Report 44 compositions).
    Material("water", 1.0, formula="H2O"),
    Material("soft_tissue", 1.06, mass_fractions=_mix(H=0.102, C=0.143, N=0.034, O=0.708, Na=0.002, P=0.003, S=0.003,
                                                       Cl=0.002, K=0.003), description="ICRU-44 soft tissue"),
    Material("lung", 0.26, mass_fractions=_mix(H=0.103, C=0.105, N=0.031, O=0.749, Na=0.002, P=0.002, S=0.003,
                                                Cl=0.003, K=0.002), description="ICRU-44 lung, inflated"),
    Material("cortical_bone", 1.92, mass_fractions=_mix(H=0.034, C=0.155, N=0.042, O=0.435, Na=0.001, Mg=0.002,
                                                         P=0.103, S=0.003, Ca=0.225), description="ICRU-44 cortical bone"),
    Material("air", 0.001205, mass_fractions=_mix(C=0.000124, N=0.755268, O=0.231781, Ar=0.012827),
             description="dry air, sea level"),
    # Detector.
    Material("csi", 4.51, formula="CsI", description="caesium iodide scintillator"),
):
    register_material(_m)

ALIASES = {
    "steel": "stainless_steel", "ss316": "stainless_steel", "316": "stainless_steel", "fe": "iron",
    "ti": "titanium", "ag": "silver", "w": "tungsten", "baso4": "barium_sulfate", "cotton": "cellulose",
    "pe": "polyethylene", "tissue": "soft_tissue", "bone": "cortical_bone",
}


def get_material(name: str) -> Material:
    """Look up a registered material by name or alias (case-insensitive).

    Raises:
        UserInputError: unknown name; the message lists the known ones.
    """
    key = str(name).strip().lower().replace(" ", "_").replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in MATERIALS:
        known = ", ".join(sorted(MATERIALS))
        raise UserInputError(f"unknown material; expected one of: {known}", field="material", value=name)
    return MATERIALS[key]


def list_materials() -> list[str]:
    """Registered material names."""
    return sorted(MATERIALS)


@lru_cache(maxsize=512)
def _mass_attenuation_cached(name: str, energies_ev: tuple[float, ...]) -> np.ndarray:
    import xraydb

    material = MATERIALS[name]
    energy = np.asarray(energies_ev, dtype=np.float64)
    if material.formula is not None:
        # material_mu returns mu in 1/cm for the given density; density 1 gives cm^2/g.
        return np.atleast_1d(np.asarray(xraydb.material_mu(material.formula, energy, density=1.0), dtype=np.float64))
    total = np.zeros_like(energy)
    for component, fraction in material.mass_fractions:
        if component in MATERIALS:
            total += fraction * _mass_attenuation_cached(component, energies_ev)
        else:
            total += fraction * np.asarray(xraydb.mu_elam(component, energy), dtype=np.float64)
    return total


def mass_attenuation(material: str, energy_kev: float | np.ndarray) -> np.ndarray:
    """Mass attenuation coefficient μ/ρ (total, with coherent scattering) of a registered material.

    Args:
        material: a registered name or alias (see :func:`list_materials`).
        energy_kev: photon energy or energies in keV (1–500 keV).

    Returns:
        μ/ρ in cm²/g with the shape of ``energy_kev`` (``(1,)`` for a scalar).

    Raises:
        UserInputError: unknown material, or energies outside 1–500 keV.
    """
    entry = get_material(material)
    energy = np.atleast_1d(np.asarray(energy_kev, dtype=np.float64))
    if energy.size and (not np.all(np.isfinite(energy)) or energy.min() < 1.0 or energy.max() > 500.0):
        raise UserInputError("photon energies must lie in 1-500 keV", field="energy_kev",
                             value=(float(energy.min()), float(energy.max())))
    values = _mass_attenuation_cached(entry.name, tuple((energy.ravel() * 1000.0).tolist()))
    return values.reshape(energy.shape).copy()


def linear_attenuation_per_mm(
    material: str, energy_kev: float | np.ndarray, density_g_cm3: float | None = None
) -> np.ndarray:
    """Linear attenuation coefficient μ in 1/mm: ``μ/ρ · ρ / 10``.

    Args:
        material: registered name or alias.
        energy_kev: energies in keV.
        density_g_cm3: density; default the material's nominal density.
    """
    density = get_material(material).density_g_cm3 if density_g_cm3 is None else float(density_g_cm3)
    if not np.isfinite(density) or density < 0:
        raise UserInputError("density must be a non-negative number in g/cm^3", field="density_g_cm3", value=density)
    return mass_attenuation(material, energy_kev) * density / 10.0


def material_elements(material: str) -> set[str]:
    """Chemical elements a registered material contains."""
    import xraydb

    entry = get_material(material)
    if entry.formula is not None:
        return set(xraydb.chemparse(entry.formula))
    elements: set[str] = set()
    for component, _ in entry.mass_fractions:
        elements |= material_elements(component) if component in MATERIALS else {component}
    return elements


@lru_cache(maxsize=1)
def absorption_edges_kev(lo_kev: float = 10.0, hi_kev: float = 150.0) -> tuple[float, ...]:
    """K and L1 absorption edges (keV) of every element of the registered materials inside a range.

    Energy bins must not straddle these edges, where μ/ρ jumps several-fold (Ba 37.4, W 69.5 keV).
    """
    import xraydb

    edges: set[float] = set()
    for name in MATERIALS:
        for element in material_elements(name):
            for edge_name in ("K", "L1"):
                try:
                    energy = xraydb.xray_edge(element, edge_name).energy / 1000.0
                except (ValueError, KeyError, AttributeError):
                    continue
                if lo_kev < energy < hi_kev:
                    edges.add(round(float(energy), 4))
    return tuple(sorted(edges))

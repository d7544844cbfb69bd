"""The registry of object generators: the part and object types, ``@register_object`` and ``make_object``.

One generator per RFO class of :mod:`rfo_bench.categories`, registered by name; the generators live in
the modules :data:`GENERATOR_MODULES` (rigid objects in :mod:`.library`, textiles in :mod:`.textiles`),
which this module imports by name the first time a generator is asked for, as the unlearning-method
registry does: generator modules import the registry, never the other way round.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rfo_bench.categories import CATEGORY_BY_NAME, NON_CRITICAL
from synth.physics.materials import get_material
from toolkit_core.errors import UserInputError

GENERATOR_MODULES = ("library", "textiles")
"""Modules of :mod:`synth.physics.objects` whose generators register themselves on import."""

_discovered = False


@dataclass(frozen=True, eq=False)
class Part:
    """One closed solid of an object.

    Attributes:
        name: part name, unique within the object (``body``, ``marker``, ...).
        vertices_mm: ``(V, 3)`` in the object's frame.
        faces: ``(F, 3)`` outward-oriented triangles.
        material: registered material.
        density_g_cm3: density of this part.
        host: name of the part this one is embedded in (it replaces that part's material), or ``None``
            when it displaces the surrounding medium (tissue inside the body, air outside).
    """

    name: str
    vertices_mm: np.ndarray
    faces: np.ndarray
    material: str
    density_g_cm3: float
    host: str | None = None


@dataclass(frozen=True, eq=False)
class RFOObject:
    """A foreign object: parts, class, and the parameters it was drawn with."""

    class_name: str
    parts: tuple[Part, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def external(self) -> bool:
        """Distractors (jewellery, clothing, electrodes) lie outside the body and displace air."""
        return CATEGORY_BY_NAME[self.class_name].supercategory == NON_CRITICAL

    @property
    def vertices_mm(self) -> np.ndarray:
        return np.concatenate([p.vertices_mm for p in self.parts])

    @property
    def main_material(self) -> str:
        """The most attenuating material (reported in the annotation)."""
        return max(self.parts, key=lambda p: p.density_g_cm3 * reference_attenuation(p.material)).material

    def centred(self) -> RFOObject:
        """The same object translated so that its bounding-box centre is at the origin."""
        v = self.vertices_mm
        centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
        parts = tuple(Part(p.name, p.vertices_mm - centre, p.faces, p.material, p.density_g_cm3, p.host)
                      for p in self.parts)
        return RFOObject(self.class_name, parts, self.params)


@functools.cache
def reference_attenuation(material: str) -> float:
    """Mean mass attenuation (cm²/g) at 50 and 70 keV; cached: it ranks the parts of every object drawn."""
    from synth.physics.materials import mass_attenuation

    return float(np.mean(mass_attenuation(material, np.array([50.0, 70.0]))))


Generator = Callable[[np.random.Generator], RFOObject]
OBJECT_GENERATORS: dict[str, Generator] = {}


def register_object(name: str) -> Callable[[Generator], Generator]:
    """Register the generator of one RFO class; the class must exist and not be registered yet."""
    if name not in CATEGORY_BY_NAME:
        raise ValueError(f"{name!r} is not an RFO class of rfo_bench.categories")

    def decorator(fn: Generator) -> Generator:
        if name in OBJECT_GENERATORS:
            raise ValueError(f"an object generator for {name!r} is already registered")
        OBJECT_GENERATORS[name] = fn
        return fn

    return decorator


def _discover() -> None:
    """Import every generator module once (each registers its classes)."""
    global _discovered
    if _discovered:
        return
    for name in GENERATOR_MODULES:
        importlib.import_module(f"{__package__}.{name}")
    _discovered = True


def list_object_classes() -> list[str]:
    """Classes with a procedural generator."""
    _discover()
    return list(OBJECT_GENERATORS)


def make_object(class_name: str, rng: np.random.Generator) -> RFOObject:
    """Draw one random object of a class.

    Raises:
        UserInputError: unknown class.
    """
    _discover()
    if class_name not in OBJECT_GENERATORS:
        raise UserInputError("no procedural generator for this class; expected one of: "
                             + ", ".join(OBJECT_GENERATORS), field="classes", value=class_name)
    obj = OBJECT_GENERATORS[class_name](rng)
    for part in obj.parts:
        get_material(part.material)
    return obj.centred()


def rounded(value: float, digits: int = 3) -> float:
    """A drawn parameter as recorded in the annotation (``digits`` decimals)."""
    return round(float(value), digits)

"""The RFO category vocabulary shared by the generators, the loaders and the evaluators.

Ids start at 1 (COCO convention). ``critical`` objects are those whose retention is a never-event
(sponges, needles, blades, instruments, wire fragments); ``non_critical`` ones are external
distractors a detector must not flag (jewellery, clothing, monitoring electrodes).
"""

from __future__ import annotations

from dataclasses import dataclass

from toolkit_core.errors import UserInputError

CRITICAL = "critical"
NON_CRITICAL = "non_critical"


@dataclass(frozen=True)
class RFOCategory:
    """One RFO class: COCO id, name, supercategory (``critical`` / ``non_critical``), description."""

    id: int
    name: str
    supercategory: str
    description: str


RFO_CATEGORIES: tuple[RFOCategory, ...] = (
    RFOCategory(1, "sponge", CRITICAL, "surgical sponge / laparotomy pad with a radiopaque BaSO4 marker thread"),
    RFOCategory(2, "cottonoid", CRITICAL, "cottonoid patty with a radiopaque marker string"),
    RFOCategory(3, "needle", CRITICAL, "curved suture needle (1/2 or 3/8 circle, steel)"),
    RFOCategory(4, "blade", CRITICAL, "scalpel blade"),
    RFOCategory(5, "clamp", CRITICAL, "hemostat / surgical clamp"),
    RFOCategory(6, "guidewire", CRITICAL, "guidewire fragment"),
    RFOCategory(7, "chain", NON_CRITICAL, "necklace chain"),
    RFOCategory(8, "zipper", NON_CRITICAL, "clothing zipper"),
    RFOCategory(9, "button", NON_CRITICAL, "button"),
    RFOCategory(10, "ecg_electrode", NON_CRITICAL, "ECG electrode with metal snap"),
)

CATEGORY_BY_NAME = {c.name: c for c in RFO_CATEGORIES}
CATEGORY_BY_ID = {c.id: c for c in RFO_CATEGORIES}
CRITICAL_NAMES = tuple(c.name for c in RFO_CATEGORIES if c.supercategory == CRITICAL)
NON_CRITICAL_NAMES = tuple(c.name for c in RFO_CATEGORIES if c.supercategory == NON_CRITICAL)


def category(name: str) -> RFOCategory:
    """Look up a category by name, with a clear error listing the known names."""
    try:
        return CATEGORY_BY_NAME[name]
    except KeyError:
        known = ", ".join(CATEGORY_BY_NAME)
        raise UserInputError(f"unknown RFO class; expected one of: {known}", field="class", value=name) from None


def coco_categories(names: tuple[str, ...] | list[str] | None = None) -> list[dict[str, object]]:
    """COCO ``categories`` entries for ``names`` (default: all), keeping the global ids."""
    chosen = RFO_CATEGORIES if names is None else tuple(category(n) for n in names)
    return [{"id": c.id, "name": c.name, "supercategory": c.supercategory} for c in chosen]

"""The one registry of detector baselines.

A detector is a builder function decorated with :func:`register_detector`; ``family`` says which
training loop owns it: ``torchvision`` (Faster R-CNN / RetinaNet / FCOS on a timm backbone, trained
by :mod:`rfo_bench.detectors.loop`) or ``ultralytics`` (YOLO, trained by the Ultralytics trainer in
:mod:`rfo_bench.detectors.yolo`). Registering a name twice raises. The built-in builders are imported
on first lookup, never at import of this module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolkit_core.errors import UserInputError

FAMILIES = ("torchvision", "ultralytics")
_BUILTIN_MODULES = ("rfo_bench.detectors.torchvision_models", "rfo_bench.detectors.yolo")


@dataclass(frozen=True)
class DetectorSpec:
    """A registered detector.

    Attributes:
        name: registry name (``fasterrcnn``, ``yolov8n``, ...).
        family: ``torchvision`` or ``ultralytics``.
        description: one line for ``--help`` and the leaderboard.
        builder: for ``torchvision``: ``builder(num_classes, config) -> nn.Module``; for
            ``ultralytics``: ``builder() -> str`` giving the model yaml.
    """

    name: str
    family: str
    description: str
    builder: Callable[..., Any]


_REGISTRY: dict[str, DetectorSpec] = {}
_discovered = False


def register_detector(name: str, *, family: str, description: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a detector builder under ``name``.

    Raises:
        ValueError: duplicate name, unknown family or a name that is not lower-case.
    """
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if not name or name != name.lower() or " " in name:
        raise ValueError(f"detector name must be lower-case without spaces, got {name!r}")

    def decorator(builder: Callable[..., Any]) -> Callable[..., Any]:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.builder is not builder:
            raise ValueError(f"detector {name!r} is already registered by {existing.builder.__module__}")
        _REGISTRY[name] = DetectorSpec(name=name, family=family, description=description, builder=builder)
        return builder

    return decorator


def _discover() -> None:
    global _discovered
    if not _discovered:
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)
        _discovered = True


def list_detectors(family: str | None = None) -> list[str]:
    """Sorted names of the registered detectors, optionally of one family."""
    _discover()
    return sorted(n for n, s in _REGISTRY.items() if family is None or s.family == family)


def get_detector(name: str) -> DetectorSpec:
    """The spec registered as ``name``.

    Raises:
        UserInputError: unknown name (the message lists the known ones).
    """
    _discover()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserInputError(
            "unknown detector; expected one of: " + ", ".join(list_detectors()), field="model", value=name
        ) from None

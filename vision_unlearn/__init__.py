"""Machine unlearning for timm classifiers and Ultralytics YOLO detectors, with the evaluation
that proves forgetting.

The public names load lazily (``import vision_unlearn`` imports neither torch nor a method)::

    import vision_unlearn
    unlearned, record = vision_unlearn.unlearn(model, forget=(x_f, y_f), retain=(x_r, y_r), method="ofmu")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_PUBLIC = {
    "unlearn": "vision_unlearn.in_memory",
    "UnlearnRecord": "vision_unlearn.in_memory",
    "UnlearnRequest": "vision_unlearn.request",
    "UnlearnResult": "vision_unlearn.request",
    "run_request": "vision_unlearn.road",
    "run_method": "vision_unlearn.run",
    "MethodRun": "vision_unlearn.run",
    "create_unlearner": "vision_unlearn.api",
    "list_unlearners": "vision_unlearn.api",
    "config_class_of": "vision_unlearn.api",
}
"""Public name -> the module that defines it."""

__all__ = sorted(_PUBLIC)


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'vision_unlearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_PUBLIC])

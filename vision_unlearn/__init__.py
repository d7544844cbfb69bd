"""Machine unlearning for timm classifiers and Ultralytics YOLO detectors, with the evaluation
that proves forgetting.

The public names load lazily (``import vision_unlearn`` imports neither torch nor a method)::

    import vision_unlearn
    unlearned, record = vision_unlearn.unlearn(model, forget=(x_f, y_f), retain=(x_r, y_r), method="ofmu")
"""

from __future__ import annotations

from toolkit_core.lazy import lazy_exports

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

__all__, __getattr__ = lazy_exports(__name__, _PUBLIC)

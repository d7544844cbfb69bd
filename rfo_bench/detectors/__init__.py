"""Detector baselines: YOLO (Ultralytics) and Faster R-CNN / RetinaNet / FCOS (torchvision, timm backbones).

Entry points: :func:`~rfo_bench.detectors.api.train_detector`,
:func:`~rfo_bench.detectors.api.load_detector`, :func:`~rfo_bench.detectors.registry.list_detectors`
and the recipes of :mod:`rfo_bench.detectors.config`. Importing this package imports neither torch
models nor Ultralytics.
"""

from __future__ import annotations

from rfo_bench.detectors.config import RECIPES, Recipe, TrainConfig, get_recipe, recipe_with_overrides
from rfo_bench.detectors.registry import get_detector, list_detectors, register_detector

__all__ = [
    "RECIPES",
    "Recipe",
    "TrainConfig",
    "get_detector",
    "get_recipe",
    "list_detectors",
    "recipe_with_overrides",
    "register_detector",
]

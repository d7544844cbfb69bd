"""Machine unlearning for timm classifiers and Ultralytics YOLO detectors, with the evaluation
that proves forgetting."""

from __future__ import annotations

__version__ = "0.1.0"

"""Model adapters: one model family each behind :class:`vision_unlearn.protocols.ModelAdapter`.

* :mod:`~vision_unlearn.adapters.timm`: timm image classifiers;
* :mod:`~vision_unlearn.adapters.yolo`: Ultralytics YOLO detectors, built or loaded by
  :mod:`~vision_unlearn.adapters.yolo_model`, trained on the letterboxed splits of
  :mod:`~vision_unlearn.adapters.yolo_data`, with the pure losses of
  :mod:`~vision_unlearn.adapters.yolo_losses` (imported on use: only the timm adapter is imported here).
"""

from __future__ import annotations

from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec, adapter_from_description

__all__ = ["TimmAdapter", "TimmModelSpec", "adapter_from_description"]

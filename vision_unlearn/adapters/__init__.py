"""Model adapters: one model family each behind :class:`vision_unlearn.protocols.ModelAdapter`."""

from __future__ import annotations

from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec, adapter_from_description

__all__ = ["TimmAdapter", "TimmModelSpec", "adapter_from_description"]

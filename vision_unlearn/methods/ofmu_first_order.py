"""OFMU, first-order variant: no Hessian-vector products (see :mod:`vision_unlearn.methods.ofmu`).

Asif & Amiri, "OFMU: Optimization-Driven Framework for Machine Unlearning", arXiv 2509.22483, 2025.
The inner ascent uses the first-order decorrelation surrogate of ``∇Φ`` and the outer step drops
the penalty's Hessian term, ``∇F ≈ ∇L_retain``; it costs about a third of the exact variant.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vision_unlearn.methods.ofmu import Ofmu, OfmuConfig
from vision_unlearn.registry import register_unlearner


@dataclass(frozen=True)
class OfmuFirstOrderConfig(OfmuConfig):
    """Same fields as :class:`~vision_unlearn.methods.ofmu.OfmuConfig`; ``hessian`` defaults to ``"none"``."""

    hessian: Literal["exact", "none"] = "none"


@register_unlearner("ofmu_first_order")
class OfmuFirstOrder(Ofmu):
    """OFMU without second derivatives."""

    config_class = OfmuFirstOrderConfig

"""Retained foreign objects: the generator registry (:mod:`.registry`), the procedural library of rigid
objects (:mod:`.library`) and textiles (:mod:`.textiles`), primitives, and user meshes (:mod:`.meshes`)."""

from __future__ import annotations

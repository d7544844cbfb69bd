"""Retained foreign objects: procedural library (:mod:`.library`), primitives, and user meshes (:mod:`.meshes`)."""

from __future__ import annotations

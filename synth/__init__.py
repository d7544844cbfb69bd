"""Synthetic radiographs with exact labels: physics-based (:mod:`synth.physics`) and diffusion-based
(:mod:`synth.diffusion`) generators of chest X-rays containing retained foreign objects."""

from __future__ import annotations

__version__ = "0.1.0"

"""Synthetic radiographs with exact labels: physics-based (:mod:`synth.physics`) and diffusion-based
(:mod:`synth.diffusion`) generators of chest X-rays containing retained foreign objects.

The public names load on first use (``import synth`` imports neither numpy nor torch)::

    import synth
    manifest = synth.generate_dataset("synthetic", n=8, seed=0, config=synth.PhysicsConfig(size=512))
"""

from __future__ import annotations

from toolkit_core.lazy import lazy_exports

__version__ = "0.1.0"

_PUBLIC = {
    "PhysicsConfig": "synth.physics.config",
    "generate_dataset": "synth.physics.generate",
    "contact_sheet": "synth.physics.preview",
    "write_embedded_previews": "synth.embedded",
    "sample_dataset": "synth.diffusion.sample",
}
"""Public name -> the module that defines it (the diffusion names need the ``[diffusion]`` extra)."""

__all__, __getattr__ = lazy_exports(__name__, _PUBLIC)

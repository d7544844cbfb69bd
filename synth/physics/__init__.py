"""Physics-based synthetic chest radiographs with retained foreign objects and exact labels.

Modules: :mod:`~synth.physics.materials` (xraydb attenuation), :mod:`~synth.physics.spectra`
(spekpy spectra), :mod:`~synth.physics.geometry` (cone-beam detector, poses),
:mod:`~synth.physics.project` (exact path lengths, Beer–Lambert), :mod:`~synth.physics.objects`
(procedural RFOs, user meshes), :mod:`~synth.physics.detector` (scatter, noise, blur, display),
:mod:`~synth.physics.backgrounds` (real radiograph / CT backgrounds), :mod:`~synth.physics.generate`
(rendering and datasets). Importing this package imports no third-party physics library.
"""

from __future__ import annotations

from synth.physics.geometry import Detector, Pose
from synth.physics.materials import linear_attenuation_per_mm, list_materials, mass_attenuation
from synth.physics.project import path_lengths, render_transmission
from synth.physics.spectra import Spectrum, TubeTechnique, default_chest_spectrum, tube_spectrum

__all__ = [
    "Detector",
    "Pose",
    "Spectrum",
    "TubeTechnique",
    "default_chest_spectrum",
    "linear_attenuation_per_mm",
    "list_materials",
    "mass_attenuation",
    "path_lengths",
    "render_transmission",
    "tube_spectrum",
]

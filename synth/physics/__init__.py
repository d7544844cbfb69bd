"""Physics-based synthetic chest radiographs with retained foreign objects and exact labels.

Modules: :mod:`~synth.physics.materials` (xraydb attenuation), :mod:`~synth.physics.spectra`
(spekpy spectra), :mod:`~synth.physics.geometry` (cone-beam detector, poses),
:mod:`~synth.physics.project` (exact path lengths, Beer–Lambert; its scan-line loop is compiled by
:mod:`~synth.physics.raster_kernel` when numba is installed, with identical results), :mod:`~synth.physics.objects`
(procedural RFOs, user meshes), :mod:`~synth.physics.detector` (scatter, quantum, Swank and electronic
noise, blur, display), :mod:`~synth.physics.backgrounds` (real radiograph / CT backgrounds),
:mod:`~synth.physics.acquisition` (kVp, dose, geometry and pixel pitch from a DICOM header),
:mod:`~synth.physics.film` (a new film every image), :mod:`~synth.physics.patient_pose` (CT patient pose
and habitus), :mod:`~synth.physics.placement` (orientation priors, soft-tissue placement in a CT),
:mod:`~synth.physics.scene` (objects on the detector, labels), :mod:`~synth.physics.render` (one image),
:mod:`~synth.physics.config` and :mod:`~synth.physics.generate` (datasets), :mod:`~synth.physics.commands`
(the ``physics`` command). Importing this package imports no third-party physics library.

Command line::

    rfo-synth physics --n 1000 --out runs/synth_r --seed 0                      # into the embedded real radiograph
    rfo-synth physics --n 1000 --out runs/synth_ct --seed 0 --mode ct          # projected with the embedded real CT
    rfo-synth physics --n 1000 --out runs/part0 --seed 0 --shard 0/4 --workers 2
    rfo-synth physics --n 100 --out runs/mesh --objects path/to/rfo_meshes    # user .obj/.stl (objects.yaml)
    rfo-synth preview runs/synth_r runs/synth_ct --out sheet.png [--crops]

Python::

    from synth.physics import Detector, Pose, default_chest_spectrum, render_transmission
    det = Detector(rows=512, cols=384, pixel_mm=0.2, source_to_detector_mm=1800, source_to_object_mm=1650)
    transmission = render_transmission(mesh, "stainless_steel", 8.0, default_chest_spectrum(), det)
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

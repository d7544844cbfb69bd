"""The configuration of a physics dataset, and the spectrum it implies at the detector."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from rfo_bench.categories import CATEGORY_BY_NAME, category
from synth.physics.acquisition import OVERRIDABLE, Acquisition
from synth.physics.detector import BlurConfig, DisplayConfig, NoiseConfig, ScatterConfig
from synth.physics.film import FilmVariationConfig
from synth.physics.patient_pose import CTPoseConfig
from synth.physics.placement import OrientationConfig
from synth.physics.spectra import Spectrum, TubeTechnique, tube_spectrum
from synth.physics.visibility import MIN_VISIBLE_CNR
from toolkit_core.errors import UserInputError

DEFAULT_CLASSES = tuple(CATEGORY_BY_NAME)


@dataclass(frozen=True)
class PhysicsConfig:
    """Every physics and sampling parameter of a dataset (written to ``manifest.json``).

    Attributes:
        mode: ``radiograph`` (insertion into real radiographs) or ``ct`` (projection of a CT).
        size: output image side in pixels (square field).
        technique: tube technique (spectrum and dose); a DICOM film's ``KVP`` and ``Exposure`` replace
            it unless named in ``explicit``.
        n_energy_bins: energy bins of the Beer–Lambert sum (split at absorption edges).
        source_to_detector_mm: SID (a DICOM film's ``DistanceSourceToDetector`` replaces it unless explicit).
        patient_centre_to_detector_mm: depth of the isocentre in front of the detector (from a DICOM
            film's magnification factor or source–patient distance unless explicit).
        pixel_spacing_mm: detector pitch of the film; ``None``: from its header (see
            :mod:`synth.physics.acquisition`).
        explicit: settings of :data:`synth.physics.acquisition.OVERRIDABLE` the user gave explicitly;
            they win over a film's header. ``None`` (callers that do not say): the settings whose value
            differs from this class's default (a ``kvp=110`` passed in wins; the default 120 does not).
        detector_csi_mm: CsI scintillator thickness; its absorption efficiency weights the spectrum.
        classes: RFO classes drawn.
        max_objects: objects per positive image are drawn in ``1..max_objects``.
        negative_fraction: probability of an image without objects.
        supersample: sub-rays per pixel along each axis.
        wet_range_mm: radiograph calibration: water thickness at the low / high display percentiles.
        calibration_percentiles: the display percentiles used for the calibration.
        body_threshold_mm: minimum water-equivalent thickness where objects are placed.
        label_min_attenuation: an object's label holds the pixels where it changes the log-signal by at
            least this much (0.005 = 0.5 % contrast) before noise, after the detector's blur and the
            console's edge enhancement.
        label_min_cnr: an object is labelled only when its noise-free peak signal reaches this many times
            the local quantum and anatomical noise (:mod:`synth.physics.visibility`; 5: Rose's criterion);
            fainter objects stay in the image unlabelled and are counted. 0 labels every object.
        film: per-image film variation (radiograph mode).
        ct_pose: per-image patient pose and habitus (CT mode).
        orientation: orientation priors per class.
        scatter, noise, blur, display: detector stages.
    """

    mode: str = "radiograph"
    size: int = 1024
    technique: TubeTechnique = field(default_factory=TubeTechnique)
    n_energy_bins: int = 16
    source_to_detector_mm: float = 1800.0
    patient_centre_to_detector_mm: float = 150.0
    pixel_spacing_mm: float | None = None
    explicit: tuple[str, ...] | None = None
    detector_csi_mm: float = 0.6
    classes: tuple[str, ...] = DEFAULT_CLASSES
    max_objects: int = 3
    negative_fraction: float = 0.15
    supersample: int = 2
    wet_range_mm: tuple[float, float] = (20.0, 280.0)
    calibration_percentiles: tuple[float, float] = (0.5, 99.5)
    body_threshold_mm: float = 60.0
    label_min_attenuation: float = 0.005
    label_min_cnr: float = MIN_VISIBLE_CNR
    film: FilmVariationConfig = field(default_factory=FilmVariationConfig)
    ct_pose: CTPoseConfig = field(default_factory=CTPoseConfig)
    orientation: OrientationConfig = field(default_factory=OrientationConfig)
    scatter: ScatterConfig = field(default_factory=ScatterConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    blur: BlurConfig = field(default_factory=BlurConfig)
    display: DisplayConfig = field(default_factory=DisplayConfig)

    def __post_init__(self) -> None:
        if self.mode not in ("radiograph", "ct"):
            raise UserInputError("mode must be 'radiograph' or 'ct'", field="mode", value=self.mode)
        if not 16 <= int(self.size) <= 8192:
            raise UserInputError("image size must be 16-8192 pixels", field="size", value=self.size)
        for name in self.classes:
            category(name)
        if not self.classes:
            raise UserInputError("at least one RFO class is needed", field="classes")
        if self.max_objects < 0 or not 0.0 <= self.negative_fraction <= 1.0:
            raise UserInputError("need max_objects >= 0 and 0 <= negative_fraction <= 1", field="max_objects",
                                 value=(self.max_objects, self.negative_fraction))
        if not self.label_min_cnr >= 0.0:
            raise UserInputError("label_min_cnr must be >= 0", field="label_min_cnr", value=self.label_min_cnr)
        if self.supersample < 1:
            raise UserInputError("supersample must be >= 1", field="supersample", value=self.supersample)
        if self.explicit is None:
            object.__setattr__(self, "explicit", self._changed_acquisition())
        unknown = set(self.explicit) - set(OVERRIDABLE)
        if unknown:
            raise UserInputError("unknown explicit acquisition settings; expected some of: " + ", ".join(OVERRIDABLE),
                                 field="explicit", value=sorted(unknown))
        if self.pixel_spacing_mm is not None and not self.pixel_spacing_mm > 0:
            raise UserInputError("pixel spacing must be positive (mm)", field="pixel_spacing_mm",
                                 value=self.pixel_spacing_mm)
        if not 0.0 < self.patient_centre_to_detector_mm < self.source_to_detector_mm:
            raise UserInputError("need 0 < patient_centre_to_detector_mm < source_to_detector_mm",
                                 field="patient_centre_to_detector_mm",
                                 value=(self.patient_centre_to_detector_mm, self.source_to_detector_mm))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _changed_acquisition(self) -> tuple[str, ...]:
        fields = type(self).__dataclass_fields__
        base = {"kvp": TubeTechnique.kvp, "mas": TubeTechnique.mas, "pixel_spacing_mm": None,
                **{name: fields[name].default for name in ("source_to_detector_mm", "patient_centre_to_detector_mm")}}
        return tuple(name for name, value in self.acquisition_defaults().items() if value != base[name])

    def acquisition_defaults(self) -> dict[str, float | None]:
        """The configured value of every overridable acquisition setting."""
        return {"kvp": self.technique.kvp, "mas": self.technique.mas,
                "source_to_detector_mm": self.source_to_detector_mm,
                "patient_centre_to_detector_mm": self.patient_centre_to_detector_mm,
                "pixel_spacing_mm": self.pixel_spacing_mm}

    def with_acquisition(self, acquisition: Acquisition) -> PhysicsConfig:
        """This configuration with a resolved acquisition's technique and geometry."""
        technique = replace(self.technique, kvp=acquisition.kvp, mas=acquisition.mas)
        return replace(self, technique=technique, source_to_detector_mm=acquisition.source_to_detector_mm,
                       patient_centre_to_detector_mm=acquisition.patient_centre_to_detector_mm,
                       pixel_spacing_mm=acquisition.pixel_spacing_mm)


def detected_spectrum(config: PhysicsConfig) -> Spectrum:
    """Tube spectrum at the detector distance, weighted by the CsI absorption efficiency, rebinned."""
    from synth.physics.materials import linear_attenuation_per_mm

    spectrum = tube_spectrum(config.technique).at_distance(config.source_to_detector_mm)
    efficiency = 1.0 - np.exp(-linear_attenuation_per_mm("csi", spectrum.energies_kev) * config.detector_csi_mm)
    detected = Spectrum(spectrum.energies_kev, spectrum.photons_per_mm2 * efficiency, spectrum.reference_distance_mm)
    return detected.rebinned(config.n_energy_bins)

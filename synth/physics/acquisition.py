"""The acquisition of a background film: tube voltage, dose, geometry and pixel pitch.

A DICOM radiograph records how it was taken. Where its header holds a value it is used, unless the
user gave that value explicitly (``--kvp``, ``--sid``, ...); where it holds none the configured default
is used. Every resolved value carries its source (``dicom:KVP``, ``explicit``, ``default``), written to
the dataset manifest.

DICOM attributes read (PS3.3 C.8.11.7 DX Positioning, C.8.7.1 X-Ray Acquisition):

* ``KVP`` (0018,0060) — peak tube voltage.
* ``Exposure`` (0018,1152, mAs) or ``ExposureInuAs`` (0018,1153) — the dose; sets the quantum noise.
* ``DistanceSourceToDetector`` (0018,1110) — SID.
* ``EstimatedRadiographicMagnificationFactor`` (0018,1114) — ``SID / SOD`` at the patient: gives the
  depth of the patient centre, and converts ``PixelSpacing`` (at the patient) to the detector.
* ``DistanceSourceToPatient`` (0018,1111) — to the support the patient leans on (the detector side
  for a PA chest); the patient centre is taken ``half_body_mm`` towards the source from it.
* ``ImagerPixelSpacing`` (0018,1164) — pitch at the detector; else ``PixelSpacing`` (0028,0030) times
  the magnification factor (1 when absent, as a CR plate records its own pitch there).

Headers are read without pixel data (``stop_before_pixels``). Values outside physical ranges (zero
spacing, a 0 kVp) are ignored with a warning, as if absent.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: Settings a user may give explicitly; they then win over the film's header.
OVERRIDABLE = ("kvp", "mas", "source_to_detector_mm", "patient_centre_to_detector_mm", "pixel_spacing_mm")


@dataclass(frozen=True)
class HeaderAcquisition:
    """What a DICOM header says about its acquisition (``None``: not recorded or unusable)."""

    kvp: float | None = None
    mas: float | None = None
    source_to_detector_mm: float | None = None
    source_to_patient_mm: float | None = None
    magnification: float | None = None
    imager_pixel_spacing_mm: float | None = None
    pixel_spacing_mm: float | None = None


@dataclass(frozen=True)
class Acquisition:
    """The acquisition an image is rendered with, and where each value came from.

    Attributes:
        kvp, mas: tube technique.
        source_to_detector_mm: SID.
        patient_centre_to_detector_mm: depth of the isocentre in front of the detector.
        pixel_spacing_mm: detector pitch of the film as stored (before resampling); ``None`` for a CT.
        sources: ``{setting: "dicom:<Keyword>" | "explicit" | "default"}``.
    """

    kvp: float
    mas: float
    source_to_detector_mm: float
    patient_centre_to_detector_mm: float
    pixel_spacing_mm: float | None = None
    sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _number(ds, keyword: str, lo: float, hi: float, index: int | None = None) -> float | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        number = float(value[index] if index is not None else value)
    except (TypeError, ValueError, IndexError):
        logger.warning("DICOM %s = %r is not a number; ignored", keyword, value)
        return None
    if not lo <= number <= hi:
        _warn_out_of_range(keyword, number, lo, hi)
        return None
    return number


def read_header_acquisition(path: str | os.PathLike[str]) -> HeaderAcquisition:
    """The acquisition recorded in a DICOM file's header; empty for other files or unreadable headers."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:  # without force=True a file lacking the DICM preamble (PNG, JPEG) is refused at once
        ds = pydicom.dcmread(Path(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, TypeError, AttributeError, EOFError):
        return HeaderAcquisition()
    mas = _number(ds, "Exposure", 1e-3, 1e4)
    if mas is None:
        micro = _number(ds, "ExposureInuAs", 1.0, 1e10)
        mas = None if micro is None else micro / 1000.0
    imager = _number(ds, "ImagerPixelSpacing", 1e-3, 10.0, index=0)
    spacing = _number(ds, "PixelSpacing", 1e-3, 10.0, index=0)
    return HeaderAcquisition(
        kvp=_number(ds, "KVP", 20.0, 150.0),
        mas=mas,
        source_to_detector_mm=_number(ds, "DistanceSourceToDetector", 300.0, 5000.0),
        source_to_patient_mm=_number(ds, "DistanceSourceToPatient", 100.0, 5000.0),
        magnification=_number(ds, "EstimatedRadiographicMagnificationFactor", 1.0, 3.0),
        imager_pixel_spacing_mm=imager,
        pixel_spacing_mm=spacing,
    )


def resolve_acquisition(header: HeaderAcquisition, defaults: dict[str, float | None], explicit: tuple[str, ...],
                        half_body_mm: float = 110.0) -> Acquisition:
    """Merge a header with the configured values: explicit settings first, then the header, then defaults.

    Args:
        header: what the film records (empty for PNG files and CTs).
        defaults: ``{setting: value}`` for every name of :data:`OVERRIDABLE` (``pixel_spacing_mm`` may be
            ``None``: the reader's spacing is used).
        explicit: the settings the user gave explicitly.
        half_body_mm: distance from the patient's detector-side surface to its centre (a 22 cm chest).

    Raises:
        ValueError: an unknown name in ``explicit``.
    """
    unknown = set(explicit) - set(OVERRIDABLE)
    if unknown:
        raise ValueError(f"unknown acquisition settings {sorted(unknown)}; expected some of {OVERRIDABLE}")
    values: dict[str, float | None] = {}
    sources: dict[str, str] = {}

    def choose(name: str, recorded: float | None, keyword: str) -> None:
        if name in explicit or recorded is None:
            values[name] = defaults[name]
            sources[name] = "explicit" if name in explicit else "default"
        else:
            values[name] = recorded
            sources[name] = f"dicom:{keyword}"

    choose("kvp", header.kvp, "KVP")
    choose("mas", header.mas, "Exposure")
    choose("source_to_detector_mm", header.source_to_detector_mm, "DistanceSourceToDetector")
    sid = float(values["source_to_detector_mm"])
    centre, keyword = None, ""
    if header.magnification is not None:
        centre, keyword = sid - sid / header.magnification, "EstimatedRadiographicMagnificationFactor"
    elif header.source_to_patient_mm is not None and header.source_to_patient_mm < sid:
        centre = sid - header.source_to_patient_mm + half_body_mm
        keyword = "DistanceSourceToPatient"
    if centre is not None and not 0.0 < centre < sid:
        centre = None
    choose("patient_centre_to_detector_mm", centre, keyword)
    if header.imager_pixel_spacing_mm is not None:
        pitch, keyword = header.imager_pixel_spacing_mm, "ImagerPixelSpacing"
    elif header.pixel_spacing_mm is not None:
        pitch = header.pixel_spacing_mm * (header.magnification or 1.0)
        keyword = "PixelSpacing" + ("*EstimatedRadiographicMagnificationFactor" if header.magnification else "")
    else:
        pitch = None
    choose("pixel_spacing_mm", pitch, keyword)
    return Acquisition(kvp=float(values["kvp"]), mas=float(values["mas"]),
                       source_to_detector_mm=sid,
                       patient_centre_to_detector_mm=float(values["patient_centre_to_detector_mm"]),
                       pixel_spacing_mm=None if values["pixel_spacing_mm"] is None else float(values["pixel_spacing_mm"]),
                       sources=sources)


@lru_cache(maxsize=256)
def _warn_out_of_range(keyword: str, number: float, lo: float, hi: float) -> None:
    """Say once per value and process that a header value is ignored (every worker reads the header)."""
    logger.warning("DICOM %s = %s lies outside %s-%s; ignored", keyword, number, lo, hi)

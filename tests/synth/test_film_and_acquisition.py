"""A new film every image, the acquisition read from a DICOM film, and the detector's noise model."""

from __future__ import annotations

import json
from itertools import combinations

import numpy as np
import pytest

from rfo_toolkit.cli import rfo_synth_main as main
from synth.physics.detector import NoiseConfig, add_detector_noise


def _dicom_film(path, kvp: str | None = "80", sid: str | None = "1000") -> None:
    """A 96 x 80 (non-square) MONOCHROME2 DX film: a body ellipse with rib-like stripes, 0.5 mm pitch."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    yy, xx = np.mgrid[0:96, 0:80]
    body = ((yy - 48) / 44.0) ** 2 + ((xx - 40) / 36.0) ** 2 < 1
    pixels = np.where(body, 2400 + 700 * np.sin(yy / 5.0) + 300 * np.cos(xx / 9.0), 150).astype(np.uint16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [0.5, 0.5]
    if kvp is not None:
        ds.KVP = kvp
    if sid is not None:
        ds.DistanceSourceToDetector = sid
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)


def _physics(out, *extra) -> int:
    return main(["physics", "--out", str(out), "--no-progress", "--imgsz", "64", *extra])


def test_dicom_acquisition_is_used_unless_a_flag_is_given(tmp_path) -> None:
    film = tmp_path / "film.dcm"
    _dicom_film(film)
    assert _physics(tmp_path / "a", "--n", "2", "--backgrounds", str(film)) == 0
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    (acq,) = manifest["acquisitions"]
    assert acq["kvp"] == 80.0 and acq["sources"]["kvp"] == "dicom:KVP"
    assert acq["source_to_detector_mm"] == 1000.0 and acq["sources"]["source_to_detector_mm"] == "dicom:DistanceSourceToDetector"
    assert acq["pixel_spacing_mm"] == 0.5 and acq["sources"]["pixel_spacing_mm"] == "dicom:ImagerPixelSpacing"
    assert manifest["spectrum"]["kvp"] == 80.0
    images = json.loads((tmp_path / "a" / "annotations.json").read_text())["images"]
    assert all(r["kvp"] == 80.0 and r["source_to_detector_mm"] == 1000.0 for r in images)
    # The square field of the 80-column film at 0.5 mm, resampled to 64 pixels.
    assert images[0]["pixel_spacing_mm"] == pytest.approx(80 * 0.5 / 64)
    # A flag wins over the header and is recorded as explicit; the header's other values stay.
    assert _physics(tmp_path / "b", "--n", "1", "--backgrounds", str(film), "--kvp", "110") == 0
    (acq,) = json.loads((tmp_path / "b" / "manifest.json").read_text())["acquisitions"]
    assert acq["kvp"] == 110.0 and acq["sources"]["kvp"] == "explicit"
    assert acq["source_to_detector_mm"] == 1000.0
    # A PNG records nothing: the defaults.
    from rfo_bench.io.images import write_png16

    write_png16(tmp_path / "film.png", np.linspace(0, 1, 96 * 80).reshape(96, 80))
    assert _physics(tmp_path / "c", "--n", "1", "--backgrounds", str(tmp_path / "film.png")) == 0
    (acq,) = json.loads((tmp_path / "c" / "manifest.json").read_text())["acquisitions"]
    assert (acq["kvp"], acq["source_to_detector_mm"]) == (120.0, 1800.0) and acq["sources"]["kvp"] == "default"


def test_callers_that_do_not_name_explicit_settings(tmp_path) -> None:
    """Python callers building a ``PhysicsConfig`` themselves: a value set away from the default wins over
    the header, the defaults do not; through ``rfo-synth physics`` a flag given always wins."""
    from rfo_toolkit.cli import rfo_synth_main as rfo_synth
    from synth.physics.config import PhysicsConfig
    from synth.physics.spectra import TubeTechnique

    assert PhysicsConfig().explicit == ()
    assert PhysicsConfig(technique=TubeTechnique(kvp=110.0), source_to_detector_mm=1000.0).explicit == (
        "kvp", "source_to_detector_mm")
    assert PhysicsConfig(technique=TubeTechnique(kvp=110.0), explicit=()).explicit == ()
    film = tmp_path / "film.dcm"
    _dicom_film(film)
    for extra, kvp in (([], 80.0), (["--kvp", "110"], 110.0)):
        out = tmp_path / f"legacy{len(extra)}"
        assert rfo_synth(["physics", "--n", "1", "--imgsz", "64", "--no-progress", "--out", str(out),
                          "--backgrounds", str(film), *extra]) == 0
        (acq,) = json.loads((out / "manifest.json").read_text())["acquisitions"]
        assert acq["kvp"] == kvp and acq["source_to_detector_mm"] == 1000.0


def test_header_values_outside_physical_ranges_are_ignored(tmp_path) -> None:
    from synth.physics.acquisition import read_header_acquisition, resolve_acquisition

    film = tmp_path / "odd.dcm"
    _dicom_film(film, kvp="0", sid=None)
    header = read_header_acquisition(film)
    assert header.kvp is None and header.source_to_detector_mm is None and header.imager_pixel_spacing_mm == 0.5
    defaults = {"kvp": 120.0, "mas": 2.0, "source_to_detector_mm": 1800.0, "patient_centre_to_detector_mm": 150.0,
                "pixel_spacing_mm": None}
    acq = resolve_acquisition(header, defaults, ())
    assert acq.kvp == 120.0 and acq.sources["kvp"] == "default"
    from synth.physics.acquisition import HeaderAcquisition

    # SID / SOD = 1.1 puts the patient centre SID/11 in front of the detector; PixelSpacing is at the patient.
    magnified = HeaderAcquisition(source_to_detector_mm=1650.0, magnification=1.1, pixel_spacing_mm=0.2)
    acq = resolve_acquisition(magnified, defaults, ())
    assert acq.patient_centre_to_detector_mm == pytest.approx(150.0)
    assert acq.pixel_spacing_mm == pytest.approx(0.22)
    assert read_header_acquisition(tmp_path / "missing.dcm") == HeaderAcquisition()


@pytest.fixture(scope="module")
def varied_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("films") / "set"
    # At 64² a pixel is ~5.6 mm and most objects are below visibility; labels are not this set's subject.
    assert _physics(out, "--n", "6", "--seed", "3", "--negative-fraction", "0.5", "--off", "noise",
                    "--label-min-cnr", "0") == 0
    return out


def test_no_two_films_are_alike_and_reruns_are_byte_identical(varied_set, tmp_path) -> None:
    from rfo_bench.io.images import read_image

    doc = json.loads((varied_set / "annotations.json").read_text())
    assert any(r["negative"] for r in doc["images"]) and not all(r["negative"] for r in doc["images"])
    images = [read_image(varied_set / r["file_name"]).pixels for r in doc["images"]]
    # Noise is off: whatever differs between two images is their film. Equal pixels between two
    # differently warped films occur only where both are flat (clipped border); the threshold is far
    # from the 100 % two copies of one film share (measured: at most 0.02 % at seed 3).
    for a, b in combinations(images, 2):
        assert np.mean(a == b) < 0.05
    assert all(r["film"]["zoom"] >= 1.0 for r in doc["images"])
    again = tmp_path / "again"
    assert _physics(again, "--n", "6", "--seed", "3", "--negative-fraction", "0.5", "--off", "noise",
                    "--label-min-cnr", "0", "--workers", "2") == 0
    for name in ["annotations.json"] + [r["file_name"] for r in doc["images"]]:
        assert (again / name).read_bytes() == (varied_set / name).read_bytes()


def test_film_off_gives_one_film(tmp_path) -> None:
    from rfo_bench.io.images import read_image

    assert _physics(tmp_path / "still", "--n", "3", "--negative-fraction", "1", "--off", "noise", "film") == 0
    doc = json.loads((tmp_path / "still" / "annotations.json").read_text())
    first, *rest = [read_image(tmp_path / "still" / r["file_name"]).pixels for r in doc["images"]]
    assert all(np.array_equal(first, other) for other in rest)


@pytest.mark.parametrize("lam", [3.0, 40.0, 2500.0])  # Poisson branch (both sides of the electronic noise), Gaussian
def test_detector_noise_mean_and_variance(lam: float) -> None:
    config = NoiseConfig(swank_factor=0.7, electronic_noise_quanta=2.5)
    samples = add_detector_noise(np.full(400_000, lam), np.random.default_rng(1), config)
    expected_var = lam / 0.7 + 2.5**2
    # 400k samples: the sample mean's sd is sqrt(var / n) (< 0.2 % of λ here) and the variance's
    # relative sd about sqrt(2 / n) = 0.22 %; tolerances are over 5 of those.
    assert samples.mean() == pytest.approx(lam, abs=6 * np.sqrt(expected_var / samples.size))
    assert samples.var() == pytest.approx(expected_var, rel=0.02)
    np.testing.assert_allclose(config.variance_quanta2(np.array([lam])), [expected_var])
    pure = add_detector_noise(np.full(200_000, lam), np.random.default_rng(2),
                              NoiseConfig(swank_factor=1.0, electronic_noise_quanta=0.0))
    assert pure.var() == pytest.approx(lam, rel=0.03)  # the Poisson limit
    assert np.all(add_detector_noise(np.full(5, lam), np.random.default_rng(0), NoiseConfig(enabled=False)) == lam)


def test_noise_config_rejects_bad_values() -> None:
    from toolkit_core.errors import UserInputError

    with pytest.raises(UserInputError, match="Swank"):
        NoiseConfig(swank_factor=0.0)
    with pytest.raises(UserInputError, match="electronic"):
        NoiseConfig(electronic_noise_quanta=-1.0)


def test_noise_estimator_and_fresh_noise_scale(tmp_path) -> None:
    from synth.physics.film import block_noise_sigma

    rng = np.random.default_rng(4)
    ramp = np.linspace(0.2, 0.7, 160)[None, :] * np.ones((192, 1))  # the estimator cancels planes
    estimate = block_noise_sigma(ramp + 0.01 * rng.standard_normal((192, 160)))
    assert estimate.shape == (6, 5)
    # Unbiased for white noise; each 32x32 block's mean |response| has a relative sd of about 2 %.
    assert np.median(estimate) == pytest.approx(0.01, rel=0.05)
    assert _physics(tmp_path / "n", "--n", "2", "--seed", "1", "--negative-fraction", "1") == 0
    records = json.loads((tmp_path / "n" / "annotations.json").read_text())["images"]
    scales = {r["film"]["fresh_noise_scale"] for r in records}
    assert len(scales) == 1 and 0.0 < scales.pop() <= 1.0

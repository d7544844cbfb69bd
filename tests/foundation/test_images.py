"""The shared image reader: PNG/JPEG 8/16-bit, DICOM (rescale, window, MONOCHROME1, spacing), errors."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image

from rfo_bench.io.images import DEFAULT_PIXEL_SPACING_MM, read_image, write_png16
from tests.foundation.dicom_files import write_dicom
from toolkit_core.errors import UserInputError

H, W = 17, 11  # non-square on purpose: catches height/width swaps


def test_png8_gray(tmp_path: Path) -> None:
    values = (np.arange(H * W) % 256).astype(np.uint8).reshape(H, W)
    Image.fromarray(values).save(tmp_path / "a.png")
    image = read_image(tmp_path / "a.png")
    assert image.pixels.shape == (H, W) and image.pixels.dtype == np.float32
    assert image.bits_stored == 8
    np.testing.assert_allclose(image.pixels, values / 255.0, atol=1e-7)


def test_png16_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 65536, size=(H, W), dtype=np.uint16)
    write_png16(tmp_path / "b.png", values / 65535.0)
    image = read_image(tmp_path / "b.png")
    assert image.bits_stored == 16
    np.testing.assert_array_equal(np.round(image.pixels.astype(np.float64) * 65535).astype(np.uint16), values)


def test_rgb_png_becomes_luma(tmp_path: Path) -> None:
    rgb = np.zeros((H, W, 3), dtype=np.uint8)
    rgb[..., 0] = 255
    Image.fromarray(rgb).save(tmp_path / "c.png")
    assert read_image(tmp_path / "c.png").pixels == pytest.approx(np.full((H, W), 0.299), abs=1e-6)
    assert read_image(tmp_path / "c.png", as_gray=False).pixels.shape == (H, W, 3)


def test_jpeg(tmp_path: Path) -> None:
    Image.fromarray(np.full((H, W), 128, dtype=np.uint8)).save(tmp_path / "d.jpg", quality=95)
    assert read_image(tmp_path / "d.jpg").pixels.mean() == pytest.approx(128 / 255, abs=0.01)


def test_truncated_png_non_image_and_directory_are_user_errors(tmp_path: Path) -> None:
    write_png16(tmp_path / "full.png", np.linspace(0, 1, H * W).reshape(H, W))
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("hello")
    for name in ("cut.png", "notes.png", "missing.png"):
        with pytest.raises(UserInputError, match=name):
            read_image(tmp_path / name)
    with pytest.raises(UserInputError, match="directory"):
        read_image(tmp_path)


def _dicom(path: Path, pixels: np.ndarray, **attrs) -> Path:
    if pixels is None:
        return write_dicom(path, PatientName="Doe^Jane", **attrs)
    return write_dicom(path, rows=pixels.shape[0], columns=pixels.shape[1],
                       pixel_data=pixels.astype(np.uint16).tobytes(), PatientName="Doe^Jane", **attrs)


def test_dicom_rescale_monochrome1_and_spacing(tmp_path: Path) -> None:
    stored = np.zeros((H, W), dtype=np.uint16)
    stored[0, 0] = 4095  # the highest 12-bit value
    stored[5, 3] = 1024
    path = _dicom(
        tmp_path / "m1.dcm", stored, BitsStored=12, PhotometricInterpretation="MONOCHROME1",
        RescaleSlope=2.0, RescaleIntercept=-100.0, PixelSpacing=[0.15, 0.16],
    )
    image = read_image(path)
    assert image.pixels.shape == (H, W)
    # modality LUT range is [-100, 8090]; value v maps to (2*v-100+100)/8190; MONOCHROME1 inverts it.
    assert image.pixels[0, 0] == pytest.approx(0.0, abs=1e-6)
    assert image.pixels[5, 3] == pytest.approx(1.0 - 2048 / 8190, abs=1e-6)
    assert image.pixels[1, 1] == pytest.approx(1.0, abs=1e-6)
    assert image.pixel_spacing_mm == (0.15, 0.16) and not image.spacing_is_default
    assert image.photometric == "MONOCHROME1" and image.bits_stored == 12


def test_dicom_window_applied_and_patient_tags_never_returned(tmp_path: Path) -> None:
    stored = np.tile(np.arange(W, dtype=np.uint16) * 100, (H, 1))  # 0 .. 1000 along columns
    path = _dicom(
        tmp_path / "w.dcm", stored, BitsStored=16, PhotometricInterpretation="MONOCHROME2",
        WindowCenter=500, WindowWidth=401,
    )
    image = read_image(path)
    assert image.pixels[0, 0] == 0.0 and image.pixels[0, -1] == 1.0
    assert image.pixels[0, 5] == pytest.approx(0.5, abs=0.01)  # value 500 sits at the window centre
    assert image.patient_key is not None and "PAT-0001" not in image.patient_key
    assert "Doe" not in repr(image) and "PAT-0001" not in repr(image)


def test_dicom_missing_spacing_uses_documented_default(tmp_path: Path, caplog) -> None:
    path = _dicom(tmp_path / "s.dcm", np.ones((H, W)), BitsStored=8, PhotometricInterpretation="MONOCHROME2",
                  PixelSpacing=[0.0, 0.0])
    with caplog.at_level(logging.WARNING):
        image = read_image(path)
    assert image.pixel_spacing_mm == (DEFAULT_PIXEL_SPACING_MM, DEFAULT_PIXEL_SPACING_MM)
    assert image.spacing_is_default
    assert any("PixelSpacing" in rec.message for rec in caplog.records)


def test_dicom_without_pixel_data_is_user_error(tmp_path: Path) -> None:
    path = _dicom(tmp_path / "nopix.dcm", None, BitsStored=8)
    assert pydicom.dcmread(path).get("PixelData") is None
    with pytest.raises(UserInputError, match="PixelData"):
        read_image(path)


RAMP = np.tile(np.arange(W, dtype=np.uint16) * 100 + 1000, (H, 1))  # 1000 .. 2000 along columns


def _windowed(tmp_path: Path, name: str, stored: np.ndarray = RAMP, **attrs) -> np.ndarray:
    attrs = {"BitsStored": 16, "PhotometricInterpretation": "MONOCHROME2"} | attrs
    return read_image(_dicom(tmp_path / name, stored, **attrs)).pixels


def test_dicom_linear_window_hand_computed(tmp_path: Path) -> None:
    # PS3.3 C.11.2.1.2, c = 1500, w = 401: y = (x - 1499.5) / 400 + 0.5, 0 at x <= 1299.5, 1 above 1699.5
    pixels = _windowed(tmp_path, "lin.dcm", WindowCenter=1500, WindowWidth=401)
    expected = np.clip((RAMP[0].astype(np.float64) - 1499.5) / 400 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(pixels[0], expected, atol=1e-6)
    assert pixels[0, 4] == pytest.approx(0.25125, abs=1e-6)  # x = 1400: -99.5 / 400 + 0.5
    assert pixels[0, 2] == 0.0 and pixels[0, 8] == 1.0


def test_dicom_window_below_or_above_the_data_saturates(tmp_path: Path) -> None:
    below = _windowed(tmp_path, "below.dcm", WindowCenter=100, WindowWidth=51)
    np.testing.assert_array_equal(below, np.ones((H, W), dtype=np.float32))  # every value above the window: white
    above = _windowed(tmp_path, "above.dcm", WindowCenter=5000, WindowWidth=51)
    np.testing.assert_array_equal(above, np.zeros((H, W), dtype=np.float32))
    inverted = _windowed(tmp_path, "below_m1.dcm", WindowCenter=100, WindowWidth=51,
                         PhotometricInterpretation="MONOCHROME1")
    np.testing.assert_array_equal(inverted, np.zeros((H, W), dtype=np.float32))


@pytest.mark.parametrize("width", [0, -10, "", None])
def test_dicom_unusable_window_width_falls_back_to_the_stored_range(tmp_path: Path, width, caplog) -> None:
    attrs = {"WindowCenter": 1500} | ({} if width is None else {"WindowWidth": width})
    with caplog.at_level(logging.WARNING):
        pixels = _windowed(tmp_path, "w0.dcm", **attrs)
    np.testing.assert_allclose(pixels, RAMP / 65535.0, atol=1e-6)  # 16 bits stored, no rescale
    assert any("WindowWidth" in rec.message for rec in caplog.records)


def test_dicom_multi_valued_window_uses_the_first(tmp_path: Path) -> None:
    pixels = _windowed(tmp_path, "multi.dcm", WindowCenter=[1500, 40], WindowWidth=[401, 80])
    assert pixels[0, 4] == pytest.approx(0.25125, abs=1e-6)


def test_voi_window_functions_hand_computed() -> None:
    from rfo_bench.io.images import voi_window

    x = np.array([-1.0, 9.5, 10.0, 10.5, 30.0])
    np.testing.assert_array_equal(voi_window(x, 10.0, 1.0), [0.0, 0.0, 1.0, 1.0, 1.0])  # w = 1: threshold
    np.testing.assert_allclose(voi_window(x, 10.0, 4.0, "LINEAR_EXACT"), [0.0, 0.375, 0.5, 0.625, 1.0])
    sigmoid = voi_window(x, 10.0, 4.0, "SIGMOID")
    assert sigmoid[2] == pytest.approx(0.5) and sigmoid[0] < 1e-4 and sigmoid[-1] > 1 - 1e-8
    assert sigmoid[1] == pytest.approx(1 / (1 + np.exp(0.5)))


def test_png_writers_are_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rfo_bench.io.images import write_png8

    target = tmp_path / "x.png"
    write_png16(target, np.full((H, W), 0.5))
    before = target.read_bytes()

    def half_then_fail(self, data):  # a writer killed half way (disk full, signal)
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError):
        write_png16(target, np.zeros((H, W)))
    monkeypatch.undo()
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.png"]

    def fail_on_save(self, fp, *args, **kwargs):
        Path(fp).write_bytes(b"\x89PNG partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", fail_on_save)
    with pytest.raises(OSError):
        write_png8(target, np.zeros((H, W)))
    monkeypatch.undo()
    assert target.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_dicom_voi_lut_is_scaled_by_its_own_output_range(tmp_path: Path) -> None:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    item = Dataset()
    item.LUTDescriptor = [4, 1100, 16]  # 4 entries, first input value 1100, 16-bit output
    item.add_new("LUTData", "US", [0, 100, 200, 300])
    pixels = _windowed(tmp_path, "lut.dcm", VOILUTSequence=Sequence([item]))
    # inputs 1000, 1100 -> entry 0; 1200 and above -> the last entry (300 = the LUT's maximum)
    np.testing.assert_allclose(pixels[0], [0.0, 0.0] + [1.0] * (W - 2), atol=1e-6)
    above = _windowed(tmp_path, "lut_above.dcm", RAMP + 1000, VOILUTSequence=Sequence([item]))
    np.testing.assert_array_equal(above, np.ones((H, W), dtype=np.float32))  # beyond the LUT: its top, white


def test_a_non_image_is_a_user_error_after_ultralytics_patched_pillow(tmp_path: Path) -> None:
    """Ultralytics replaces ``PIL.Image.open`` at import with a version that reaches for an optional
    HEIF plugin on unidentified files; the reader must still answer with one user error."""
    import subprocess
    import sys

    (tmp_path / "notes.png").write_text("hello")
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from rfo_bench.detectors.ultralytics_setup import import_ultralytics\n"
        "import_ultralytics()\n"
        "from toolkit_core.errors import UserInputError\n"
        "from rfo_bench.io.formats import image_size\n"
        "from rfo_bench.io.images import read_image\n"
        "for reader in (read_image, image_size):\n"
        "    try:\n"
        "        reader(Path(sys.argv[1]))\n"
        "    except UserInputError as err:\n"
        "        print('user error:', err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "notes.png")], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("user error:") == 2 and "notes.png" in result.stdout

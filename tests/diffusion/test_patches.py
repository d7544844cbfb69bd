"""Patch geometry and COCO loading: hand-computed windows, masks from polygons / RLE / boxes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.diffusion.patches import (
    PatchSpec,
    Window,
    annotation_mask,
    crop_square,
    crop_window,
    inpaint_region,
    load_coco,
    load_coco_patches,
    mask_bbox_xywh,
    patch_masks,
    resize_square,
)
from toolkit_core.errors import UserInputError

SPEC = PatchSpec(size_px=16, context=2.0, mask_margin_px=2, scale_groups_mm_px=None)
"""The fit-to-patch geometry of checkpoints written before scale groups (test_scale.py: physical scale)."""


def test_crop_window_centred_and_clamped():
    # side = max(16, ceil(2 * 6)) = 16; centre (x=13, y=22) -> top-left (14, 5)
    assert crop_window((10, 20, 6, 4), (88, 72), SPEC) == Window(y0=14, x0=5, side=16)
    assert crop_window((0, 0, 4, 4), (88, 72), SPEC) == Window(y0=0, x0=0, side=16)
    # bottom-right corner: clamped to (88 - 16, 72 - 16)
    assert crop_window((68, 84, 4, 4), (88, 72), SPEC) == Window(y0=72, x0=56, side=16)
    # a large object: side = ceil(2 * 20) = 40
    assert crop_window((20, 30, 20, 10), (88, 72), SPEC).side == 40


def test_crop_square_pads_small_images_by_reflection():
    image = np.arange(6 * 5, dtype=np.float32).reshape(6, 5)
    window = crop_window((1, 1, 2, 2), image.shape, SPEC)
    crop = crop_square(image, window)
    assert crop.shape == (16, 16)
    assert set(np.unique(crop)) <= set(image.ravel())


def test_resize_square_identity_and_constant():
    a = np.random.default_rng(0).random((16, 16)).astype(np.float32)
    np.testing.assert_array_equal(resize_square(a, 16), a)
    np.testing.assert_allclose(resize_square(np.full((40, 40), 0.25, np.float32), 16), 0.25, atol=1e-6)


def test_mask_bbox_and_region():
    mask = np.zeros((9, 7), dtype=bool)
    mask[2:5, 3] = True
    assert mask_bbox_xywh(mask) == (3, 2, 1, 3)
    region = inpaint_region(mask, 1)
    assert region.sum() == 3 + 2 * 3 + 2  # the line, both sides, both ends
    with pytest.raises(ValueError):
        mask_bbox_xywh(np.zeros((3, 3), bool))


def test_patch_masks_cover_object_and_margin():
    mask = np.zeros((88, 72), dtype=bool)
    mask[40:44, 30:33] = True
    window = crop_window(mask_bbox_xywh(mask), mask.shape, SPEC)
    obj, region = patch_masks(mask, window, SPEC)
    assert obj.shape == region.shape == (16, 16)
    assert obj.sum() == 12 and np.all(region[obj])
    assert region.sum() > obj.sum() + 10


def test_annotation_mask_formats():
    poly = {"bbox": [1, 1, 4, 3], "segmentation": [[1, 1, 5, 1, 5, 4, 1, 4]]}
    m_poly = annotation_mask(poly, 8, 10)
    assert m_poly.shape == (8, 10) and m_poly[2, 2] and not m_poly[6, 8]
    box = {"bbox": [2, 3, 4, 2]}
    m_box = annotation_mask(box, 8, 10)
    assert m_box.sum() == 8 and m_box[3:5, 2:6].all()
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(m_box.astype(np.uint8)))
    m_rle = annotation_mask({"bbox": [2, 3, 4, 2], "segmentation": {"size": rle["size"],
                                                                      "counts": rle["counts"].decode()}}, 8, 10)
    np.testing.assert_array_equal(m_rle, m_box)


def test_load_coco_patches(tiny_coco):
    patch_set = load_coco_patches(tiny_coco, PatchSpec(size_px=32))
    assert len(patch_set.patches) == 8
    assert {p.category_id for p in patch_set.patches} == {1, 3}
    for p in patch_set.patches:
        assert p.image.shape == (32, 32) and p.image.dtype == np.float32
        assert np.all(p.region[p.object_mask]) and p.object_mask.any()
        # the object is brighter than the rest of the patch
        assert p.image[p.object_mask].mean() > p.image[~p.region].mean() + 0.1
    assert set(patch_set.object_masks) == {1, 3} and len(patch_set.object_masks[3]) == 4
    assert patch_set.object_masks[3][0].shape == (14, 15)  # the 2-px-wide diagonal line


def test_load_coco_errors(tiny_coco, tmp_path):
    with pytest.raises(UserInputError, match="annotations.json"):
        load_coco(tmp_path)
    coco = json.loads((tiny_coco / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 99
    (tiny_coco / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(UserInputError, match="unknown RFO category"):
        load_coco(tiny_coco)


def test_patch_spec_validation():
    with pytest.raises(UserInputError):
        PatchSpec(size_px=30)
    with pytest.raises(UserInputError):
        PatchSpec(context=0.5)


def test_object_outside_its_image_is_a_user_error(tiny_coco):
    coco = json.loads((tiny_coco / "annotations.json").read_text())
    coco["annotations"][1].update(bbox=[500.0, 500.0, 4.0, 4.0], segmentation=[])
    (tiny_coco / "annotations.json").write_text(json.dumps(coco))
    with pytest.raises(UserInputError, match="outside its 72x88 image"):
        load_coco_patches(tiny_coco, SPEC)


def test_smooth_fill_hand_computed():
    from synth.diffusion.patches import smooth_fill

    image = np.zeros((21, 17), dtype=np.float32)  # non-square on purpose
    image[:, 9:] = 1.0
    region = np.zeros_like(image, dtype=bool)
    region[:, 8] = True  # the column between the two halves, 8 pixels each side
    image[region] = 7.0  # whatever is under the region is ignored
    filled = smooth_fill(image, region)
    np.testing.assert_array_equal(filled[~region], image[~region])
    np.testing.assert_allclose(filled[:, 8], 0.5, atol=1e-6)  # symmetric neighbourhood: the mean of 0 and 1
    constant = np.full((12, 10), 0.3, dtype=np.float32)
    block = np.zeros((12, 10), dtype=bool)
    block[2:10, 1:9] = True  # wide region: the wider Gaussians reach it, a constant stays constant
    np.testing.assert_allclose(smooth_fill(constant, block), 0.3, atol=1e-6)
    everything = np.ones((5, 6), dtype=bool)
    np.testing.assert_array_equal(smooth_fill(image[:5, :6], everything), image[:5, :6])


def test_residual_scale_hand_computed():
    from synth.diffusion.patches import residual_scale

    images = np.zeros((2, 16, 16), dtype=np.float32)
    regions = np.zeros((2, 16, 16), dtype=bool)
    regions[:, 4:12, 4:12] = True  # 64 region pixels each
    images[:, 6:10, 7] = 0.1  # 4 object pixels of 0.1 each on a zero background (the fill is 0)
    # RMS inside the regions = 0.1 * sqrt(8 / 128); the scale is twice that
    assert abs(residual_scale(images, regions) - 2 * 0.1 * np.sqrt(8 / 128)) < 1e-6
    assert residual_scale(np.zeros((1, 8, 8)), np.zeros((1, 8, 8), dtype=bool)) == 1.0

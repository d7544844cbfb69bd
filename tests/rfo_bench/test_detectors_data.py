"""Detector training data: tiny COCO sets (used by the other detector tests), categories, 16-bit samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rfo_bench.detectors.data import (
    CategoryMap,
    DetectionSamples,
    build_transform,
    category_map,
    collate,
    require_trainable,
)
from rfo_bench.io.coco import read_coco
from rfo_bench.io.images import write_png16
from rfo_bench.io.records import Category
from toolkit_core.errors import UserInputError


def write_tiny_coco(
    root: Path, *, n: int = 6, seed: int = 0, height: int = 44, width: int = 68, positives: bool = True,
    patient_prefix: str = "p", category_id: int = 3, category_name: str = "needle",
) -> Path:
    """Non-square 16-bit images; every even image holds one bright 8x12 px object.

    Returns:
        Path of ``annotations.json`` (image ``i`` belongs to patient ``f"{patient_prefix}{i // 2}"``).
    """
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        pixels = np.clip(0.3 + 0.02 * rng.standard_normal((height, width)), 0, 1)
        if positives and i % 2 == 0:
            x, y = int(rng.integers(4, width - 16)), int(rng.integers(4, height - 16))
            pixels[y:y + 12, x:x + 8] = 0.9
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category_id,
                                "bbox": [x, y, 8, 12], "area": 96, "iscrowd": 0})
        write_png16(root / "images" / f"{i}.png", pixels)
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "width": width, "height": height,
                       "patient_id": f"{patient_prefix}{i // 2}"})
    categories = [{"id": category_id, "name": category_name, "supercategory": "critical"}]
    target = root / "annotations.json"
    target.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return target


def test_category_map_is_sorted_and_round_trips() -> None:
    class _D:
        def __init__(self, cats):
            self.categories, self.source = cats, "x"

    cmap = category_map([_D((Category(5, "clamp", True),)), _D((Category(3, "needle", True), Category(5, "clamp", True)))])
    assert [c.id for c in cmap.categories] == [3, 5]
    assert cmap.label(5) == 2 and cmap.category_id(1) == 3 and cmap.num_classes == 2
    assert CategoryMap.from_list(cmap.to_list()) == cmap
    with pytest.raises(UserInputError, match="relabel"):
        category_map([_D((Category(3, "needle", True),)), _D((Category(3, "blade", True),))])


def test_training_data_without_positives_is_refused(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "neg", positives=False))
    with pytest.raises(UserInputError, match="no positive image"):
        require_trainable([dataset])


def test_samples_keep_16_bit_precision_and_scale_boxes(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2, height=44, width=68))
    samples = DetectionSamples([dataset], category_map([dataset]), build_transform(34))
    image, target = samples[0]
    assert image.dtype == torch.float32 and tuple(image.shape) == (1, 22, 34)  # longest side 68 -> 34
    original = dataset.images[0].objects[0].bbox_xyxy
    assert torch.allclose(target["boxes"][0], torch.tensor(original) / 2, atol=1e-4)
    assert target["labels"].tolist() == [1]
    # no resize: values are the 16-bit PNG's levels, not 8-bit ones
    image_full, _ = DetectionSamples([dataset], category_map([dataset]), build_transform(68))[1]
    levels = image_full.numpy().ravel() * 65535.0
    assert np.allclose(levels, np.round(levels), atol=1e-2)
    assert len(np.unique(levels)) > 256  # an 8-bit step would leave at most 256 levels
    images, targets = collate([samples[0], samples[1]])
    assert len(images) == 2 and targets[1]["boxes"].shape == (0, 4)


def test_flip_moves_boxes_to_the_mirrored_position(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=1, height=44, width=68))
    samples = DetectionSamples([dataset], category_map([dataset]), build_transform(68, hflip_p=1.0, seed=0))
    image, target = samples[0]
    x1, y1, x2, y2 = dataset.images[0].objects[0].bbox_xyxy
    assert torch.allclose(target["boxes"][0], torch.tensor([68 - x2, y1, 68 - x1, y2]), atol=1e-4)
    assert float(image[0, int(y1) + 1, int(68 - x2) + 1]) == pytest.approx(0.9, abs=1e-4)

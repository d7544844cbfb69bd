"""Tiny COCO datasets for the diffusion tests: bright ellipses (sponge) and lines (needle) on smooth
non-square backgrounds, written as 16-bit PNG under ``images/`` like the physics generator, with the
pixel spacing recorded in ``annotations.json`` (:data:`SPACING_MM`) as the generators do."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.categories import coco_categories
from rfo_bench.io.images import write_png16

HEIGHT, WIDTH = 88, 72  # non-square on purpose
SPACING_MM = 0.5
"""Pixel spacing of the tiny films: the needle (14 px) is 7 mm long, the sponge (15 px) 7.5 mm."""


def smooth_background(rng: np.random.Generator, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.3 + 0.2 * yy / height + 0.1 * np.sin(xx / width * np.pi)
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    base += 0.1 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 15.0**2))
    return base.astype(np.float32)


def ellipse_mask(height: int, width: int, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def line_mask(height: int, width: int, y0: int, x0: int, length: int) -> np.ndarray:
    mask = np.zeros((height, width), dtype=bool)
    for k in range(length):
        mask[y0 + k, x0 + k: x0 + k + 2] = True
    return mask


def ellipse_polygon(cy: float, cx: float, ry: float, rx: float, n: int = 24) -> list[float]:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [float(v) for a in angles for v in (cx + 0.5 + rx * np.cos(a), cy + 0.5 + ry * np.sin(a))]


def write_tiny_coco(root: Path, n_images: int = 4, seed: int = 0, spacing_mm: float | None = SPACING_MM) -> Path:
    """Write ``n_images`` images with one sponge (polygon label) and one needle (RLE label) each."""
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for i in range(n_images):
        pixels = smooth_background(rng)
        cy, cx = rng.uniform(20, 30), rng.uniform(18, 28)
        sponge = ellipse_mask(HEIGHT, WIDTH, cy, cx, 7, 5)
        y0, x0 = int(rng.integers(50, 60)), int(rng.integers(35, 45))
        needle = line_mask(HEIGHT, WIDTH, y0, x0, 14)
        pixels = np.where(sponge, pixels + 0.3, pixels)
        pixels = np.where(needle, pixels + 0.5, pixels)
        name = f"{i:06d}.png"
        write_png16(root / "images" / name, np.clip(pixels, 0, 1))
        entry = {"id": i + 1, "file_name": f"images/{name}", "width": WIDTH, "height": HEIGHT}
        if spacing_mm is not None:
            entry["pixel_spacing_mm"] = [spacing_mm, spacing_mm]
        images.append(entry)
        ys, xs = np.nonzero(sponge)
        annotations.append({
            "id": 2 * i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0,
            "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
            "area": float(sponge.sum()), "segmentation": [ellipse_polygon(cy, cx, 7, 5)],
        })
        rle = mask_utils.encode(np.asfortranarray(needle.astype(np.uint8)))
        ys, xs = np.nonzero(needle)
        annotations.append({
            "id": 2 * i + 2, "image_id": i + 1, "category_id": 3, "iscrowd": 0,
            "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
            "area": float(needle.sum()), "segmentation": {"size": rle["size"], "counts": rle["counts"].decode()},
        })
    coco = {"images": images, "annotations": annotations, "categories": coco_categories()}
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


@pytest.fixture
def tiny_coco(tmp_path: Path) -> Path:
    return write_tiny_coco(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny model trained for 4 steps (checkpoints at 2 and 4) on a tiny dataset: ``(data, ckpt)``."""
    import torch

    from synth.diffusion.model import TINY_MODEL
    from synth.diffusion.patches import PatchSpec
    from synth.diffusion.train import TrainConfig, train

    root = tmp_path_factory.mktemp("tiny_run")
    data = write_tiny_coco(root / "data")
    config = TrainConfig(steps=4, batch_size=4, save_every=2, warmup_steps=1)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same reduction order as the tests that compare against this run
    try:
        train(data, root / "ckpt", config, TINY_MODEL, PatchSpec(size_px=32), progress=False)
    finally:
        torch.set_num_threads(before)
    return data, root / "ckpt"

"""Factories for small random COCO problems shared by the rfo_bench tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest


def random_coco_problem(
    seed: int, *, num_images: int = 40, num_categories: int = 4, max_dets: int = 8, integer: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A COCO ground truth and results with empty images, images without predictions, category ids
    that are not 1..K, near-duplicate boxes and (``integer=True``) many exact IoU and score ties."""
    rng = np.random.default_rng(seed)
    images = [{"id": int(3 * i + 2), "width": 300, "height": 200, "file_name": f"{i}.png"} for i in range(num_images)]
    anns: list[dict[str, Any]] = []
    for im in images:
        for _ in range(int(rng.integers(0, 5))):
            x, y = rng.uniform(0, 250, 2)
            w, h = rng.uniform(2, 150, 2)
            if integer:
                x, y, w, h = (float(round(v / 10) * 10 + 10) for v in (x, y, w, h))
            anns.append({"id": len(anns) + 1, "image_id": im["id"], "category_id": 2 * int(rng.integers(1, num_categories + 1)),
                         "bbox": [float(x), float(y), float(w), float(h)], "area": float(w * h * rng.uniform(0.5, 1.0)),
                         "iscrowd": 0})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 2 * c, "name": f"c{c}"} for c in range(1, num_categories + 2)]}
    results: list[dict[str, Any]] = []
    for im in images[: num_images - 5]:  # the last five images get no prediction
        for _ in range(int(rng.integers(0, max_dets))):
            if anns and rng.random() < 0.6:
                a = anns[int(rng.integers(len(anns)))]
                box = np.array(a["bbox"]) + rng.normal(0, 5, 4)
                box[2:] = np.abs(box[2:]) + 1
                image_id = a["image_id"]
                cat = a["category_id"] if rng.random() < 0.8 else 2 * int(rng.integers(1, num_categories + 1))
            else:
                box = np.r_[rng.uniform(0, 250, 2), rng.uniform(2, 150, 2)]
                image_id, cat = im["id"], 2 * int(rng.integers(1, num_categories + 1))
            if integer:
                box = np.round(box / 10) * 10 + 10
            score = float(rng.integers(0, 5)) / 4 if integer else float(rng.random())
            results.append({"image_id": int(image_id), "category_id": int(cat), "bbox": [float(v) for v in box],
                            "score": score})
    return gt, results


@pytest.fixture
def coco_problem():
    return random_coco_problem

"""Contact sheets of a generated dataset with the labelled boxes drawn."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rfo_bench.errors import UserInputError

CRITICAL_RGB = (255, 60, 60)
NON_CRITICAL_RGB = (60, 200, 255)


def contact_sheet(dataset_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, n: int = 16,
                  columns: int = 4, tile_px: int = 256) -> Path:
    """Write a grid of the first ``n`` images of a COCO dataset with boxes (red critical, blue other).

    Raises:
        UserInputError: no ``annotations.json`` or no images.
    """
    from PIL import Image, ImageDraw

    from rfo_bench.categories import CATEGORY_BY_ID, CRITICAL
    from rfo_bench.io.images import read_image

    folder = Path(dataset_dir)
    ann_file = folder / "annotations.json"
    if not ann_file.is_file():
        raise UserInputError("not a dataset directory: annotations.json is missing", file=folder)
    try:
        coco = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"invalid JSON: {err}", file=ann_file) from None
    images = coco.get("images", [])[:n]
    if not images:
        raise UserInputError("dataset has no images", file=ann_file)
    by_image: dict[int, list] = {}
    for ann in coco.get("annotations", []):
        by_image.setdefault(ann["image_id"], []).append(ann)
    rows = -(-len(images) // columns)
    sheet = Image.new("RGB", (columns * tile_px, rows * tile_px), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for k, record in enumerate(images):
        pixels = read_image(folder / record["file_name"]).pixels
        tile = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert("RGB")
        scale = tile_px / max(tile.size)
        tile = tile.resize((max(int(tile.size[0] * scale), 1), max(int(tile.size[1] * scale), 1)), Image.BILINEAR)
        x0, y0 = (k % columns) * tile_px, (k // columns) * tile_px
        sheet.paste(tile, (x0, y0))
        for ann in by_image.get(record["id"], []):
            x, y, w, h = (v * scale for v in ann["bbox"])
            cat = CATEGORY_BY_ID.get(ann["category_id"])
            colour = CRITICAL_RGB if cat is not None and cat.supercategory == CRITICAL else NON_CRITICAL_RGB
            draw.rectangle([x0 + x - 1, y0 + y - 1, x0 + x + w + 1, y0 + y + h + 1], outline=colour, width=1)
            if cat is not None:
                draw.text((x0 + x, max(y0 + y - 11, y0)), cat.name, fill=colour)
    target = Path(out) if out is not None else folder / "preview.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(target, format="PNG", optimize=True)
    return target

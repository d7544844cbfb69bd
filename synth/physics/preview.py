"""Contact sheets of a generated dataset with the labelled boxes drawn."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from rfo_bench.errors import UserInputError

CRITICAL_RGB = (255, 60, 60)
NON_CRITICAL_RGB = (60, 200, 255)


def _load(folder: Path) -> dict:
    ann_file = folder / "annotations.json"
    if not ann_file.is_file():
        raise UserInputError("not a dataset directory: annotations.json is missing", file=folder)
    try:
        coco = json.loads(ann_file.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"invalid JSON: {err}", file=ann_file) from None
    if not coco.get("images"):
        raise UserInputError("dataset has no images", file=ann_file)
    return coco


def contact_sheet(dataset_dirs: str | os.PathLike[str] | list, out: str | os.PathLike[str] | None = None,
                  n: int = 16, columns: int = 4, tile_px: int = 256) -> Path:
    """Write a grid of images of one or more COCO datasets with boxes (red critical, blue other).

    ``n`` images are taken in order, split evenly between the datasets.

    Raises:
        UserInputError: no ``annotations.json`` or no images.
    """
    from PIL import Image, ImageDraw

    from rfo_bench.categories import CATEGORY_BY_ID, CRITICAL
    from rfo_bench.io.images import read_image

    folders = [Path(d) for d in (dataset_dirs if isinstance(dataset_dirs, (list, tuple)) else [dataset_dirs])]
    per = -(-n // len(folders))
    entries = []
    for folder in folders:
        coco = _load(folder)
        by_image: dict[int, list] = {}
        for ann in coco.get("annotations", []):
            by_image.setdefault(ann["image_id"], []).append(ann)
        entries += [(folder, record, by_image.get(record["id"], [])) for record in coco["images"][:per]]
    entries = entries[:n]
    folder = folders[0]
    rows = -(-len(entries) // columns)
    sheet = Image.new("RGB", (columns * tile_px, rows * tile_px), (0, 0, 0))
    draw = ImageDraw.Draw(sheet)
    for k, (source, record, anns) in enumerate(entries):
        pixels = read_image(source / record["file_name"]).pixels
        tile = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert("RGB")
        scale = tile_px / max(tile.size)
        tile = tile.resize((max(int(tile.size[0] * scale), 1), max(int(tile.size[1] * scale), 1)), Image.LANCZOS)
        x0, y0 = (k % columns) * tile_px, (k // columns) * tile_px
        sheet.paste(tile, (x0, y0))
        for ann in anns:
            x, y, w, h = (v * scale for v in ann["bbox"])
            cat = CATEGORY_BY_ID.get(ann["category_id"])
            colour = CRITICAL_RGB if cat is not None and cat.supercategory == CRITICAL else NON_CRITICAL_RGB
            draw.rectangle([x0 + x - 1, y0 + y - 1, x0 + x + w + 1, y0 + y + h + 1], outline=colour, width=1)
            if cat is not None:
                draw.text((x0 + x, max(y0 + y - 11, y0)), cat.name, fill=colour)
    target = Path(out) if out is not None else folder / "preview.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the sheet small (grey levels plus the box colours).
    sheet.convert("P", palette=Image.ADAPTIVE, colors=256).save(target, format="PNG", optimize=True)
    return target

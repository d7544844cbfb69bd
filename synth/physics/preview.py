"""Contact sheets of a generated dataset with the labelled boxes drawn."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rfo_bench.io.coco import dataset_annotations_path, load_dataset_coco
from toolkit_core.errors import UserInputError

CRITICAL_RGB = (255, 60, 60)
NON_CRITICAL_RGB = (60, 200, 255)


def _load(folder: Path) -> dict:
    """The dataset's COCO document (:func:`rfo_bench.io.coco.load_dataset_coco`), refused without images."""
    coco = load_dataset_coco(folder)
    if not coco["images"]:
        raise UserInputError("dataset has no images", file=dataset_annotations_path(folder), field="images")
    return coco


def contact_sheet(dataset_dirs: str | os.PathLike[str] | list, out: str | os.PathLike[str] | None = None,
                  n: int = 16, columns: int = 4, tile_px: int = 256, crops: bool = False) -> Path:
    """Write a grid of images of one or more COCO datasets with boxes (red critical, blue other).

    ``n`` images are taken in order, split evenly between the datasets. With ``crops`` each tile is
    instead a close-up of one object (a square around its box, at least ``tile_px`` native pixels), to
    judge thin wires and marker threads that whole-image thumbnails cannot show.

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
        if crops:
            records = {r["id"]: r for r in coco["images"]}
            anns = sorted(coco.get("annotations", []), key=lambda a: a["id"])[:per]
            entries += [(folder, records[a["image_id"]], by_image[a["image_id"]], a) for a in anns]
        else:
            entries += [(folder, record, by_image.get(record["id"], []), None) for record in coco["images"][:per]]
    entries = entries[:n]
    folder = folders[0]
    rows = -(-len(entries) // columns)
    sheet = Image.new("RGB", (columns * tile_px, rows * tile_px), (0, 0, 0))
    if not entries:
        raise UserInputError("nothing to show (no annotations for --crops)", file=folders[0])
    for k, (source, record, anns, focus) in enumerate(entries):
        pixels = read_image(source / record["file_name"]).pixels
        origin = (0.0, 0.0)
        if focus is not None:
            bx, by, bw, bh = focus["bbox"]
            side = int(max(bw, bh, tile_px) * 1.15)
            cx, cy = bx + bw / 2, by + bh / 2
            c0 = int(np.clip(cx - side / 2, 0, max(pixels.shape[1] - side, 0)))
            r0 = int(np.clip(cy - side / 2, 0, max(pixels.shape[0] - side, 0)))
            pixels = pixels[r0:r0 + side, c0:c0 + side]
            origin = (float(c0), float(r0))
        tile = Image.fromarray(np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)).convert("RGB")
        scale = tile_px / max(tile.size)
        tile = tile.resize((max(int(tile.size[0] * scale), 1), max(int(tile.size[1] * scale), 1)), Image.LANCZOS)
        draw = ImageDraw.Draw(tile)  # drawing on the tile clips boxes that reach beyond it
        for ann in anns:
            bx, by, bw, bh = ann["bbox"]
            x, y, w, h = ((bx - origin[0]) * scale, (by - origin[1]) * scale, bw * scale, bh * scale)
            cat = CATEGORY_BY_ID.get(ann["category_id"])
            colour = CRITICAL_RGB if cat is not None and cat.supercategory == CRITICAL else NON_CRITICAL_RGB
            draw.rectangle([x - 1, y - 1, x + w + 1, y + h + 1], outline=colour, width=1)
            if cat is not None:
                draw.text((max(x, 0), max(y - 11, 0)), cat.name, fill=colour)
        sheet.paste(tile, ((k % columns) * tile_px, (k // columns) * tile_px))
    target = Path(out) if out is not None else folder / "preview.png"
    target.parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the sheet small (grey levels plus the box colours).
    sheet.convert("P", palette=Image.ADAPTIVE, colors=256).save(target, format="PNG", optimize=True)
    return target

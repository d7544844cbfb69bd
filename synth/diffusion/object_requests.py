"""Where objects go: mask-bank shapes placed at random, or the requests a ``--requests`` JSON file names.

Either way a request is an :class:`~synth.diffusion.inpaint.ObjectRequest`: a category and its mask in
full-image pixels, checked against the checkpoint's classes and the background's size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from rfo_bench.categories import CATEGORY_BY_ID, category
from rfo_bench.io.images import read_image
from synth.diffusion.inpaint import ObjectRequest, check_class, check_request
from synth.diffusion.model import CheckpointInfo
from synth.diffusion.patches import mask_bbox_xywh, zoom_mask
from toolkit_core.errors import UserInputError


def place_bank_mask(
    bank_mask: np.ndarray, image_hw: tuple[int, int], scale: float, rng: np.random.Generator,
    occupied: np.ndarray | None = None, box_fraction: tuple[float, float] = (0.12, 0.88), tries: int = 50,
) -> np.ndarray | None:
    """Randomly rotate/flip/scale a tight object mask and place it in the central box of the image.

    Args:
        bank_mask: tight ``(h, w)`` bool mask from the checkpoint's mask bank.
        image_hw: target image size.
        scale: training pixel spacing / target pixel spacing.
        rng: placement randomness.
        occupied: ``(H, W)`` bool, pixels already used by other objects (avoided).
        box_fraction: the object's centre lies in this fraction of each axis.
        tries: placements tried before giving up.

    Returns:
        ``(H, W)`` bool mask, or ``None`` when it does not fit.
    """
    mask = np.rot90(bank_mask, int(rng.integers(4)))
    if rng.integers(2):
        mask = mask[:, ::-1]
    mask = zoom_mask(mask, scale)  # the object keeps its mm size on a film of another spacing
    if not mask.any():
        return None
    x, y, w, h = mask_bbox_xywh(mask)
    mask = mask[y:y + h, x:x + w]
    height, width = image_hw
    lo_y, hi_y = box_fraction[0] * height - h / 2, box_fraction[1] * height - h / 2
    lo_x, hi_x = box_fraction[0] * width - w / 2, box_fraction[1] * width - w / 2
    lo_y, lo_x = max(lo_y, 0), max(lo_x, 0)
    hi_y, hi_x = min(hi_y, height - h), min(hi_x, width - w)
    if hi_y < lo_y or hi_x < lo_x:
        return None
    for _ in range(tries):
        top, left = int(rng.integers(int(lo_y), int(hi_y) + 1)), int(rng.integers(int(lo_x), int(hi_x) + 1))
        full = np.zeros(image_hw, dtype=bool)
        full[top:top + h, left:left + w] = mask
        if occupied is None or not (ndimage.binary_dilation(full, iterations=4) & occupied).any():
            return full
    return None



def requests_from_file(path: Path, backgrounds: list[Path], info: CheckpointInfo, bank, rng):
    """Parse ``--requests``: a JSON list of ``{"background", "category", "bbox" | "mask"}``.

    Returns:
        ``(background path, loaded background, [ObjectRequest, ...])`` per background named (default: the
        first of ``backgrounds``), in the order the file first names them.

    Raises:
        UserInputError: unreadable file, a malformed request, or one the checkpoint cannot draw (naming
            the file and the request's index).
    """
    try:
        items = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise UserInputError(f"cannot read requests: {err}", file=path) from None
    if not isinstance(items, list) or not items:
        raise UserInputError("expected a non-empty JSON list of requests", file=path)
    grouped: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for k, item in enumerate(items):
        if not isinstance(item, dict) or "category" not in item or not ({"bbox", "mask"} & set(item)):
            raise UserInputError('each request needs "category" and "bbox" or "mask"', file=path,
                                 field=f"[{k}]", value=item)
        bg = str(item.get("background", backgrounds[0]))
        grouped.setdefault(bg, []).append((k, item))
    plans = []
    for bg, entries in grouped.items():
        bg_path = Path(bg) if Path(bg).exists() else (path.parent / bg)
        loaded = read_image(bg_path)
        hw = loaded.pixels.shape
        reqs = []
        for k, item in entries:
            cid = category(str(item["category"])).id
            where = f"{path}[{k}]"
            check_class(cid, info.category_ids, where)
            if "mask" in item:
                mask_path = Path(item["mask"]) if Path(item["mask"]).exists() else path.parent / item["mask"]
                mask = read_image(mask_path).pixels > 0.5
            else:
                mask = _bbox_request_mask(item["bbox"], hw, cid, bank, rng, where)
            request = ObjectRequest(cid, mask)
            check_request(request, hw, info.category_ids, where)
            reqs.append(request)
        plans.append((bg_path, loaded, reqs))
    return plans


def _bbox_request_mask(bbox: Any, hw: tuple[int, int], cid: int, bank, rng, where: str) -> np.ndarray:
    """A bank mask of class ``cid`` stretched to fill ``bbox`` exactly."""
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise UserInputError("bbox must be [x, y, w, h]", file=where, field="bbox", value=bbox)
    x, y, w, h = (int(round(v)) for v in bbox)
    height, width = hw
    if w < 1 or h < 1 or x < 0 or y < 0 or x + w > width or y + h > height:
        raise UserInputError(f"mask outside the image ({width}x{height})", file=where, field="bbox", value=bbox)
    masks = bank.get(cid) or []
    if not masks:
        raise UserInputError("no mask of this class in the checkpoint's mask bank", file=where, field="category",
                             value=CATEGORY_BY_ID[cid].name)
    shape = masks[int(rng.integers(len(masks)))]
    if (w > h) != (shape.shape[1] > shape.shape[0]):
        shape = shape.T
    zoomed = ndimage.zoom(shape.astype(np.float32), (h / shape.shape[0], w / shape.shape[1]), order=1) > 0.5
    zoomed = zoomed[:h, :w]
    mask = np.zeros(hw, dtype=bool)
    mask[y:y + zoomed.shape[0], x:x + zoomed.shape[1]] = zoomed
    return mask


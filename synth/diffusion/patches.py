"""Object patches for the inpainting model: crop windows, inpainting masks, resizing, COCO loading.

One geometry rule is shared by training and sampling so that the model sees objects at the same
scale in both: the crop around an object is a square of side
``max(size_px, ceil(context * max(bbox_w, bbox_h)))`` full-image pixels, centred on the object and
shifted to stay inside the image, then resized to ``size_px``. The region the model inpaints is the
object mask dilated by ``mask_margin_px`` patch pixels (converted to full-image pixels), so the object
itself fills the interior of the inpainted region and the label of a sample is exactly the object mask
that was asked for.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from rfo_bench.categories import CATEGORY_BY_ID
from rfo_bench.io.coco import (
    coco_pixel_spacing_mm,
    dataset_annotations_path,
    load_dataset_coco,
    resolve_dataset_image,
)
from rfo_bench.io.images import read_image
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PatchSpec:
    """How object patches are cut from radiographs.

    Attributes:
        size_px: side of the square patch the model works on (pixels).
        context: crop side as a multiple of the object's longest bbox side.
        mask_margin_px: dilation of the object mask, in patch pixels, giving the inpainted region.
    """

    size_px: int = 64
    context: float = 1.6
    mask_margin_px: int = 3

    def __post_init__(self) -> None:
        if self.size_px < 16 or self.size_px % 8:
            raise UserInputError("patch size must be a multiple of 8 and at least 16", field="size", value=self.size_px)
        if self.context < 1.0:
            raise UserInputError("context must be >= 1 (the crop must hold the object)", field="context",
                                 value=self.context)
        if self.mask_margin_px < 0:
            raise UserInputError("mask margin must be >= 0", field="mask_margin_px", value=self.mask_margin_px)


@dataclass(frozen=True)
class Window:
    """A square crop ``[y0, y0 + side) x [x0, x0 + side)`` in full-image pixels (may exceed small images)."""

    y0: int
    x0: int
    side: int


@dataclass(frozen=True)
class ObjectPatch:
    """One training example.

    Attributes:
        image: ``(S, S)`` float32 in ``[0, 1]``, the patch with the object.
        region: ``(S, S)`` bool, the inpainted region (dilated object mask).
        object_mask: ``(S, S)`` bool, the object itself.
        category_id: RFO category id (:mod:`rfo_bench.categories`).
        image_id: COCO image id.
        annotation_id: COCO annotation id.
    """

    image: np.ndarray
    region: np.ndarray
    object_mask: np.ndarray
    category_id: int
    image_id: int
    annotation_id: int


def mask_bbox_xywh(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight integer bbox ``(x, y, w, h)`` of a non-empty boolean ``(H, W)`` mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask is empty")
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def crop_window(bbox_xywh: tuple[float, float, float, float], image_hw: tuple[int, int], spec: PatchSpec) -> Window:
    """The square crop around an object (see the module docstring for the rule).

    The window is shifted to lie inside the image when the image is large enough; for images smaller
    than the window it is centred and :func:`crop_square` pads by reflection.
    """
    x, y, w, h = bbox_xywh
    side = max(spec.size_px, int(math.ceil(spec.context * max(w, h))))
    height, width = image_hw
    cy, cx = y + h / 2.0, x + w / 2.0
    y0 = int(round(cy - side / 2.0))
    x0 = int(round(cx - side / 2.0))
    y0 = min(max(y0, 0), height - side) if height >= side else (height - side) // 2
    x0 = min(max(x0, 0), width - side) if width >= side else (width - side) // 2
    return Window(y0=y0, x0=x0, side=side)


def crop_square(array: np.ndarray, window: Window) -> np.ndarray:
    """Cut ``window`` out of a ``(H, W)`` array, reflect-padding where it leaves the image."""
    height, width = array.shape
    top, left = max(0, -window.y0), max(0, -window.x0)
    bottom = max(0, window.y0 + window.side - height)
    right = max(0, window.x0 + window.side - width)
    if top or left or bottom or right:
        mode = "reflect" if min(height, width) > 1 else "edge"
        array = np.pad(array, ((top, bottom), (left, right)), mode=mode)
    y0, x0 = window.y0 + top, window.x0 + left
    return array[y0:y0 + window.side, x0:x0 + window.side]


def resize_square(array: np.ndarray, size_px: int) -> np.ndarray:
    """Resize a square ``(N, N)`` float array to ``(size_px, size_px)`` (antialiased bilinear).

    Returns float32; the identity when the size already matches.
    """
    import torch
    import torch.nn.functional as F

    array = np.asarray(array, dtype=np.float32)
    if array.shape == (size_px, size_px):
        return array.copy()
    tensor = torch.from_numpy(np.ascontiguousarray(array))[None, None]
    out = F.interpolate(tensor, size=(size_px, size_px), mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy()


def disk(radius_px: int) -> np.ndarray:
    """Boolean disk structuring element of the given radius (``(2r+1, 2r+1)``)."""
    r = int(radius_px)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (yy * yy + xx * xx) <= r * r


def region_radius_full_px(spec: PatchSpec, side: int) -> int:
    """The inpainting margin in full-image pixels for a crop of ``side`` pixels (at least 1)."""
    return max(1, int(round(spec.mask_margin_px * side / spec.size_px)))


def inpaint_region(object_mask: np.ndarray, radius_px: int) -> np.ndarray:
    """The object mask dilated by a disk of ``radius_px`` (the pixels the model may change)."""
    if radius_px <= 0:
        return object_mask.astype(bool)
    return ndimage.binary_dilation(object_mask, structure=disk(radius_px))


def patch_masks(object_mask_full: np.ndarray, window: Window, spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
    """Object mask and inpainted region of ``window`` at patch resolution.

    Both are resized by area and kept where any coverage remains, so the patch region covers the
    full-resolution region entirely (the model never has to leave a pixel it cannot change).

    Returns:
        ``(object_mask, region)``, each ``(S, S)`` bool.
    """
    crop_obj = crop_square(object_mask_full.astype(np.float32), window)
    radius = region_radius_full_px(spec, window.side)
    crop_region = inpaint_region(crop_obj > 0.5, radius).astype(np.float32)
    obj = resize_square(crop_obj, spec.size_px) > 0.5
    region = resize_square(crop_region, spec.size_px) > 1e-3
    return obj, region | obj


FILL_SIGMAS_PX = (1.5, 3.0, 6.0, 12.0, 24.0)
"""Gaussian widths (patch pixels) of :func:`smooth_fill`, narrowest first."""


def smooth_fill(image: np.ndarray, region: np.ndarray, sigmas_px: tuple[float, ...] = FILL_SIGMAS_PX) -> np.ndarray:
    """``image`` with ``region`` replaced by a smooth interpolation of the pixels around it.

    Normalised convolution (Knutsson & Westin, CVPR 1993): inside the region each pixel becomes
    ``G * (image * known) / G * known`` for the narrowest Gaussian ``G`` whose support reaches known
    pixels (weight above 1e-3), so thin regions take their nearest surroundings and wide ones a broader
    average. Outside the region the image is returned unchanged. Pure; works in any units.

    Args:
        image: ``(H, W)`` float array.
        region: ``(H, W)`` bool, the pixels to replace.
        sigmas_px: Gaussian widths tried in order.

    Returns:
        ``(H, W)`` float32. If the region covers the whole image, the region is left as it was.
    """
    image = np.asarray(image, dtype=np.float32)
    region = np.asarray(region, dtype=bool)
    out = image.copy()
    known = (~region).astype(np.float32)
    todo = region.copy()
    for sigma in sigmas_px:
        if not todo.any():
            break
        num = ndimage.gaussian_filter(image * known, sigma, mode="reflect")
        den = ndimage.gaussian_filter(known, sigma, mode="reflect")
        ok = todo & (den > 1e-3)
        out[ok] = num[ok] / den[ok]
        todo &= ~ok
    return out


def residual_scale(images: np.ndarray, regions: np.ndarray) -> float:
    """Twice the RMS of ``image - smooth_fill(image, region)`` inside the regions of a set of patches.

    Dividing the object layer by this brings it to a standard deviation of about 0.5, the scale the
    noise schedule is designed for. Returns 1.0 when no region pixel exists or the layer is all zero.

    Args:
        images: ``(N, S, S)`` patches; regions: ``(N, S, S)`` bool.
    """
    values = [(img - smooth_fill(img, reg))[reg] for img, reg in zip(images, regions.astype(bool))]
    flat = np.concatenate(values) if values else np.zeros(0, dtype=np.float32)
    rms = float(np.sqrt(np.mean(np.square(flat, dtype=np.float64)))) if flat.size else 0.0
    return 2.0 * rms if rms > 0 else 1.0


# --------------------------------------------------------------------------------------------- COCO


def load_coco(data_dir: str | Path) -> dict[str, Any]:
    """Read and validate ``DATA/annotations.json`` (:func:`rfo_bench.io.coco.load_dataset_coco`), whose
    objects must all be RFO categories on listed images.

    Raises:
        UserInputError: missing file, missing keys, unknown category ids, or dangling image ids.
    """
    coco = load_dataset_coco(data_dir)
    path = dataset_annotations_path(data_dir)
    image_ids = {int(img["id"]) for img in coco["images"]}
    for ann in coco["annotations"]:
        cid = int(ann.get("category_id", -1))
        if cid not in CATEGORY_BY_ID:
            raise UserInputError(f"unknown RFO category id; expected one of {sorted(CATEGORY_BY_ID)}",
                                 file=path, field=f"annotations[id={ann.get('id')}].category_id", value=cid)
        if int(ann.get("image_id", -1)) not in image_ids:
            raise UserInputError("annotation refers to a missing image", file=path,
                                 field=f"annotations[id={ann.get('id')}].image_id", value=ann.get("image_id"))
        bbox = ann.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and bbox[2] > 0 and bbox[3] > 0):
            raise UserInputError("bbox must be [x, y, w, h] with positive size", file=path,
                                 field=f"annotations[id={ann.get('id')}].bbox", value=bbox)
    return coco


def annotation_mask(ann: dict[str, Any], height: int, width: int) -> np.ndarray:
    """The object mask of a COCO annotation: its segmentation (polygons or RLE), else its bbox."""
    from pycocotools import mask as mask_utils

    seg = ann.get("segmentation")
    if seg:
        if isinstance(seg, list):
            rles = mask_utils.frPyObjects(seg, height, width)
            rle = mask_utils.merge(rles)
        elif isinstance(seg.get("counts"), list):
            rle = mask_utils.frPyObjects(seg, height, width)
        else:
            rle = dict(seg)
            if isinstance(rle["counts"], str):
                rle["counts"] = rle["counts"].encode("ascii")
        mask = mask_utils.decode(rle).astype(bool)
        if mask.any():
            return mask
    x, y, w, h = ann["bbox"]
    mask = np.zeros((height, width), dtype=bool)
    mask[max(0, int(math.floor(y))):int(math.ceil(y + h)), max(0, int(math.floor(x))):int(math.ceil(x + w))] = True
    return mask


def image_spacing_mm(entry: dict[str, Any], loaded_spacing: tuple[float, float]) -> float:
    """Isotropic pixel spacing of a COCO image: its ``pixel_spacing_mm`` field
    (:func:`rfo_bench.io.coco.coco_pixel_spacing_mm`), else the file's."""
    recorded = coco_pixel_spacing_mm(entry)
    return recorded if recorded is not None else float(sum(loaded_spacing) / 2.0)


@dataclass(frozen=True)
class PatchSet:
    """Patches of one COCO dataset plus the object masks (tight crops) per class for sampling."""

    patches: list[ObjectPatch]
    object_masks: dict[int, list[np.ndarray]]
    spacing_mm: float


def load_coco_patches(data_dir: str | Path, spec: PatchSpec, *, max_masks_per_class: int = 256) -> PatchSet:
    """Cut one patch per annotation of a COCO dataset.

    Args:
        data_dir: directory with ``annotations.json`` and the images (16-bit PNG or DICOM).
        spec: the patch geometry.
        max_masks_per_class: tight object masks kept per class for the sampler's mask bank.

    Returns:
        The patches, the mask bank and the median pixel spacing (mm) of the images.
    """
    from tqdm import tqdm

    root = Path(data_dir)
    coco = load_coco(root)
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    patches: list[ObjectPatch] = []
    bank: dict[int, list[np.ndarray]] = {}
    spacings: list[float] = []
    entries = [img for img in coco["images"] if int(img["id"]) in by_image]
    for entry in tqdm(entries, desc="patches", unit="image", disable=len(entries) < 50):
        loaded = read_image(resolve_dataset_image(root, str(entry["file_name"])))
        pixels = loaded.pixels
        height, width = pixels.shape
        spacings.append(image_spacing_mm(entry, loaded.pixel_spacing_mm))
        for ann in by_image[int(entry["id"])]:
            full_mask = annotation_mask(ann, height, width)
            if not full_mask.any():
                raise UserInputError(f"the object lies outside its {width}x{height} image", file=root / "annotations.json",
                                     field=f"annotations[id={ann.get('id')}].bbox", value=ann.get("bbox"))
            x, y, w, h = mask_bbox_xywh(full_mask)
            window = crop_window((x, y, w, h), (height, width), spec)
            image = np.clip(resize_square(crop_square(pixels, window), spec.size_px), 0.0, 1.0)
            obj, region = patch_masks(full_mask, window, spec)
            cid = int(ann["category_id"])
            patches.append(ObjectPatch(image=image, region=region, object_mask=obj, category_id=cid,
                                       image_id=int(entry["id"]), annotation_id=int(ann.get("id", len(patches)))))
            kept = bank.setdefault(cid, [])
            if len(kept) < max_masks_per_class:
                kept.append(full_mask[y:y + h, x:x + w].copy())
    if not patches:
        raise UserInputError("the dataset has no annotations to learn from", file=root / "annotations.json",
                             field="annotations")
    logger.info("%d object patches from %d images in %s", len(patches), len(entries), root)
    return PatchSet(patches=patches, object_masks=bank, spacing_mm=float(np.median(spacings)))

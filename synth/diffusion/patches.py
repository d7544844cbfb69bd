"""Object patches for the inpainting model: crop windows, inpainting masks, resizing, COCO loading.

One geometry rule, :func:`crop_window`, is shared by training and sampling, so the model sees objects
at the same scale in both. It has two modes, chosen by ``PatchSpec.scale_groups_mm_px``:

* **physical scale** (the default): a small set of *scale groups*, each a patch pixel size in mm. An
  object goes to the finest group whose window (``size_px x group mm``) holds ``context x`` its longest
  side in mm; when none does, to the coarsest one if its window holds the object itself (less
  context), else it is refused (:func:`scale_group`). The crop is a square of
  ``round(size_px x group_mm / film_spacing_mm)`` film pixels resized to ``size_px``, so every patch
  of a group has the same mm per pixel (up to the rounding of the side, a relative ``0.5 / side``)
  whatever the film's spacing, and a 14 cm clamp and a 3 cm needle keep their true size ratio
  within a group. The UNet is told the group (:mod:`synth.diffusion.model`).
* **fit to patch** (checkpoints written before scale groups, ``scale_groups_mm_px=None``): the crop
  is a square of ``max(size_px, ceil(context x longest bbox side))`` film pixels, so each object is
  rescaled to fit its patch and its drawn scale is not physical.

Either way the window is centred on the object and shifted to stay inside the image. The region the
model inpaints is the object mask dilated by ``mask_margin_px`` patch pixels (converted to film
pixels), so the object itself fills the interior of the inpainted region and the label of a sample is
exactly the object mask that was asked for.

Default groups, :data:`DEFAULT_SCALE_GROUPS_MM_PX` = (0.75, 2.0, 5.0) mm per patch pixel. The
physics library's objects (:mod:`synth.physics.objects`) measure, longest projected side on 400
films at 512 px: needle 8-42 mm, blade 23-44, guidewire 28-179, sponge 29-242 (gauze 70-105 mm
and laparotomy pads 140-230 mm, crumpled), cottonoid 62-176, clamp 61-175. With 64-px patches and
context 1.6 the windows are 48, 128 and 320 mm and hold objects up to 30, 80 and 200 mm with full
context (320 mm without): 0.75 mm/px takes most needles at about the 0.72 mm spacing of 512-px
physics films (their crops are not interpolated), 2.0 mm/px blades, long needles, gauze and short
guidewires, 5.0 mm/px clamps, cottonoids, laparotomy pads and long guidewires. Successive groups
differ by about 2.5x, so an object spans 23-62 % of its patch side. On those 400 films the split
per group is needle 55/35/0, blade 4/35/0, sponge 1/81/33, guidewire 2/38/39, cottonoid 0/6/27,
clamp 0/7/116. Larger patches see the same windows in finer detail with proportionally finer groups
(``--scale-groups 0.375,1,2.5`` at ``--patch-size 128``).
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


DEFAULT_SCALE_GROUPS_MM_PX: tuple[float, ...] = (0.75, 2.0, 5.0)
"""Patch pixel sizes (mm) of the scale groups; see the module docstring for why these."""
MAX_SCALE_GROUPS = 8


@dataclass(frozen=True)
class PatchSpec:
    """How object patches are cut from radiographs.

    Attributes:
        size_px: side of the square patch the model works on (pixels).
        context: the window must hold this multiple of the object's longest side (physical scale), or
            the crop side is this multiple of it (fit to patch).
        mask_margin_px: dilation of the object mask, in patch pixels, giving the inpainted region.
        scale_groups_mm_px: patch pixel sizes in mm of the scale groups, strictly increasing;
            ``None``: the legacy "fit to patch" geometry of checkpoints written before scale groups.
    """

    size_px: int = 64
    context: float = 1.6
    mask_margin_px: int = 3
    scale_groups_mm_px: tuple[float, ...] | None = DEFAULT_SCALE_GROUPS_MM_PX

    def __post_init__(self) -> None:
        if self.size_px < 16 or self.size_px % 8:
            raise UserInputError("patch size must be a multiple of 8 and at least 16", field="size", value=self.size_px)
        if self.context < 1.0:
            raise UserInputError("context must be >= 1 (the crop must hold the object)", field="context",
                                 value=self.context)
        if self.mask_margin_px < 0:
            raise UserInputError("mask margin must be >= 0", field="mask_margin_px", value=self.mask_margin_px)
        groups = self.scale_groups_mm_px
        if groups is None:
            return
        try:
            groups = tuple(float(g) for g in groups)
        except (TypeError, ValueError):
            raise UserInputError("scale groups must be numbers (mm per patch pixel)", field="scale_groups_mm_px",
                                 value=self.scale_groups_mm_px) from None
        if not 1 <= len(groups) <= MAX_SCALE_GROUPS or not all(math.isfinite(g) and g > 0 for g in groups) \
                or any(b <= a for a, b in zip(groups, groups[1:])):
            raise UserInputError(f"scale groups must be 1 to {MAX_SCALE_GROUPS} positive mm-per-pixel values in "
                                 "increasing order", field="scale_groups_mm_px", value=self.scale_groups_mm_px)
        object.__setattr__(self, "scale_groups_mm_px", groups)  # a JSON list reads back as the same spec

    @property
    def physical(self) -> bool:
        """Whether patches are cut at a known mm per pixel (scale groups) rather than fitted to the patch."""
        return self.scale_groups_mm_px is not None

    @property
    def num_scale_groups(self) -> int:
        """Scale groups the model is conditioned on (1 in the fit-to-patch geometry)."""
        return len(self.scale_groups_mm_px) if self.scale_groups_mm_px is not None else 1

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PatchSpec:
        """Inverse of ``asdict``; a record without ``scale_groups_mm_px`` (written before scale groups)
        reads as the fit-to-patch geometry it was trained with."""
        known = {"size_px", "context", "mask_margin_px", "scale_groups_mm_px"}
        kwargs = {"scale_groups_mm_px": None, **{k: v for k, v in data.items() if k in known}}
        return cls(**kwargs)


@dataclass(frozen=True)
class Window:
    """A square crop ``[y0, y0 + side) x [x0, x0 + side)`` in full-image pixels (may exceed small images).

    ``group`` is the index of the scale group the crop was cut for (``None`` in the fit-to-patch
    geometry).
    """

    y0: int
    x0: int
    side: int
    group: int | None = None


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
        scale_group: index of the patch's scale group (``None``: fit to patch).
        mm_per_px: the patch's pixel size in mm (window side x film spacing / patch size).
    """

    image: np.ndarray
    region: np.ndarray
    object_mask: np.ndarray
    category_id: int
    image_id: int
    annotation_id: int
    scale_group: int | None = None
    mm_per_px: float | None = None


def mask_bbox_xywh(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight integer bbox ``(x, y, w, h)`` of a non-empty boolean ``(H, W)`` mask."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        raise ValueError("mask is empty")
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def scale_group(longest_side_mm: float, spec: PatchSpec) -> int:
    """The scale group of an object whose longest bbox side is ``longest_side_mm``.

    The finest group ``g`` with ``size_px * g >= context * longest_side_mm``; when none holds the object
    with its context, the coarsest group if ``size_px * g >= longest_side_mm`` (the object fits, with
    less context).

    Raises:
        ValueError: ``spec`` has no scale groups (fit-to-patch geometry).
        UserInputError: the object is larger than the coarsest group's window.
    """
    groups = spec.scale_groups_mm_px
    if groups is None:
        raise ValueError("a fit-to-patch PatchSpec has no scale groups")
    for index, group_mm in enumerate(groups):
        if spec.size_px * group_mm >= spec.context * longest_side_mm:
            return index
    if spec.size_px * groups[-1] >= longest_side_mm:
        return len(groups) - 1
    raise UserInputError(f"an object of {longest_side_mm:.1f} mm is larger than the coarsest scale group's window "
                         f"({spec.size_px} px x {groups[-1]:g} mm = {spec.size_px * groups[-1]:.0f} mm); add a "
                         "coarser group", field="scale_groups_mm_px", value=groups)


def crop_window(bbox_xywh: tuple[float, float, float, float], image_hw: tuple[int, int], spec: PatchSpec,
                spacing_mm: float | None = None) -> Window:
    """The square crop around an object (see the module docstring for the rule).

    Args:
        bbox_xywh: the object's box in film pixels.
        image_hw: the film's size.
        spec: the patch geometry.
        spacing_mm: the film's pixel spacing; needed with scale groups, unused without.

    Returns:
        The window (with its scale group). It is shifted to lie inside the image when the image is
        large enough; for images smaller than the window it is centred and :func:`crop_square` pads
        by reflection.

    Raises:
        ValueError: scale groups without a positive ``spacing_mm``.
        UserInputError: an object larger than the coarsest group's window (:func:`scale_group`).
    """
    x, y, w, h = bbox_xywh
    groups = spec.scale_groups_mm_px
    group: int | None = None
    if groups is None:
        side = max(spec.size_px, int(math.ceil(spec.context * max(w, h))))
    else:
        if spacing_mm is None or not spacing_mm > 0:
            raise ValueError(f"patches at a physical scale need the film's pixel spacing; got {spacing_mm!r}")
        group = scale_group(max(w, h) * spacing_mm, spec)
        side = max(1, int(round(spec.size_px * groups[group] / spacing_mm)))
    height, width = image_hw
    cy, cx = y + h / 2.0, x + w / 2.0
    y0 = int(round(cy - side / 2.0))
    x0 = int(round(cx - side / 2.0))
    y0 = min(max(y0, 0), height - side) if height >= side else (height - side) // 2
    x0 = min(max(x0, 0), width - side) if width >= side else (width - side) // 2
    return Window(y0=y0, x0=x0, side=side, group=group)


def patch_mm_per_px(window: Window, spec: PatchSpec, spacing_mm: float) -> float:
    """The pixel size (mm) of the patch cut with ``window`` from a film of ``spacing_mm``."""
    return window.side * float(spacing_mm) / spec.size_px


def crop_square(array: np.ndarray, window: Window, *, pad: str = "reflect") -> np.ndarray:
    """Cut ``window`` out of a ``(H, W)`` array, padding where it leaves the image.

    ``pad="reflect"`` (images: plausible texture) or ``"zero"`` (masks: a reflected copy of an object
    is not the object).
    """
    height, width = array.shape
    top, left = max(0, -window.y0), max(0, -window.x0)
    bottom = max(0, window.y0 + window.side - height)
    right = max(0, window.x0 + window.side - width)
    if top or left or bottom or right:
        if pad == "zero":
            array = np.pad(array, ((top, bottom), (left, right)), mode="constant")
        else:
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
    """The object mask dilated by a disk of ``radius_px`` (the pixels the model may change).

    Computed as "Euclidean distance to the object <= radius", the same set as a binary dilation by
    :func:`disk` in time independent of the radius (windows of coarse scale groups are hundreds of
    film pixels wide, with margins of tens).
    """
    mask = np.asarray(object_mask, dtype=bool)
    if radius_px <= 0 or not mask.any():
        return mask.copy()
    return ndimage.distance_transform_edt(~mask) <= radius_px


def object_coverage_mask(coverage: np.ndarray) -> np.ndarray:
    """The object pixels of a resampled object mask: covered at least half as much as the best-covered
    pixel within one pixel, and above 1e-3.

    For an object wider than a few pixels this is ``coverage > 0.5``; a thin one (a needle or a
    guidewire narrower than a patch pixel, whose coverage never reaches 0.5) keeps its pixels along
    its length, at its full-width-at-half-maximum, instead of vanishing.
    """
    ridge = ndimage.maximum_filter(coverage, size=3, mode="constant")
    return (coverage > 0.5 * ridge) & (coverage > 1e-3) | (coverage > 0.5)


def patch_masks(object_mask_full: np.ndarray, window: Window, spec: PatchSpec) -> tuple[np.ndarray, np.ndarray]:
    """Object mask and inpainted region of ``window`` at patch resolution.

    Both are resized (antialiased, so a value is about the area covered): the object is kept by
    :func:`object_coverage_mask`, the region wherever any coverage remains, so the patch region covers
    the full-resolution region entirely (the model never has to leave a pixel it cannot change).
    Outside the image both are empty (zero padding).

    Returns:
        ``(object_mask, region)``, each ``(S, S)`` bool.
    """
    crop_obj = crop_square(object_mask_full.astype(np.float32), window, pad="zero")
    radius = region_radius_full_px(spec, window.side)
    crop_region = inpaint_region(crop_obj > 0.5, radius).astype(np.float32)
    obj = object_coverage_mask(resize_square(crop_obj, spec.size_px))
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
    (:func:`rfo_bench.io.coco.coco_pixel_spacing_mm`), else the file's (a DICOM header's, or
    :data:`rfo_bench.io.images.DEFAULT_PIXEL_SPACING_MM` for a file that states none)."""
    recorded = coco_pixel_spacing_mm(entry)
    return recorded if recorded is not None else float(sum(loaded_spacing) / 2.0)


def zoom_mask(mask: np.ndarray, factor: float) -> np.ndarray:
    """A boolean mask resampled by ``factor`` (linear interpolation, kept where above one half)."""
    if abs(factor - 1.0) <= 1e-3:
        return mask.astype(bool)
    return ndimage.zoom(mask.astype(np.float32), factor, order=1) > 0.5


@dataclass(frozen=True)
class PatchSet:
    """Patches of one COCO dataset plus the object masks (tight crops) per class for sampling.

    ``object_masks`` are all at ``spacing_mm`` (the median spacing of the images): a mask cut from a
    film of another spacing is resampled to it, so that ``mask pixels x spacing_mm`` is the object's size.
    """

    patches: list[ObjectPatch]
    object_masks: dict[int, list[np.ndarray]]
    spacing_mm: float


def load_coco_patches(data_dir: str | Path, spec: PatchSpec, *, max_masks_per_class: int = 256) -> PatchSet:
    """Cut one patch per annotation of a COCO dataset (:func:`crop_window` at each image's spacing).

    The spacing of an image is its COCO entry's ``pixel_spacing_mm``, else its file's
    (:func:`image_spacing_mm`); images for which neither states one are counted in one warning, since
    the physical scale of their objects then rests on the default spacing. With scale groups, an
    object larger than the coarsest group's window is left out, with one warning for all of them.

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
    bank: dict[int, list[tuple[np.ndarray, float]]] = {}
    spacings: list[float] = []
    unstated: list[tuple[str, float]] = []
    too_large: list[float] = []
    entries = [img for img in coco["images"] if int(img["id"]) in by_image]
    for entry in tqdm(entries, desc="patches", unit="image", disable=len(entries) < 50):
        loaded = read_image(resolve_dataset_image(root, str(entry["file_name"])))
        pixels = loaded.pixels
        height, width = pixels.shape
        spacing = image_spacing_mm(entry, loaded.pixel_spacing_mm)
        spacings.append(spacing)
        if coco_pixel_spacing_mm(entry) is None and getattr(loaded, "spacing_is_default", False):
            unstated.append((str(entry["file_name"]), spacing))
        for ann in by_image[int(entry["id"])]:
            full_mask = annotation_mask(ann, height, width)
            if not full_mask.any():
                raise UserInputError(f"the object lies outside its {width}x{height} image", file=root / "annotations.json",
                                     field=f"annotations[id={ann.get('id')}].bbox", value=ann.get("bbox"))
            x, y, w, h = mask_bbox_xywh(full_mask)
            try:
                window = crop_window((x, y, w, h), (height, width), spec, spacing)
            except UserInputError:
                too_large.append(max(w, h) * spacing)
                continue
            image = np.clip(resize_square(crop_square(pixels, window), spec.size_px), 0.0, 1.0)
            obj, region = patch_masks(full_mask, window, spec)
            cid = int(ann["category_id"])
            patches.append(ObjectPatch(image=image, region=region, object_mask=obj, category_id=cid,
                                       image_id=int(entry["id"]), annotation_id=int(ann.get("id", len(patches))),
                                       scale_group=window.group, mm_per_px=patch_mm_per_px(window, spec, spacing)))
            kept = bank.setdefault(cid, [])
            if len(kept) < max_masks_per_class:
                kept.append((full_mask[y:y + h, x:x + w].copy(), spacing))
    if unstated:
        logger.warning("%d of %d images of %s state no pixel spacing (no pixel_spacing_mm in annotations.json, none "
                       "in the file, e.g. %s): %.3f mm assumed, so their objects' mm sizes rest on that guess",
                       len(unstated), len(entries), root, *unstated[0])
    if too_large:
        logger.warning("%d object(s) larger than the coarsest scale group's window (%.0f mm; the largest %.0f mm) "
                       "were left out", len(too_large), spec.size_px * spec.scale_groups_mm_px[-1], max(too_large))
    if not patches:
        raise UserInputError("the dataset has no annotations to learn from", file=root / "annotations.json",
                             field="annotations")
    median = float(np.median(spacings))
    object_masks = {cid: [zoom_mask(m, s / median) for m, s in masks] for cid, masks in bank.items()}
    logger.info("%d object patches from %d images in %s", len(patches), len(entries), root)
    return PatchSet(patches=patches, object_masks=object_masks, spacing_mm=median)

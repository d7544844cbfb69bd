"""Inpainting objects into full radiographs: crop a window around each requested mask, denoise it
(:mod:`synth.diffusion.denoise`), optionally score it (QC), and paste it back with a feathered weight.

The window is the training geometry (:func:`synth.diffusion.patches.crop_window`) at the film's pixel
spacing: with scale groups a request is cut, drawn and pasted back at its group's mm per pixel, so
the object drawn has the requested mask's size in mm. A checkpoint written before scale groups is
used in its fit-to-patch geometry, with one warning that its drawn scale is not physical. It is not
refused: its labels were always at their mm size (the mask bank is rescaled by the spacing ratio),
its geometry is fully recorded, so it samples exactly as it did when it was trained, and the runs and
benchmark figures made with it stay reproducible; only the texture scale of what it draws is not
physical, which the warning says.

The weight is 1 on the object and inside half the margin, falls linearly to 0 at the edge of the
inpainted region, and is 0 outside it: every pixel outside the region keeps its exact background value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy import ndimage

from rfo_bench.categories import CATEGORY_BY_ID
from synth.diffusion.denoise import SamplerConfig, inpaint_patches
from synth.diffusion.model import (
    CheckpointInfo,
    conditioning_labels,
    load_train_scheduler,
    load_unet,
    read_checkpoint_info,
)
from synth.diffusion.patches import (
    PatchSpec,
    Window,
    crop_square,
    crop_window,
    mask_bbox_xywh,
    patch_masks,
    region_radius_full_px,
    resize_square,
)
from toolkit_core.errors import UserInputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def feather_weight(object_mask: np.ndarray, radius_px: int) -> np.ndarray:
    """Blend weight for pasting a generated crop.

    ``1`` on the object and within ``radius/2`` of it, linear to ``0`` at distance ``radius``,
    ``0`` beyond (that is, outside the inpainted region ``dilate(object, radius)``).

    Args:
        object_mask: ``(H, W)`` bool.
        radius_px: the inpainting margin in pixels (>= 1).

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``.
    """
    distance = ndimage.distance_transform_edt(~object_mask.astype(bool))
    half = radius_px / 2.0
    weight = np.clip((radius_px - distance) / max(radius_px - half, 1e-6), 0.0, 1.0)
    return weight.astype(np.float32)


def paste_patch(image: np.ndarray, patch: np.ndarray, window: Window, object_mask: np.ndarray,
                radius_px: int) -> np.ndarray:
    """Resize a generated patch to its window and blend it into ``image`` with :func:`feather_weight`.

    Args:
        image: ``(H, W)`` float in ``[0, 1]``.
        patch: ``(S, S)`` float in ``[0, 1]``.
        window: the crop the patch came from.
        object_mask: ``(H, W)`` bool, the object asked for.
        radius_px: inpainting margin in full-image pixels.

    Returns:
        A new ``(H, W)`` float32 image; identical to ``image`` outside ``dilate(object_mask, radius_px)``.
    """
    height, width = image.shape
    big = resize_square(patch, window.side)
    y0, x0 = max(window.y0, 0), max(window.x0, 0)
    y1, x1 = min(window.y0 + window.side, height), min(window.x0 + window.side, width)
    sub = big[y0 - window.y0:y1 - window.y0, x0 - window.x0:x1 - window.x0]
    weight = feather_weight(crop_square(object_mask.astype(np.float32), window, pad="zero") > 0.5, radius_px)
    weight = weight[y0 - window.y0:y1 - window.y0, x0 - window.x0:x1 - window.x0]
    out = image.astype(np.float32).copy()
    region = out[y0:y1, x0:x1]
    out[y0:y1, x0:x1] = np.where(weight > 0, region + weight * (np.clip(sub, 0.0, 1.0) - region), region)
    return out


@dataclass(frozen=True)
class ObjectRequest:
    """One object to synthesise: a category and its mask in full-image pixels."""

    category_id: int
    object_mask: np.ndarray


class SampleScorer(Protocol):
    """Anything that says how sure it is that a patch shows an object of the requested class.

    ``score(patches, class_ids)`` takes ``(N, S, S)`` float patches in ``[0, 1]`` and ``(N,)`` category
    ids and returns ``(N,)`` probabilities in ``[0, 1]`` (see :mod:`synth.diffusion.qc`).
    """

    def score(self, patches: np.ndarray, class_ids: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class InpaintOutcome:
    """Result of :func:`inpaint_objects` for one image."""

    image: np.ndarray
    accepted: list[tuple[ObjectRequest, float]]
    rejected: list[ObjectRequest]
    attempts: int


def check_class(category_id: int, allowed: tuple[int, ...], where: str) -> None:
    """Refuse a class the checkpoint was not trained on (a user error naming ``where`` and the classes known)."""
    if category_id not in allowed:
        names = [CATEGORY_BY_ID[c].name for c in allowed]
        name = CATEGORY_BY_ID[category_id].name if category_id in CATEGORY_BY_ID else str(category_id)
        raise UserInputError(f"the checkpoint was not trained on this class; it knows {names}", file=where,
                             field="category", value=name)


def check_request(request: ObjectRequest, image_hw: tuple[int, int], allowed: tuple[int, ...], where: str) -> None:
    """Refuse a request of an unknown class, or whose mask is empty or not the background's size."""
    check_class(request.category_id, allowed, where)
    if request.object_mask.shape != image_hw:
        raise UserInputError("mask size differs from the background image", file=where, field="mask",
                             value=request.object_mask.shape)
    if not request.object_mask.any():
        raise UserInputError("mask is empty (or lies outside the image)", file=where, field="mask")


class Inpainter:
    """A loaded checkpoint ready to inpaint objects into full radiographs."""

    def __init__(self, ckpt_dir: str | Path, config: SamplerConfig, *, device: str = "cpu") -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.info: CheckpointInfo = read_checkpoint_info(self.ckpt_dir)
        if not self.info.patch.physical:
            # still usable: the labels keep their mm size (mask banks are rescaled by the spacing ratio)
            logger.warning("%s predates scale groups: objects are drawn fitted to the patch, so their drawn scale "
                           "is not physical (labels keep their mm size); retrain for mm-true objects", self.ckpt_dir)
        self.unet = load_unet(self.ckpt_dir, device)
        self.train_scheduler = load_train_scheduler(self.ckpt_dir)
        self.config = config
        self.device = device
        self._spacing_assumed = False

    @property
    def spec(self) -> PatchSpec:
        return self.info.patch

    @property
    def residual_scale(self) -> float | None:
        """The object-layer scale of ``residual``-target checkpoints, ``None`` for ``image`` ones."""
        return self.info.residual_scale if self.info.model.target == "residual" else None

    def inpaint_objects(
        self,
        images: list[np.ndarray],
        requests: list[list[ObjectRequest]],
        generator: torch.Generator,
        *,
        scorer: SampleScorer | None = None,
        threshold: float = 0.5,
        max_tries: int = 1,
        spacings_mm: list[float] | None = None,
    ) -> list[InpaintOutcome]:
        """Inpaint every request into its image; objects of one round are denoised as one batch.

        Args:
            images: ``(H, W)`` backgrounds in ``[0, 1]`` (not modified).
            requests: per image, the objects in the order they are placed.
            spacings_mm: per image, its pixel spacing (mm), which sets the window of each request at
                its scale group's mm per pixel; default: the checkpoint's training spacing for every
                image (with one warning), for checkpoints with scale groups.
            generator: CPU torch generator.
            scorer: optional QC model; samples scoring below ``threshold`` are redrawn up to
                ``max_tries`` times in total and left out when all tries fail.
            threshold: minimum QC score.
            max_tries: attempts per object.

        Returns:
            One :class:`InpaintOutcome` per image.
        """
        import torch

        spec = self.spec
        if spacings_mm is None:
            if spec.physical and not self._spacing_assumed:
                self._spacing_assumed = True  # said once per checkpoint loaded
                logger.warning("no pixel spacing given for the backgrounds: %.3f mm (the training films') assumed",
                               self.info.spacing_mm)
            spacings_mm = [self.info.spacing_mm] * len(images)
        if len(spacings_mm) != len(images):
            raise ValueError(f"{len(spacings_mm)} spacings for {len(images)} images")
        current = [img.astype(np.float32).copy() for img in images]
        accepted: list[list[tuple[ObjectRequest, float]]] = [[] for _ in images]
        rejected: list[list[ObjectRequest]] = [[] for _ in images]
        attempts = [0] * len(images)
        rounds = max((len(r) for r in requests), default=0)
        for k in range(rounds):
            pending = [i for i, reqs in enumerate(requests) if k < len(reqs)]
            for _ in range(max_tries):
                if not pending:
                    break
                windows, bgs, regions, objects, classes, groups = [], [], [], [], [], []
                for i in pending:
                    req = requests[i][k]
                    try:
                        window = crop_window(mask_bbox_xywh(req.object_mask), current[i].shape, spec, spacings_mm[i])
                    except UserInputError as err:
                        name = CATEGORY_BY_ID[req.category_id].name
                        raise UserInputError(f"object {k} ({name}) of image {i}: {err.message}", field=err.field,
                                             value=err.value) from None
                    windows.append(window)
                    bgs.append(resize_square(crop_square(current[i], window), spec.size_px))
                    obj, region = patch_masks(req.object_mask, window, spec)
                    regions.append(region)
                    objects.append(obj)
                    classes.append(req.category_id)
                    groups.append(window.group or 0)
                bg_t = torch.from_numpy(np.clip(np.stack(bgs), 0, 1))[:, None].to(self.device) * 2.0 - 1.0
                reg_t = torch.from_numpy(np.stack(regions).astype(np.float32))[:, None].to(self.device)
                obj_t = torch.from_numpy(np.stack(objects).astype(np.float32))[:, None].to(self.device)
                labels = conditioning_labels(np.asarray(classes), np.asarray(groups) if spec.physical else None)
                cls_t = torch.as_tensor(labels, dtype=torch.long, device=self.device)
                out = inpaint_patches(self.unet, self.train_scheduler, bg_t, reg_t, cls_t, self.config, generator,
                                      object_mask=obj_t, residual_scale=self.residual_scale)
                patches = ((out[:, 0].cpu().numpy() + 1.0) / 2.0).astype(np.float32)
                scores = (np.ones(len(pending)) if scorer is None
                          else np.asarray(scorer.score(patches, np.asarray(classes)), dtype=np.float64))
                still = []
                for j, i in enumerate(pending):
                    attempts[i] += 1
                    if scores[j] >= threshold:
                        req = requests[i][k]
                        radius = region_radius_full_px(spec, windows[j].side)
                        current[i] = paste_patch(current[i], patches[j], windows[j], req.object_mask, radius)
                        accepted[i].append((req, float(scores[j])))
                    else:
                        still.append(i)
                pending = still
            for i in pending:
                rejected[i].append(requests[i][k])
        return [InpaintOutcome(current[i], accepted[i], rejected[i], attempts[i]) for i in range(len(images))]


"""Sampling: inpaint RFOs of a chosen class into radiographs exactly where the label says.

Per object:

1. The requested object mask (full-image pixels) gives the crop window and the inpainted region
   (mask dilated by the checkpoint's margin, :mod:`synth.diffusion.patches`).
2. The window is resized to the model's patch size and denoised with DDIM (Song et al., 2021,
   arXiv:2010.02502), DPM-Solver++ (Lu et al., 2022, arXiv:2211.01095) or DDPM, with classifier-free
   guidance ``eps = eps_null + w (eps_class - eps_null)``.
3. After every step the known region is replaced by the background forward-noised to the next
   timestep (RePaint, Lugmayr et al., CVPR 2022), and at the last step by the background itself, so
   the patch outside the region equals the background. ``mode="repaint"`` also hides the region and
   background channels from the network (the unconditional prior of the same weights) and can
   resample each step ``resample`` times (RePaint's jumps of length 1).
4. The patch is resized back and blended with a feathered weight that is 1 on the object and inside
   half the margin, falls linearly to 0 at the edge of the inpainted region, and is 0 outside it: every
   pixel outside the region keeps its exact background value.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from scipy import ndimage

from rfo_bench.categories import CATEGORY_BY_ID, category, coco_categories
from rfo_bench.io.images import IMAGE_SUFFIXES, read_image, write_png16
from synth.diffusion.model import (
    NULL_CLASS,
    CheckpointInfo,
    load_mask_bank,
    load_train_scheduler,
    load_unet,
    model_input,
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
    smooth_fill,
)
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

SCHEDULERS = ("ddim", "dpm", "ddpm")
MODES = ("conditional", "repaint")
BASES = ("background", "fill")


@dataclass(frozen=True)
class SamplerConfig:
    """How patches are denoised.

    Attributes:
        scheduler: ``ddim``, ``dpm`` (DPM-Solver++ multistep) or ``ddpm``.
        steps: denoising steps.
        guidance_scale: classifier-free guidance weight ``w`` (1 = plain conditional, 0 = unconditional).
        mode: ``conditional`` (region + background channels given) or ``repaint`` (hidden; known region
            enforced only by replacement).
        resample: RePaint resampling per step (1 = none); ``ddim``/``ddpm`` only.
        eta: DDIM stochasticity (0 = deterministic given the initial noise).
        base: for ``residual``-target models, what the generated object layer is added to inside the
            region: ``background`` (the anatomy actually under the object: an X-ray object overlays it)
            or ``fill`` (the smooth fill the layer was measured against in training; it blurs the
            anatomy under wide regions).
    """

    scheduler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0
    mode: str = "conditional"
    resample: int = 1
    eta: float = 0.0
    base: str = "background"

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise UserInputError(f"unknown base; expected one of {BASES}", field="base", value=self.base)
        if self.scheduler not in SCHEDULERS:
            raise UserInputError(f"unknown scheduler; expected one of {SCHEDULERS}", field="scheduler",
                                 value=self.scheduler)
        if self.mode not in MODES:
            raise UserInputError(f"unknown mode; expected one of {MODES}", field="mode", value=self.mode)
        if self.steps < 1 or self.resample < 1:
            raise UserInputError("steps and resample must be >= 1", field="steps/resample",
                                 value=(self.steps, self.resample))
        if self.resample > 1 and self.scheduler == "dpm":
            raise UserInputError("resampling needs a single-step scheduler (ddim or ddpm); DPM-Solver is multistep",
                                 field="resample", value=self.resample)


def make_scheduler(train_scheduler, name: str):
    """A sampling scheduler sharing the training noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    cls = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}[name]
    return cls.from_config(train_scheduler.config)


def _guided_output(unet, x, t, region, background, object_mask, class_ids, config: SamplerConfig):
    """The guided model output ``out_null + w (out_class - out_null)`` (whatever the prediction type)."""
    import torch

    n = x.shape[0]
    keep = 0.0 if config.mode == "repaint" else 1.0
    inputs = model_input(x, region * keep, background * keep, None if object_mask is None else object_mask * keep)
    null = torch.full_like(class_ids, NULL_CLASS)
    if config.guidance_scale == 1.0:
        return unet(inputs, t, class_labels=class_ids).sample
    if config.guidance_scale == 0.0:
        return unet(inputs, t, class_labels=null).sample
    both = unet(torch.cat([inputs, inputs]), t, class_labels=torch.cat([class_ids, null])).sample
    cond, uncond = both[:n], both[n:]
    return uncond + config.guidance_scale * (cond - uncond)


@dataclass
class _Noiser:
    """Forward noising with the training ``abar`` table (shared by every sampler of a checkpoint)."""

    alphas_cumprod: Any

    def to_t(self, x0, t: int, generator):
        import torch

        abar = float(self.alphas_cumprod[int(t)])
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * noise

    def between(self, x_prev, t_prev: int, t: int, generator):
        """Re-noise a sample from ``t_prev`` to the noisier ``t`` (RePaint's resampling jump)."""
        import torch

        ratio = float(self.alphas_cumprod[int(t)] / self.alphas_cumprod[int(t_prev)])
        noise = torch.randn(x_prev.shape, generator=generator).to(x_prev.device)
        return math.sqrt(ratio) * x_prev + math.sqrt(1.0 - ratio) * noise


def inpaint_patches(
    unet,
    train_scheduler,
    background: torch.Tensor,
    region: torch.Tensor,
    class_ids: torch.Tensor,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    object_mask: torch.Tensor | None = None,
    residual_scale: float | None = None,
) -> torch.Tensor:
    """Denoise patches whose ``region`` is to be filled with an object of class ``class_ids``.

    Args:
        unet: the inpainting UNet (eval mode).
        train_scheduler: the checkpoint's DDPM schedule.
        background: ``(N, 1, S, S)`` patches in ``[-1, 1]``.
        region: ``(N, 1, S, S)`` 1 where the object goes (0 elsewhere).
        class_ids: ``(N,)`` long category ids (or :data:`NULL_CLASS`).
        config: sampler settings.
        generator: CPU torch generator (all noise comes from it).
        object_mask: ``(N, 1, S, S)`` 1 on the object itself, for UNets with an object channel
            (default: the region).
        residual_scale: for ``residual``-target models, the checkpoint's scale: the model draws the
            object layer, which is added to :func:`~synth.diffusion.patches.smooth_fill` of the
            background; ``None`` for ``image``-target models (the model draws the patch).

    Returns:
        ``(N, 1, S, S)`` in ``[-1, 1]``; equal to ``background`` wherever ``region == 0``.
    """
    import torch

    if background.shape != region.shape or background.ndim != 4 or background.shape[1] != 1:
        raise ValueError(f"background and region must both be (N, 1, S, S); got {tuple(background.shape)} "
                         f"and {tuple(region.shape)}")
    if int(unet.config.in_channels) == 4 and object_mask is None:
        object_mask = region
    elif int(unet.config.in_channels) == 3:
        object_mask = None
    residual = residual_scale is not None
    known_x0 = torch.zeros_like(background) if residual else background
    scheduler = make_scheduler(train_scheduler, config.scheduler)
    scheduler.set_timesteps(config.steps)
    noiser = _Noiser(train_scheduler.alphas_cumprod)
    timesteps = [int(t) for t in scheduler.timesteps]
    step_kwargs: dict[str, Any] = {"eta": config.eta} if config.scheduler == "ddim" else {}
    if config.scheduler in ("ddim", "ddpm"):
        step_kwargs["generator"] = generator
    x = torch.randn(background.shape, generator=generator).to(background.device) * float(scheduler.init_noise_sigma)
    x = region * x + (1.0 - region) * noiser.to_t(known_x0, timesteps[0], generator)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else None
            for u in range(config.resample):
                scaled = scheduler.scale_model_input(x, t)
                out = _guided_output(unet, scaled, torch.tensor(t, device=x.device), region, background, object_mask,
                                     class_ids, config)
                x_next = scheduler.step(out, t, x, **step_kwargs).prev_sample
                known = known_x0 if t_next is None else noiser.to_t(known_x0, t_next, generator)
                x_next = region * x_next + (1.0 - region) * known
                if u + 1 < config.resample and t_next is not None:
                    x = noiser.between(x_next, t_next, t, generator)
                else:
                    x = x_next
    if residual:
        base = background
        if config.base == "fill":
            base = torch.from_numpy(np.stack([smooth_fill(b[0], r[0] > 0.5) for b, r in
                                              zip(background.cpu().numpy(), region.cpu().numpy())]))[:, None]
        # the layer was measured in [0, 1] grey units; the patches here are in [-1, 1]
        x = base.to(x.device) + 2.0 * float(residual_scale) * x
    x = x.clamp(-1.0, 1.0)
    return region * x + (1.0 - region) * background


# ------------------------------------------------------------------------------- full radiographs


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
    weight = feather_weight(crop_square(object_mask.astype(np.float32), window) > 0.5, radius_px)
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


def _check_class(category_id: int, allowed: tuple[int, ...], where: str) -> None:
    if category_id not in allowed:
        names = [CATEGORY_BY_ID[c].name for c in allowed]
        name = CATEGORY_BY_ID[category_id].name if category_id in CATEGORY_BY_ID else str(category_id)
        raise UserInputError(f"the checkpoint was not trained on this class; it knows {names}", file=where,
                             field="category", value=name)


def _check_request(request: ObjectRequest, image_hw: tuple[int, int], allowed: tuple[int, ...], where: str) -> None:
    _check_class(request.category_id, allowed, where)
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
        self.unet = load_unet(self.ckpt_dir, device)
        self.train_scheduler = load_train_scheduler(self.ckpt_dir)
        self.config = config
        self.device = device

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
    ) -> list[InpaintOutcome]:
        """Inpaint every request into its image; objects of one round are denoised as one batch.

        Args:
            images: ``(H, W)`` backgrounds in ``[0, 1]`` (not modified).
            requests: per image, the objects in the order they are placed.
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
                windows, bgs, regions, objects, classes = [], [], [], [], []
                for i in pending:
                    req = requests[i][k]
                    window = crop_window(mask_bbox_xywh(req.object_mask), current[i].shape, spec)
                    windows.append(window)
                    bgs.append(resize_square(crop_square(current[i], window), spec.size_px))
                    obj, region = patch_masks(req.object_mask, window, spec)
                    regions.append(region)
                    objects.append(obj)
                    classes.append(req.category_id)
                bg_t = torch.from_numpy(np.clip(np.stack(bgs), 0, 1))[:, None].to(self.device) * 2.0 - 1.0
                reg_t = torch.from_numpy(np.stack(regions).astype(np.float32))[:, None].to(self.device)
                obj_t = torch.from_numpy(np.stack(objects).astype(np.float32))[:, None].to(self.device)
                cls_t = torch.tensor(classes, dtype=torch.long, device=self.device)
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


# -------------------------------------------------------------------------------- placement & I/O


def list_backgrounds(path: str | Path) -> list[Path]:
    """Background radiographs: one file, every image under a directory, or ``embedded``."""
    if str(path) == "embedded":
        from rfo_bench.io.embedded import embedded_radiograph_path

        return [embedded_radiograph_path()]
    root = Path(path)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise UserInputError("background path does not exist", file=root, field="--backgrounds")
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise UserInputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under the directory", file=root,
                             field="--backgrounds")
    return files


SPACING_FILES = ("annotations.json", "backgrounds.json")
"""COCO files looked up next to background images (and one folder up) for their ``pixel_spacing_mm``."""


def recorded_spacings(files: list[Path]) -> dict[Path, float]:
    """Pixel spacing of background images as recorded by a COCO file next to them.

    A PNG carries no pixel spacing, so :func:`rfo_bench.io.images.read_image` falls back to a default;
    the generators' COCO files (``annotations.json``; ``backgrounds.json`` of the leaderboard's
    background pools) record the real one. The files :data:`SPACING_FILES` in each image's folder and
    its parent are read; an image they do not list keeps its file's spacing.

    Returns:
        ``{resolved image path: isotropic spacing in mm}`` for the images a COCO file lists.
    """
    from synth.diffusion.patches import image_spacing_mm

    known: dict[Path, float] = {}
    for folder in sorted({f.parent.resolve() for f in files}):
        for candidate in [folder / name for name in SPACING_FILES] + [folder.parent / name for name in SPACING_FILES]:
            if not candidate.is_file():
                continue
            try:
                document = json.loads(candidate.read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError):
                continue
            entries = document.get("images", []) if isinstance(document, dict) else []
            for entry in entries:
                if not isinstance(entry, dict) or "file_name" not in entry or "pixel_spacing_mm" not in entry:
                    continue
                spacing = image_spacing_mm(entry, (0.0, 0.0))
                if spacing > 0:
                    known.setdefault((candidate.parent / str(entry["file_name"])).resolve(), spacing)
    return known


def background_spacing_mm(path: Path, loaded: Any, known: dict[Path, float]) -> float:
    """The spacing of one background: recorded by a COCO file (:func:`recorded_spacings`), else the file's."""
    return known.get(path.resolve(), float(np.mean(loaded.pixel_spacing_mm)))


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
    if abs(scale - 1.0) > 1e-3:
        mask = ndimage.zoom(mask.astype(np.float32), scale, order=1) > 0.5
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


def rle_segmentation(mask: np.ndarray) -> dict[str, Any]:
    """COCO compressed RLE of a ``(H, W)`` bool mask (counts as an ASCII string)."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def _requests_from_file(path: Path, backgrounds: list[Path], info: CheckpointInfo, bank, rng):
    """Parse ``--requests``: a JSON list of ``{"background", "category", "bbox" | "mask"}``."""
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
            _check_class(cid, info.category_ids, where)
            if "mask" in item:
                mask_path = Path(item["mask"]) if Path(item["mask"]).exists() else path.parent / item["mask"]
                mask = read_image(mask_path).pixels > 0.5
            else:
                mask = _bbox_request_mask(item["bbox"], hw, cid, bank, rng, where)
            request = ObjectRequest(cid, mask)
            _check_request(request, hw, info.category_ids, where)
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


def sample_dataset(
    ckpt_dir: str | Path,
    backgrounds: str | Path,
    out_dir: str | Path,
    *,
    n: int,
    seed: int,
    config: SamplerConfig,
    classes: list[str] | None = None,
    objects_per_image: int = 1,
    requests_file: str | Path | None = None,
    scorer: SampleScorer | None = None,
    threshold: float = 0.5,
    max_tries: int = 1,
    batch_images: int = 8,
    device: str = "cpu",
) -> dict[str, Any]:
    """Write ``n`` synthetic radiographs with inpainted RFOs as a COCO dataset.

    Layout (the same as ``rfo-synth physics``): ``OUT/images/000000.png`` (16-bit), ``OUT/annotations.json``
    (bbox xywh, RLE segmentation = the requested mask, category ids from :mod:`rfo_bench.categories`)
    and ``OUT/manifest.json`` (settings, seed, QC statistics).

    Args:
        ckpt_dir: checkpoint from :func:`synth.diffusion.train.train`.
        backgrounds: image file, directory of images, or ``embedded``.
        out_dir: output directory.
        n: number of images (ignored with ``requests_file``: one image per background named there).
        seed: seed of placement and noise.
        config: sampler settings.
        classes: class names to draw from (default: every class of the checkpoint).
        objects_per_image: objects per image with random placement.
        requests_file: JSON list of explicit requests (see :func:`_requests_from_file`).
        scorer, threshold, max_tries: optional QC filter (:mod:`synth.diffusion.qc`).
        batch_images: images denoised together.
        device: torch device.

    Returns:
        The manifest.
    """
    import torch
    from tqdm import tqdm

    from toolkit_core.utils import seed_everything

    rng = seed_everything(seed)
    inpainter = Inpainter(ckpt_dir, config, device=device)
    info = inpainter.info
    bank = load_mask_bank(ckpt_dir)
    if classes:
        wanted = tuple(category(name).id for name in classes)
        for cid in wanted:
            _check_class(cid, info.category_ids, str(ckpt_dir))
    else:
        wanted = info.category_ids
    files = list_backgrounds(backgrounds)
    known_spacing = recorded_spacings(files)
    if requests_file is not None:
        plans = _requests_from_file(Path(requests_file), files, info, bank, rng)
    else:
        if n < 1:
            raise UserInputError("must be >= 1", field="--n", value=n)

        def random_plans():
            """One image at a time, so memory stays bounded by a batch whatever ``n`` is."""
            for i in range(n):
                path = files[i % len(files)]
                loaded = read_image(path)
                hw = loaded.pixels.shape
                scale = info.spacing_mm / background_spacing_mm(path, loaded, known_spacing)
                occupied = np.zeros(hw, dtype=bool)
                reqs = []
                for _ in range(objects_per_image):
                    cid = int(wanted[int(rng.integers(len(wanted)))])
                    masks = bank.get(cid) or []
                    if not masks:
                        raise UserInputError("no mask of this class in the checkpoint's mask bank", file=ckpt_dir,
                                             field="category", value=CATEGORY_BY_ID[cid].name)
                    mask = place_bank_mask(masks[int(rng.integers(len(masks)))], hw, scale, rng, occupied)
                    if mask is None:
                        logger.warning("%s: an object of class %s did not fit; skipped", path,
                                       CATEGORY_BY_ID[cid].name)
                        continue
                    occupied |= mask
                    reqs.append(ObjectRequest(cid, mask))
                yield path, loaded, reqs

        plans = random_plans()

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    coco_images, coco_anns = [], []
    total_attempts = total_accepted = total_rejected = 0
    total = len(plans) if isinstance(plans, list) else n
    plan_iter = iter(plans)
    for start in tqdm(range(0, total, batch_images), desc="sample", unit="batch", disable=total <= batch_images):
        chunk = list(itertools.islice(plan_iter, batch_images))
        outcomes = inpainter.inpaint_objects([p[1].pixels for p in chunk], [p[2] for p in chunk], generator,
                                             scorer=scorer, threshold=threshold, max_tries=max_tries)
        for offset, ((path, loaded, _), outcome) in enumerate(zip(chunk, outcomes)):
            image_id = start + offset + 1
            name = f"{image_id - 1:06d}.png"
            write_png16(out / "images" / name, outcome.image)
            height, width = outcome.image.shape
            coco_images.append({"id": image_id, "file_name": f"images/{name}", "width": width, "height": height,
                                "background": path.name,
                                "pixel_spacing_mm": [background_spacing_mm(path, loaded, known_spacing)] * 2})
            for req, score in outcome.accepted:
                x, y, w, h = mask_bbox_xywh(req.object_mask)
                coco_anns.append({"id": len(coco_anns) + 1, "image_id": image_id, "category_id": req.category_id,
                                  "bbox": [float(x), float(y), float(w), float(h)],
                                  "area": float(req.object_mask.sum()), "iscrowd": 0,
                                  "segmentation": rle_segmentation(req.object_mask),
                                  "qc_score": round(score, 6) if scorer is not None else None})
            total_attempts += outcome.attempts
            total_accepted += len(outcome.accepted)
            total_rejected += len(outcome.rejected)
    coco = {
        "info": {"description": "rfo-synth diffusion samples", "generator": "synth.diffusion"},
        "images": coco_images, "annotations": coco_anns,
        "categories": coco_categories(),
    }
    atomic_write_bytes(out / "annotations.json", json.dumps(coco).encode())
    manifest = {
        "checkpoint": str(Path(ckpt_dir).resolve()), "checkpoint_step": info.step, "seed": seed,
        "sampler": asdict(config), "images": len(coco_images), "objects": len(coco_anns),
        "qc": {"enabled": scorer is not None, "threshold": threshold if scorer is not None else None,
               "attempts": total_attempts, "accepted": total_accepted, "dropped": total_rejected,
               "acceptance_rate": (total_accepted / total_attempts) if total_attempts else None},
    }
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    logger.info("wrote %d images with %d objects to %s", len(coco_images), len(coco_anns), out)
    return manifest

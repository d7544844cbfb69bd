"""Image-conditioned refinement of physics renders (SDEdit, Meng et al., ICLR 2022, arXiv:2108.01073).

Each object of a physics render is re-rendered in the real film's own look by the refiner
(:mod:`synth.diffusion.refiner`, a denoiser of real-film crops only):

1. The **refined region** is every object mask dilated by ``margin_px`` render pixels (the object and
   the edge the renderer pasted it with); the rest of the image is never changed.
2. A window around the region (``context_px`` more on each side, rounded up to a side the UNet takes)
   is forward-noised to ``t0`` (a fraction of the noise schedule) and denoised by DDIM from there
   (``steps`` DDIM steps over the whole schedule, of which the last ``round(t0 x steps)`` are run).
   After every step the pixels outside the region are replaced by the render forward-noised to the
   next timestep, and at the end by the render itself (RePaint's known-region rule, Lugmayr et al.,
   CVPR 2022), so the labels stay exact: boxes and masks are copied, and every pixel outside the
   refined region keeps its value.
3. ``t0`` trades realism for fidelity: the refiner has never seen an object, so a large ``t0`` erases
   it. It is chosen on **validation renders**, never on test films, by :func:`select_t0`: the largest
   ``t0`` of a grid at which (and at every smaller grid value) at least ``coverage`` of the validation
   objects keep ``keep`` of their physics contrast (mean inside the mask minus mean of the 4-px ring just
   outside the refined region, :func:`object_contrast`; objects fainter than ``min_contrast`` grey levels
   are not counted).

``t0 = 0``, and any ``t0`` below one DDIM interval (``1 / steps``), is the identity.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth.diffusion.patches import annotation_mask, inpaint_region, load_coco
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

REFINE_TOOL = "rfo-synth diffusion refine"
DEFAULT_T0_GRID = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)


@dataclass(frozen=True)
class RefineConfig:
    """How renders are refined.

    Attributes:
        t0: noise level refined from, a fraction of the schedule in ``[0, 1]``.
        steps: DDIM steps over the whole schedule (``round(t0 x steps)`` of them are run).
        margin_px: the refined region is each object mask dilated by this many pixels.
        context_px: the denoised window extends this far beyond the region (the UNet's context).
    """

    t0: float = 0.2
    steps: int = 25
    margin_px: int = 3
    context_px: int = 16

    def __post_init__(self) -> None:
        if not (isinstance(self.t0, (int, float)) and 0.0 <= float(self.t0) <= 1.0):
            raise UserInputError("t0 must lie in [0, 1] (a fraction of the noise schedule)", field="t0",
                                 value=self.t0)
        if self.steps < 1 or self.margin_px < 0 or self.context_px < 0:
            raise UserInputError("steps must be >= 1, margin and context >= 0", field="steps/margin/context",
                                 value=(self.steps, self.margin_px, self.context_px))


@dataclass(frozen=True)
class T0Rule:
    """The label-fidelity criterion that picks ``t0`` (see the module docstring).

    Attributes:
        keep: an object keeps its label if its refined contrast is at least this fraction of its physics one.
        coverage: the fraction of counted validation objects that must keep their label.
        min_contrast: objects whose physics contrast is below this (grey levels, 0-1) are not counted.
    """

    keep: float = 0.85
    coverage: float = 0.9
    min_contrast: float = 0.01

    def __post_init__(self) -> None:
        if not (0.0 < self.keep <= 1.0 and 0.0 < self.coverage <= 1.0 and self.min_contrast >= 0.0):
            raise UserInputError("keep and coverage must lie in (0, 1], min_contrast >= 0", field="t0 rule",
                                 value=(self.keep, self.coverage, self.min_contrast))


# ------------------------------------------------------------------------------------------------ pure math


def object_contrast(image: np.ndarray, object_mask: np.ndarray, ring_from_px: int, ring_width_px: int = 4) -> float:
    """Mean of ``image`` on the object minus its mean on the ring from ``ring_from_px`` to
    ``ring_from_px + ring_width_px`` pixels around it (the background beside the object).

    With ``ring_from_px`` the refinement margin, the ring lies just outside the refined region, so the
    contrast measures how bright the object stays against the untouched background, not how sharp its
    edge is.

    Args:
        image: ``(H, W)`` grey levels.
        object_mask: ``(H, W)`` bool.
        ring_from_px: inner distance of the ring (0: from the object's edge).
        ring_width_px: ring width (at least 1 is used).

    Returns:
        The contrast (NaN for an empty mask or an empty ring).
    """
    mask = np.asarray(object_mask, dtype=bool)
    inner = inpaint_region(mask, max(0, int(ring_from_px)))
    ring = inpaint_region(mask, max(0, int(ring_from_px)) + max(1, int(ring_width_px))) & ~inner
    if not mask.any() or not ring.any():
        return math.nan
    return float(image[mask].mean() - image[ring].mean())


def kept_fraction(physics_contrast: Sequence[float], refined_contrast: Sequence[float], rule: T0Rule
                  ) -> tuple[float, int]:
    """Fraction of counted objects whose refined contrast keeps ``rule.keep`` of the physics one.

    The ratio is signed: an object whose contrast changed sign keeps nothing. Objects with
    ``|physics| < rule.min_contrast`` (or a NaN on either side) are not counted.

    Returns:
        ``(fraction, objects counted)``; the fraction is NaN when none is counted.
    """
    p = np.asarray(physics_contrast, dtype=np.float64)
    r = np.asarray(refined_contrast, dtype=np.float64)
    if p.shape != r.shape:
        raise ValueError(f"need one contrast per object on both sides, got {p.shape} and {r.shape}")
    counted = np.isfinite(p) & np.isfinite(r) & (np.abs(p) >= rule.min_contrast)
    if not counted.any():
        return math.nan, 0
    ratio = r[counted] / p[counted]
    return float(np.mean(ratio >= rule.keep)), int(counted.sum())


def select_t0(table: Iterable[Mapping[str, float]], rule: T0Rule) -> float:
    """The largest grid ``t0`` at which, and at every smaller grid value, ``kept_fraction >= coverage``.

    Args:
        table: rows ``{"t0", "kept_fraction"}`` (any order; a NaN fraction fails).
        rule: the criterion.

    Returns:
        The chosen ``t0``; ``0.0`` (no refinement) when the smallest grid value already fails.
    """
    chosen = 0.0
    for row in sorted(table, key=lambda r: float(r["t0"])):
        fraction = float(row["kept_fraction"])
        if not (math.isfinite(fraction) and fraction >= rule.coverage):
            break
        chosen = float(row["t0"])
    return chosen


def sdedit_timesteps(num_train_timesteps: int, t0: float, steps: int) -> list[int]:
    """The DDIM timesteps (descending) run when refining from ``t0``: the DDIM grid's values ``<= t0 x T``;
    none (the identity) when ``t0 x T`` is below the grid's first positive value."""
    ratio = num_train_timesteps // steps
    grid = [i * ratio for i in range(steps)]
    start = float(t0) * num_train_timesteps
    if ratio < 1 or start < ratio:
        return []
    return sorted((t for t in grid if t <= start + 1e-9), reverse=True)


def region_window(region: np.ndarray, context_px: int, divisor: int) -> tuple[int, int, int, int]:
    """``(row0, col0, height, width)`` of the window refined around ``region``: its bounding box grown by
    ``context_px``, each side rounded up to a multiple of ``divisor``, shifted to lie in the image where
    it fits (the part outside is padded by reflection)."""
    rows, cols = np.nonzero(region)
    h, w = region.shape
    out = []
    for lo, hi, size in ((rows.min(), rows.max() + 1, h), (cols.min(), cols.max() + 1, w)):
        lo, hi = max(0, int(lo) - context_px), min(size, int(hi) + context_px)
        side = max(divisor, int(math.ceil((hi - lo) / divisor)) * divisor)
        start = max(0, min(lo - (side - (hi - lo)) // 2, size - side)) if side <= size else 0
        out.append((start, side))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def _crop_padded(image: np.ndarray, r0: int, c0: int, hh: int, ww: int) -> np.ndarray:
    crop = image[r0:r0 + hh, c0:c0 + ww]
    pad = ((0, hh - crop.shape[0]), (0, ww - crop.shape[1]))
    return np.pad(crop, pad, mode="reflect") if any(p[1] for p in pad) else crop


# --------------------------------------------------------------------------------------------- refinement


def refine_image(unet, scheduler, image: np.ndarray, object_masks: Sequence[np.ndarray], config: RefineConfig,
                 generator) -> tuple[np.ndarray, np.ndarray]:
    """Refine the objects of one render (see the module docstring).

    Args:
        unet: the refiner's UNet (eval mode).
        scheduler: its training DDPM schedule.
        image: ``(H, W)`` render in ``[0, 1]``.
        object_masks: ``(H, W)`` bool mask of each object.
        config: refinement settings.
        generator: CPU ``torch.Generator`` (all noise comes from it).

    Returns:
        ``(refined (H, W) float32 in [0, 1], region (H, W) bool)``; ``refined == image`` outside ``region``.
    """
    import torch
    from diffusers import DDIMScheduler

    from synth.diffusion.refiner import abar_at, window_divisor

    pixels = np.asarray(image, dtype=np.float32)
    region = np.zeros(pixels.shape, dtype=bool)
    for mask in object_masks:
        region |= inpaint_region(np.asarray(mask, dtype=bool), config.margin_px)
    timesteps = sdedit_timesteps(int(scheduler.config.num_train_timesteps), config.t0, config.steps)
    if not timesteps or not region.any():
        return pixels.copy(), region
    r0, c0, hh, ww = region_window(region, config.context_px, window_divisor(unet))
    x0 = torch.from_numpy(2.0 * _crop_padded(pixels, r0, c0, hh, ww) - 1.0)[None, None]
    inside = torch.from_numpy(_crop_padded(region, r0, c0, hh, ww).astype(np.float32))[None, None]
    ddim = DDIMScheduler.from_config(scheduler.config)
    ddim.set_timesteps(config.steps)

    def noised(t: int):
        a = abar_at(scheduler, t)
        return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * torch.randn(x0.shape, generator=generator)

    x = noised(timesteps[0])
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            out = unet(x, torch.tensor(t)).sample
            x = ddim.step(out, t, x, eta=0.0).prev_sample
            known = x0 if i + 1 == len(timesteps) else noised(timesteps[i + 1])
            x = inside * x + (1.0 - inside) * known
    refined_window = ((x[0, 0].clamp(-1.0, 1.0) + 1.0) / 2.0).numpy()
    out_image = pixels.copy()
    h, w = pixels.shape
    vh, vw = min(hh, h - r0), min(ww, w - c0)
    target = out_image[r0:r0 + vh, c0:c0 + vw]
    keep = region[r0:r0 + vh, c0:c0 + vw]
    target[keep] = refined_window[:vh, :vw][keep]
    return out_image, region


def _dataset_images(data: str | Path, images: slice | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    coco = load_coco(data)
    entries = sorted(coco["images"], key=lambda e: int(e["id"]))
    return coco, entries[images] if images is not None else entries


def _objects_of(coco: Mapping[str, Any]) -> dict[int, list[dict[str, Any]]]:
    by_image: dict[int, list[dict[str, Any]]] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    return by_image


def choose_t0(refiner_dir: str | Path, val_data: str | Path, *, grid: Sequence[float] = DEFAULT_T0_GRID,
              rule: T0Rule = T0Rule(), config: RefineConfig = RefineConfig(), seed: int = 0,
              progress: bool = True) -> dict[str, Any]:
    """Measure the label fidelity of each grid ``t0`` on validation renders, pick ``t0`` by ``rule`` and
    record both in the refiner's ``refiner.json``.

    The grid is walked upwards and stops after the first failing value (the rule cannot pass a larger
    one). Returns the record's ``t0_selection`` entry.
    """
    import torch
    from tqdm.auto import tqdm

    from rfo_bench.io.coco import resolve_dataset_image
    from rfo_bench.io.images import read_image
    from synth.diffusion.refiner import load_refiner, read_refiner_record, write_refiner_record

    unet, scheduler, _ = load_refiner(refiner_dir)
    coco, entries = _dataset_images(val_data, None)
    objects = _objects_of(coco)
    renders = []
    for entry in entries:
        anns = objects.get(int(entry["id"]), [])
        if anns:
            pixels = read_image(resolve_dataset_image(val_data, entry["file_name"])).pixels.astype(np.float32)
            renders.append((pixels, [annotation_mask(a, *pixels.shape) for a in anns]))
    if not renders:
        raise UserInputError("the validation set holds no labelled object", file=Path(val_data))
    physics = [object_contrast(p, m, config.margin_px) for p, masks in renders for m in masks]
    table: list[dict[str, Any]] = []
    for t0 in sorted(float(v) for v in grid):
        generator = torch.Generator().manual_seed(seed)
        trial = RefineConfig(**{**asdict(config), "t0": t0})
        refined = []
        for pixels, masks in tqdm(renders, desc=f"t0 {t0:g}", unit="image", disable=not progress,
                                  dynamic_ncols=True):
            out, _ = refine_image(unet, scheduler, pixels, masks, trial, generator)
            refined += [object_contrast(out, m, config.margin_px) for m in masks]
        fraction, counted = kept_fraction(physics, refined, rule)
        ratios = [r / p for p, r in zip(physics, refined) if abs(p) >= rule.min_contrast and math.isfinite(r)]
        table.append({"t0": t0, "kept_fraction": fraction, "objects_counted": counted,
                      "median_ratio": float(np.median(ratios)) if ratios else math.nan})
        logger.info("t0 %.3f: %.3f of %d objects keep %.0f %% of their contrast", t0, fraction, counted,
                    100 * rule.keep)
        if not (math.isfinite(fraction) and fraction >= rule.coverage):
            break
    selection = {"t0": select_t0(table, rule), "rule": asdict(rule), "grid": sorted(float(v) for v in grid),
                 "table": table, "validation_data": str(Path(val_data).resolve()),
                 "validation_images": len(renders), "validation_objects": len(physics),
                 "refine": {k: v for k, v in asdict(config).items() if k != "t0"}, "seed": seed}
    record = read_refiner_record(refiner_dir)
    record["t0"] = selection["t0"]
    record["t0_selection"] = selection
    write_refiner_record(Path(refiner_dir), record)
    return selection


def parse_images_slice(text: str | None) -> slice | None:
    """``--images START:STOP`` (Python slice of the dataset's images in id order); ``None``: all."""
    if text is None or text == "":
        return None
    try:
        start, stop = (int(v) if v.strip() else None for v in text.split(":"))
    except ValueError:
        raise UserInputError("expected START:STOP (e.g. 150:300)", field="--images", value=text) from None
    if (start is not None and start < 0) or (stop is not None and stop < 0):
        raise UserInputError("START and STOP must be >= 0", field="--images", value=text)
    return slice(start, stop)


def refine_dataset(refiner_dir: str | Path, data: str | Path, out_dir: str | Path, *, config: RefineConfig,
                   seed: int = 0, images: slice | None = None, progress: bool = True) -> dict[str, Any]:
    """Refine the renders of a COCO dataset and write them as a COCO dataset of the same layout.

    The image and annotation entries are copied unchanged (ids, boxes, masks, file names); only the
    pixels inside each image's refined region differ. ``manifest.json`` is written last.

    Args:
        refiner_dir: folder from :func:`synth.diffusion.refiner.train_refiner`.
        data: the renders (``annotations.json`` + ``images/``).
        out_dir: output folder (the caller owns the overwrite rule).
        config: refinement settings (``t0`` included).
        seed: seed of the noise.
        images: the dataset's images (in id order) to refine; ``None``: all.
        progress: a bar over the images.

    Returns:
        The manifest.
    """
    import torch
    from tqdm.auto import tqdm

    from rfo_bench.io.coco import resolve_dataset_image
    from rfo_bench.io.images import read_image, write_png16
    from synth.diffusion.refiner import load_refiner

    unet, scheduler, record = load_refiner(refiner_dir)
    if int(record["config"]["size_px"]) <= 0:
        raise UserInputError("damaged refiner record", file=Path(refiner_dir), field="config.size_px")
    coco, entries = _dataset_images(data, images)
    if not entries:
        raise UserInputError("no image selected", field="--images", value=str(images))
    objects = _objects_of(coco)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    generator = torch.Generator().manual_seed(seed)
    region_pixels, kept_entries, kept_anns = [], [], []
    for entry in tqdm(entries, desc="refine", unit="image", disable=not progress, dynamic_ncols=True):
        source = resolve_dataset_image(data, entry["file_name"])
        pixels = read_image(source).pixels.astype(np.float32)
        anns = objects.get(int(entry["id"]), [])
        refined, region = refine_image(unet, scheduler, pixels, [annotation_mask(a, *pixels.shape) for a in anns],
                                       config, generator)
        name = f"images/{Path(entry['file_name']).name}"
        write_png16(out / name, refined)
        kept_entries.append({**entry, "file_name": name})
        kept_anns += anns
        region_pixels.append(int(region.sum()))
    coco_out = {**{k: v for k, v in coco.items() if k not in ("images", "annotations")},
                "images": kept_entries, "annotations": kept_anns}
    atomic_write_bytes(out / "annotations.json", json.dumps(coco_out).encode())
    manifest = {"tool": REFINE_TOOL, "refiner": str(Path(refiner_dir).resolve()),
                "refiner_film": record.get("film"), "refine": asdict(config), "seed": seed,
                "source": str(Path(data).resolve()),
                "images_slice": None if images is None else [images.start, images.stop],
                "images": len(kept_entries), "objects": len(kept_anns),
                "refined_pixels_per_image_mean": float(np.mean(region_pixels)) if region_pixels else 0.0,
                "t0_selection": record.get("t0_selection")}
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    logger.info("refined %d images (%d objects) at t0 %.3f into %s", len(kept_entries), len(kept_anns), config.t0,
                out)
    return manifest

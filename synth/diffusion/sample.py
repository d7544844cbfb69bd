"""Sampling: inpaint RFOs of a chosen class into radiographs exactly where the label says, written as a
COCO dataset (:func:`sample_dataset`).

Per object:

1. The requested object mask (full-image pixels; placed at random or read from a requests file,
   :mod:`synth.diffusion.object_requests`; a mask-bank shape is rescaled by the ratio of the training
   and background spacings, so it keeps its mm size) gives the crop window and the inpainted region
   (mask dilated by the checkpoint's margin, :mod:`synth.diffusion.patches`). With scale groups the
   window is cut at the object's group's mm per pixel, from the background's spacing.
2. The window is resized to the model's patch size and denoised with the background kept outside the
   region (:mod:`synth.diffusion.denoise`), conditioned on the class and the scale group.
3. The patch is resized back and blended with a feathered weight that is 0 outside the region
   (:mod:`synth.diffusion.inpaint`): every pixel outside it keeps its exact background value.

The names of those modules are re-exported here (``from synth.diffusion.sample import Inpainter``).
"""

from __future__ import annotations

import itertools
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.categories import CATEGORY_BY_ID, category, coco_categories
from rfo_bench.io.coco import ANNOTATIONS_FILE, coco_pixel_spacing_mm
from rfo_bench.io.images import read_image, write_png16
from synth.diffusion.denoise import BASES, MODES, SCHEDULERS, SamplerConfig, inpaint_patches, make_scheduler
from synth.diffusion.inpaint import (
    Inpainter,
    InpaintOutcome,
    ObjectRequest,
    SampleScorer,
    check_class,
    feather_weight,
    paste_patch,
)
from synth.diffusion.model import load_mask_bank
from synth.diffusion.object_requests import place_bank_mask, requests_from_file
from synth.diffusion.patches import mask_bbox_xywh
from synth.export import rle_segmentation
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "BASES", "MODES", "SCHEDULERS", "SPACING_FILES", "InpaintOutcome", "Inpainter", "ObjectRequest", "SampleScorer",
    "SamplerConfig", "background_spacing_mm", "feather_weight", "inpaint_patches", "list_backgrounds",
    "make_scheduler", "paste_patch", "place_bank_mask", "recorded_spacings", "rle_segmentation", "sample_dataset",
]


def list_backgrounds(path: str | Path) -> list[Path]:
    """Background radiographs: one file, every image under a directory (sub-folders included), or
    ``embedded`` (:func:`synth.background_files.list_background_files`)."""
    from synth.background_files import list_background_files

    return list_background_files(path, recursive=True)


SPACING_FILES = (ANNOTATIONS_FILE, "backgrounds.json")
"""COCO files looked up next to background images (and one folder up) for their ``pixel_spacing_mm``."""


def recorded_spacings(files: list[Path]) -> dict[Path, float]:
    """Pixel spacing of background images as recorded by a COCO file next to them.

    A PNG carries no pixel spacing, so :func:`rfo_bench.io.images.read_image` falls back to a default;
    the generators' COCO files (``annotations.json``; ``backgrounds.json`` of the leaderboard's
    background pools) record the real one (:func:`rfo_bench.io.coco.coco_pixel_spacing_mm`). The files
    :data:`SPACING_FILES` in each image's folder and its parent are read; an image they do not list keeps
    its file's spacing.

    Returns:
        ``{resolved image path: isotropic spacing in mm}`` for the images a COCO file lists.
    """
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
                spacing = coco_pixel_spacing_mm(entry)
                if spacing is not None and "file_name" in entry:
                    known.setdefault((candidate.parent / str(entry["file_name"])).resolve(), spacing)
    return known


def background_spacing_mm(path: Path, loaded: Any, known: dict[Path, float]) -> float:
    """The spacing of one background: recorded by a COCO file (:func:`recorded_spacings`), else the file's
    (a DICOM header's, or :data:`rfo_bench.io.images.DEFAULT_PIXEL_SPACING_MM` for a file that states none)."""
    return known.get(path.resolve(), float(np.mean(loaded.pixel_spacing_mm)))


def _spacing_is_assumed(path: Path, loaded: Any, known: dict[Path, float]) -> bool:
    """True when neither a COCO file nor the image states the background's spacing."""
    return path.resolve() not in known and bool(getattr(loaded, "spacing_is_default", False))


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
    progress: bool = True,
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
        requests_file: JSON list of explicit requests (see :func:`synth.diffusion.object_requests.requests_from_file`).
        scorer, threshold, max_tries: optional QC filter (:mod:`synth.diffusion.qc`).
        batch_images: images denoised together.
        device: torch device.
        progress: a tqdm bar on stderr over the images written (whatever their number).

    Returns:
        The manifest.
    """
    import torch
    from tqdm.auto import tqdm

    from toolkit_core.utils import seed_everything

    rng = seed_everything(seed)
    inpainter = Inpainter(ckpt_dir, config, device=device)
    info = inpainter.info
    bank = load_mask_bank(ckpt_dir)
    if classes:
        wanted = tuple(category(name).id for name in classes)
        for cid in wanted:
            check_class(cid, info.category_ids, str(ckpt_dir))
    else:
        wanted = info.category_ids
    files = list_backgrounds(backgrounds)
    known_spacing = recorded_spacings(files)
    if requests_file is not None:
        plans = requests_from_file(Path(requests_file), files, info, bank, rng)
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
    assumed: list[Path] = []
    bar = tqdm(total=total, desc="sample", unit="image", disable=not progress, dynamic_ncols=True)
    for start in range(0, total, batch_images):
        chunk = list(itertools.islice(plan_iter, batch_images))
        spacings = [background_spacing_mm(p[0], p[1], known_spacing) for p in chunk]
        unstated = [(p[0], s) for p, s in zip(chunk, spacings) if _spacing_is_assumed(p[0], p[1], known_spacing)]
        if unstated and not assumed:
            logger.warning("%s states no pixel spacing (no COCO file beside it records one): %.3f mm is assumed for it "
                           "and any other such background, and it sets the objects' size in pixels", *unstated[0])
        assumed += [path for path, _ in unstated]
        outcomes = inpainter.inpaint_objects([p[1].pixels for p in chunk], [p[2] for p in chunk], generator,
                                             scorer=scorer, threshold=threshold, max_tries=max_tries,
                                             spacings_mm=spacings)
        for offset, ((path, _, _), outcome) in enumerate(zip(chunk, outcomes)):
            image_id = start + offset + 1
            name = f"{image_id - 1:06d}.png"
            write_png16(out / "images" / name, outcome.image)
            height, width = outcome.image.shape
            coco_images.append({"id": image_id, "file_name": f"images/{name}", "width": width, "height": height,
                                "background": path.name, "pixel_spacing_mm": [spacings[offset]] * 2})
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
        bar.update(len(chunk))
    bar.close()
    coco = {
        "info": {"description": "rfo-synth diffusion samples", "generator": "synth.diffusion"},
        "images": coco_images, "annotations": coco_anns,
        "categories": coco_categories(),
    }
    atomic_write_bytes(out / "annotations.json", json.dumps(coco).encode())
    manifest = {
        "checkpoint": str(Path(ckpt_dir).resolve()), "checkpoint_step": info.step, "seed": seed,
        "scale_groups_mm_px": None if info.scale_groups_mm_px is None else list(info.scale_groups_mm_px),
        "sampler": asdict(config), "images": len(coco_images), "objects": len(coco_anns),
        "images_on_backgrounds_without_spacing": len(assumed),
        "qc": {"enabled": scorer is not None, "threshold": threshold if scorer is not None else None,
               "attempts": total_attempts, "accepted": total_accepted, "dropped": total_rejected,
               "acceptance_rate": (total_accepted / total_attempts) if total_attempts else None},
    }
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    logger.info("wrote %d images with %d objects to %s", len(coco_images), len(coco_anns), out)
    return manifest

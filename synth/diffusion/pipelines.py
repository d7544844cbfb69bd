"""Driving a large pretrained model the user has locally (Stable Diffusion, RoentGen) from the same CLI.

RoentGen (Chambon et al., 2022, arXiv:2211.12737) is Stable Diffusion fine-tuned on chest
radiographs; its weights are gated and nothing is ever downloaded here: the pipeline is loaded from a
local diffusers directory (``model_index.json``) with ``local_files_only=True``. Only safetensors
weights are read (``use_safetensors=True``): a component saved only as a pickle (``.bin``, ``.ckpt``,
``.pt``, ``.pkl``) is refused before anything is loaded, since unpickling a file runs its code.
Convert such a folder once with ``pipe.save_pretrained(dir, safe_serialization=True)`` in an
environment you trust.

* ``inpaint``: a crop around the requested mask is inpainted by ``StableDiffusionInpaintPipeline`` (a
  text-to-image checkpoint also works through ``AutoPipelineForInpainting``) with a class prompt and
  pasted back with the same feathered blend as the trained model, so the label is the requested mask.
* ``text2img``: whole images from a prompt. A text-to-image model gives no box, so these images
  carry no object annotations (the prompt and class are recorded per image); use them for
  image-level experiments only.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.categories import RFO_CATEGORIES, category, coco_categories
from rfo_bench.io.images import read_image, write_png16
from synth.diffusion.inpaint import paste_patch
from synth.diffusion.patches import (
    PatchSpec,
    crop_square,
    crop_window,
    inpaint_region,
    mask_bbox_xywh,
    region_radius_full_px,
    resize_square,
)
from synth.diffusion.sample import list_backgrounds
from synth.export import rle_segmentation
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

TASKS = ("inpaint", "text2img")
PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")

PROMPT_OBJECTS: dict[str, str] = {
    "sponge": "retained surgical sponge with radiopaque marker",
    "cottonoid": "retained cottonoid patty with radiopaque marker string",
    "needle": "retained curved surgical needle",
    "blade": "retained scalpel blade",
    "clamp": "retained surgical clamp",
    "guidewire": "retained guidewire fragment",
    "chain": "necklace chain",
    "zipper": "clothing zipper",
    "button": "button",
    "ecg_electrode": "ECG electrode",
}
DEFAULT_TEMPLATE = "chest radiograph, {object} in the {location}"
"""Prompt template; ``{object}`` is the class phrase, ``{location}`` e.g. ``left lower chest``."""


def location_phrase(bbox_xywh: tuple[float, float, float, float], image_hw: tuple[int, int],
                    anatomy: str = "chest") -> str:
    """Where an object lies, in the patient's frame of a PA radiograph (image left = patient right).

    The image is cut in thirds: ``upper`` / ``mid`` / ``lower`` and ``right`` / ``central`` / ``left``.
    """
    x, y, w, h = bbox_xywh
    height, width = image_hw
    cx, cy = (x + w / 2.0) / width, (y + h / 2.0) / height
    side = "right" if cx < 1 / 3 else ("left" if cx > 2 / 3 else "central")
    level = "upper" if cy < 1 / 3 else ("lower" if cy > 2 / 3 else "mid")
    return f"{side} {level} {anatomy}"


def prompt_for(class_name: str, bbox_xywh: tuple[float, float, float, float] | None = None,
               image_hw: tuple[int, int] | None = None, template: str = DEFAULT_TEMPLATE,
               anatomy: str = "chest") -> str:
    """The prompt for one object, e.g. ``chest radiograph, retained scalpel blade in the left lower chest``."""
    obj = PROMPT_OBJECTS[category(class_name).name]
    location = location_phrase(bbox_xywh, image_hw, anatomy) if bbox_xywh and image_hw else anatomy
    try:
        return template.format(object=obj, location=location, cls=class_name)
    except (KeyError, IndexError) as err:
        raise UserInputError("prompt template may only use {object}, {location} and {cls}", field="--prompt",
                             value=template) from err


def check_pipeline_dir(path: str | Path) -> dict[str, Any]:
    """Validate a local diffusers pipeline directory and return its ``model_index.json``."""
    root = Path(path)
    if not root.is_dir():
        raise UserInputError("pretrained model directory does not exist", file=root)
    index = root / "model_index.json"
    if not index.exists():
        hint = " (it looks like an rfo-synth checkpoint: use --ckpt)" if (root / "unet" / "config.json").exists() \
            and not (root / "vae").exists() else ""
        raise UserInputError(f"not a diffusers pipeline directory: expected model_index.json{hint}", file=root)
    try:
        meta = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"invalid JSON: {err}", file=index) from None
    missing = [part for part in ("unet", "vae") if part in meta and not (root / part).is_dir()]
    if missing:
        raise UserInputError(f"pipeline components missing on disk: {missing}", file=root)
    for part in sorted(meta):
        folder = root / part
        if part.startswith("_") or not folder.is_dir():
            continue
        pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles and not any(p.suffix == ".safetensors" for p in folder.iterdir()):
            raise UserInputError("only safetensors weights are loaded (a pickle can run code when read); convert "
                                 "it with save_pretrained(..., safe_serialization=True)", file=pickles[0])
    return meta


def load_pipeline(path: str | Path, task: str, device: str = "cpu"):
    """Load a local Stable Diffusion / RoentGen pipeline for ``task`` (never downloads)."""
    if task not in TASKS:
        raise UserInputError(f"unknown task; expected one of {TASKS}", field="--task", value=task)
    check_pipeline_dir(path)
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    try:
        import transformers  # noqa: F401  (the text encoder of every Stable Diffusion pipeline)
    except ImportError:
        raise UserInputError("Stable Diffusion pipelines need the `transformers` package "
                             "(pip install 'rfo-toolkit[pretrained]')", field="--pretrained") from None
    from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

    cls = AutoPipelineForInpainting if task == "inpaint" else AutoPipelineForText2Image
    try:
        pipe = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, safety_checker=None)
    except (OSError, ValueError, TypeError) as err:
        raise UserInputError(f"cannot load the pipeline: {err}", file=path) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


@dataclass(frozen=True)
class PretrainedConfig:
    """Settings for a pretrained pipeline.

    Attributes:
        task: ``inpaint`` or ``text2img``.
        steps: denoising steps.
        guidance_scale: text classifier-free guidance.
        resolution: pipeline resolution in pixels (512 for SD 1.x / RoentGen).
        context: crop side as a multiple of the object size (inpainting).
        template: prompt template (:data:`DEFAULT_TEMPLATE`).
        negative_prompt: optional negative prompt.
        box_px: object box side for random placement when no requests are given (full-image px).
    """

    task: str = "inpaint"
    steps: int = 30
    guidance_scale: float = 7.5
    resolution: int = 512
    context: float = 3.0
    template: str = DEFAULT_TEMPLATE
    negative_prompt: str | None = None
    box_px: int = 120


def _to_rgb_pil(pixels: np.ndarray):
    from PIL import Image

    gray = np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)
    return Image.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")


def _from_pil(image) -> np.ndarray:
    array = np.asarray(image.convert("L"), dtype=np.float32) / 255.0
    return array


def ellipse_in_box(bbox_xywh: tuple[int, int, int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` bool ellipse inscribed in an integer box."""
    x, y, w, h = bbox_xywh
    yy, xx = np.mgrid[0:image_hw[0], 0:image_hw[1]]
    cy, cx = y + (h - 1) / 2.0, x + (w - 1) / 2.0
    return ((yy - cy) / max(h / 2.0, 0.5)) ** 2 + ((xx - cx) / max(w / 2.0, 0.5)) ** 2 <= 1.0


def inpaint_with_pipeline(
    pipe: Callable[..., Any], image: np.ndarray, object_mask: np.ndarray, prompt: str, config: PretrainedConfig,
    generator,
) -> np.ndarray:
    """Inpaint one object with a text-conditioned pipeline and paste it back.

    Args:
        pipe: an inpainting pipeline (called with ``prompt``, ``image``, ``mask_image``, ``height``,
            ``width``, ``num_inference_steps``, ``guidance_scale``, ``generator``).
        image: ``(H, W)`` background in ``[0, 1]``.
        object_mask: ``(H, W)`` bool, the object asked for (the label).
        prompt: the text prompt.
        config: settings.
        generator: torch generator.

    Returns:
        The new ``(H, W)`` image; unchanged outside the dilated mask.
    """
    # a text-conditioned pipeline has no notion of mm: the crop is fitted to the object (no scale groups)
    spec = PatchSpec(size_px=config.resolution, context=config.context, mask_margin_px=max(4, config.resolution // 64),
                     scale_groups_mm_px=None)
    window = crop_window(mask_bbox_xywh(object_mask), image.shape, spec)
    radius = region_radius_full_px(spec, window.side)
    crop = resize_square(crop_square(image, window), config.resolution)
    region = resize_square(crop_square(inpaint_region(object_mask, radius).astype(np.float32), window, pad="zero"),
                           config.resolution) > 1e-3
    from PIL import Image

    result = pipe(prompt=prompt, negative_prompt=config.negative_prompt, image=_to_rgb_pil(crop),
                  mask_image=Image.fromarray((region * 255).astype(np.uint8), mode="L"),
                  height=config.resolution, width=config.resolution, num_inference_steps=config.steps,
                  guidance_scale=config.guidance_scale, generator=generator)
    patch = _from_pil(result.images[0])
    if patch.shape != (config.resolution, config.resolution):
        patch = resize_square(patch, config.resolution) if patch.shape[0] == patch.shape[1] else patch
    return paste_patch(image, patch, window, object_mask, radius)


def sample_pretrained(
    pretrained_dir: str | Path, backgrounds: str | Path, out_dir: str | Path, *, n: int, seed: int,
    config: PretrainedConfig, classes: list[str] | None = None, device: str = "cpu",
    pipe: Callable[..., Any] | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Write ``n`` images from a local pretrained pipeline in the COCO layout of the other generators.

    ``pipe`` may be given directly (an already loaded pipeline); otherwise it is loaded from
    ``pretrained_dir`` with the pipeline's own per-step bar off. ``progress``: one tqdm bar on stderr
    over the ``n`` images.
    """
    import torch
    from tqdm.auto import tqdm

    from toolkit_core.utils import seed_everything

    rng = seed_everything(seed)
    names = [category(c).name for c in classes] if classes else [c.name for c in RFO_CATEGORIES]
    pipe = pipe or load_pipeline(pretrained_dir, config.task, device)
    generator = torch.Generator().manual_seed(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    files = list_backgrounds(backgrounds) if config.task == "inpaint" else []
    images, anns = [], []
    for i in tqdm(range(n), desc="sample", unit="image", disable=not progress, dynamic_ncols=True):
        name = names[int(rng.integers(len(names)))]
        file_name = f"{i:06d}.png"
        entry: dict[str, Any] = {"id": i + 1, "file_name": f"images/{file_name}", "category": name}
        if config.task == "text2img":
            prompt = prompt_for(name, template=config.template)
            result = pipe(prompt=prompt, negative_prompt=config.negative_prompt, height=config.resolution,
                          width=config.resolution, num_inference_steps=config.steps,
                          guidance_scale=config.guidance_scale, generator=generator)
            pixels = _from_pil(result.images[0])
        else:
            loaded = read_image(files[i % len(files)])
            hw = loaded.pixels.shape
            side = min(config.box_px, hw[0] - 2, hw[1] - 2)
            if side < 4:
                raise UserInputError("background too small for the object box", file=files[i % len(files)])
            y = int(rng.integers(int(0.15 * hw[0]), max(int(0.85 * hw[0]) - side, int(0.15 * hw[0])) + 1))
            x = int(rng.integers(int(0.15 * hw[1]), max(int(0.85 * hw[1]) - side, int(0.15 * hw[1])) + 1))
            mask = ellipse_in_box((x, y, side, side // 2 if name in ("needle", "blade", "guidewire") else side), hw)
            bbox = mask_bbox_xywh(mask)
            prompt = prompt_for(name, bbox, hw, template=config.template)
            pixels = inpaint_with_pipeline(pipe, loaded.pixels, mask, prompt, config, generator)
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": category(name).id,
                         "bbox": [float(v) for v in bbox], "area": float(mask.sum()), "iscrowd": 0,
                         "segmentation": rle_segmentation(mask)})
            entry["background"] = files[i % len(files)].name
        entry.update({"prompt": prompt, "height": int(pixels.shape[0]), "width": int(pixels.shape[1])})
        write_png16(out / "images" / file_name, pixels)
        images.append(entry)
    coco = {"info": {"description": f"rfo-synth diffusion samples from a pretrained pipeline ({config.task})"},
            "images": images, "annotations": anns, "categories": coco_categories()}
    atomic_write_bytes(out / "annotations.json", json.dumps(coco).encode())
    manifest = {"pretrained": str(Path(pretrained_dir).resolve()), "seed": seed, "config": asdict(config),
                "images": len(images), "objects": len(anns),
                "classes": {c: sum(1 for e in images if e["category"] == c) for c in names},
                "note": None if config.task == "inpaint" else "text-to-image output has no boxes"}
    atomic_write_bytes(out / "manifest.json", (json.dumps(manifest, indent=2) + "\n").encode())
    logger.info("wrote %d images (%s) to %s", len(images), config.task, out)
    return manifest

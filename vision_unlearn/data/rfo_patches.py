"""The ``rfo-patches`` source: object and background patches cut from a COCO detection dataset.

Two ways to size a patch (:class:`PatchCut`): relative to the object (a square of side
``context * max(w, h)`` around the box centre: every object fills the same share of its patch) or at a
fixed physical context (``context_mm`` on a side, from the film's pixel spacing: the patch keeps the
film's scale, so an object's size and the thickness of a wire are visible). Patches are then windowed
(``window``) and resized to ``patch_px``. Training patches may be cut several times per object with a
seeded jitter of centre, side and orientation (``jitter_copies``); held-out patches never are.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from toolkit_core.errors import UserInputError
from vision_unlearn.data.container import ClassificationData
from vision_unlearn.data.pixels import finish_data, read_pixels, resize_images

if TYPE_CHECKING:
    from rfo_bench.io.records import DetectionDataset

logger = logging.getLogger(__name__)

RFO_BACKGROUND_CLASS = "none"
"""Label of the background patches of the ``rfo-patches`` set."""

RFO_PATCH_CONTEXT = 1.5
"""An object patch is a square of side ``RFO_PATCH_CONTEXT * max(bbox_w, bbox_h)`` around the box centre."""

RFO_MIN_PATCH_PX = 16
"""Smallest patch side in source pixels, so that tiny objects (needles) keep some context."""

DEFAULT_RFO_PATCH_SIZE = 64
"""Side of the ``rfo-patches`` images when ``image_size`` is not given."""

WINDOWS = ("none", "film", "patch")
"""Intensity windows of :class:`PatchCut`: ``none`` keeps the file's values (16-bit PNG / DICOM read to
``[0, 1]``), ``film`` stretches the film's 0.5–99.5 percentiles to ``[0, 1]``, ``patch`` each patch's
1–99 percentiles (faint objects use the whole range of their patch)."""


@dataclass(frozen=True, kw_only=True)
class PatchCut:
    """How patches are cut from films.

    Attributes:
        patch_px: side of the output patches (pixels).
        context: object-relative rule: side ``context * max(w, h)`` (source pixels) around the box centre.
        context_mm: fixed physical side (mm) instead; needs the film's pixel spacing. ``None``: relative rule.
        min_side_px: smallest side in source pixels.
        window: one of :data:`WINDOWS`.
        jitter_copies: extra crops per object when cutting a training split: centre shifted by up to
            ``jitter_shift`` of the side, side scaled by up to ``1 ± jitter_scale``, a random one of the
            eight flips / quarter turns. Background patches are not copied (one per film).
        jitter_shift: see ``jitter_copies``.
        jitter_scale: see ``jitter_copies``.
    """

    patch_px: int = DEFAULT_RFO_PATCH_SIZE
    context: float = RFO_PATCH_CONTEXT
    context_mm: float | None = None
    min_side_px: int = RFO_MIN_PATCH_PX
    window: str = "none"
    jitter_copies: int = 0
    jitter_shift: float = 0.15
    jitter_scale: float = 0.15

    def __post_init__(self) -> None:
        if self.patch_px < 4:
            raise UserInputError("patch side must be at least 4 px", field="patch_px", value=self.patch_px)
        if not self.context > 0 or (self.context_mm is not None and not self.context_mm > 0):
            raise UserInputError("patch context must be positive", field="context_mm" if self.context_mm else "context",
                                 value=self.context_mm if self.context_mm is not None else self.context)
        if self.window not in WINDOWS:
            raise UserInputError("unknown window; expected " + ", ".join(WINDOWS), field="window", value=self.window)
        if self.jitter_copies < 0 or not 0 <= self.jitter_shift < 0.5 or not 0 <= self.jitter_scale < 1:
            raise UserInputError("need jitter_copies >= 0, 0 <= jitter_shift < 0.5, 0 <= jitter_scale < 1",
                                 field="jitter_copies", value=(self.jitter_copies, self.jitter_shift,
                                                               self.jitter_scale))

    def side_px(self, width_px: float, height_px: float, spacing_mm: float | None) -> int:
        """The patch side in source pixels of an object of ``width_px x height_px`` on a film of ``spacing_mm``."""
        if self.context_mm is None:
            side = self.context * max(width_px, height_px)
        elif spacing_mm is None or not spacing_mm > 0:
            raise UserInputError("a patch context in mm needs the film's pixel spacing", field="pixel_spacing_mm",
                                 value=spacing_mm)
        else:
            side = self.context_mm / spacing_mm
        return max(self.min_side_px, int(round(side)))


def crop_window(cx: float, cy: float, side: int, height: int, width: int) -> tuple[int, int]:
    """Top-left ``(x0, y0)`` of a ``side x side`` window centred on ``(cx, cy)``, shifted inside a
    ``height x width`` image (centred on the image when larger than it)."""
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), width - side) if side <= width else (width - side) // 2
    y0 = min(max(y0, 0), height - side) if side <= height else (height - side) // 2
    return x0, y0


def _crop_square(pixels: np.ndarray, cx: float, cy: float, side: int) -> np.ndarray:
    """A ``side x side`` crop around ``(cx, cy)`` (pixels) that stays inside the image.

    Near a border the window is shifted inwards rather than padded, so that no patch carries an
    artificial black margin a classifier could use as a cue (objects near the edge are not centred
    then, but stay inside). Only a window larger than the image is padded, by edge replication.
    """
    height, width = pixels.shape[:2]
    x0, y0 = crop_window(cx, cy, side, height, width)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    crop = pixels[sy0:min(y0 + side, height), sx0:min(x0 + side, width)]
    pad_y = (sy0 - y0, side - crop.shape[0] - (sy0 - y0))
    pad_x = (sx0 - x0, side - crop.shape[1] - (sx0 - x0))
    if any(pad_y) or any(pad_x):
        crop = np.pad(crop, (pad_y, pad_x, *([(0, 0)] * (pixels.ndim - 2))), mode="edge")
    return np.ascontiguousarray(crop, dtype=np.float32)


def _boxes_overlap(box_xyxy: tuple[float, float, float, float], boxes_xyxy: list[tuple[float, ...]]) -> bool:
    x0, y0, x1, y1 = box_xyxy
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in boxes_xyxy)


def background_window(boxes_xyxy: Sequence[tuple[float, float, float, float]], side: int, height: int, width: int,
                      rng: np.random.Generator, tries: int = 100) -> tuple[int, int] | None:
    """Top-left ``(x0, y0)`` of a random ``side x side`` window inside a ``height x width`` film that overlaps
    none of ``boxes_xyxy`` (pixels); ``None`` when ``tries`` draws found none."""
    for _ in range(tries):
        x0 = int(rng.integers(0, width - side + 1))
        y0 = int(rng.integers(0, height - side + 1))
        if not _boxes_overlap((x0, y0, x0 + side, y0 + side), list(boxes_xyxy)):
            return x0, y0
    return None


def window_percentiles(pixels: np.ndarray, low_pct: float, high_pct: float) -> np.ndarray:
    """``pixels`` with their ``low_pct``..``high_pct`` percentiles stretched to ``[0, 1]`` (clipped).

    A flat input (no spread between the percentiles) maps to 0.5.
    """
    low, high = np.percentile(pixels, [low_pct, high_pct])
    if not high > low:
        return np.full_like(pixels, 0.5, dtype=np.float32)
    return np.clip((pixels - low) / (high - low), 0.0, 1.0).astype(np.float32)


def _image_spacings_mm(annotations_file: Path) -> dict[int, float]:
    """``image id -> pixel_spacing_mm`` of the COCO file's images that state one (the physics generator does)."""
    try:
        document = json.loads(annotations_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    spacings = {}
    for image in document.get("images", []) if isinstance(document, dict) else []:
        value = image.get("pixel_spacing_mm") if isinstance(image, dict) else None
        if isinstance(value, (int, float)) and value > 0 and isinstance(image.get("id"), int):
            spacings[image["id"]] = float(value)
    return spacings


def cut_patch_set(
    dataset: DetectionDataset,
    cut: PatchCut,
    *,
    in_chans: int = 1,
    seed: int = 0,
    augment: bool = False,
    spacing_mm: dict[int, float] | float | None = None,
    class_names: Sequence[str] | None = None,
    annotations_file: Path | None = None,
    out_size: tuple[int, int] | None = None,
) -> ClassificationData:
    """Object patches (labelled by category) and object-free background patches of every image.

    Classes are ``"none"`` (background, label 0) followed by ``class_names`` (default: the categories with at
    least one object, in category-id order); objects of other categories are left out. An object patch is
    centred on its box (shifted inside the film at its border); its side follows ``cut``. The background
    patch of a film is a seeded random square of the median object-patch side (every patch's side under a
    mm context on films of one spacing) that overlaps no box (films where none fits after 100 draws get none). With ``augment`` every object
    gives ``cut.jitter_copies`` more jittered patches. Every patch is windowed as ``cut.window`` says
    and resized to ``cut.patch_px``.

    Args:
        dataset: the films (boxes in film pixels; ``patient_id`` else the image id is the patient).
        cut: patch geometry and window.
        in_chans: channels of the patches (1 gray, 3 repeated).
        seed: seed of the background positions and the jitter.
        augment: cut jittered copies (training splits only).
        spacing_mm: the films' pixel spacing, one value or per image id (needed by ``cut.context_mm``);
            ``None``: the ``pixel_spacing_mm`` the COCO file states per image.
        class_names: object classes in label order (after ``none``).
        annotations_file: the COCO file, for messages and for reading the spacing.
        out_size: ``(H, W)`` of the patches instead of ``cut.patch_px`` square.

    Raises:
        UserInputError: an unknown class name, a mm context without spacing, or no background patch at all.
    """
    from rfo_bench.io.coco import resolve_dataset_image

    source = annotations_file or Path(dataset.source or dataset.root)
    if spacing_mm is None and annotations_file is not None:
        spacing_mm = _image_spacings_mm(annotations_file)
    name_of = {c.id: c.name for c in dataset.categories}
    if class_names is None:
        used = {obj.category_id for record in dataset.images for obj in record.objects}
        unknown = used - set(name_of)
        if unknown:
            raise UserInputError("annotations use category ids missing from 'categories'", file=source,
                                 field="category_id", value=sorted(unknown))
        class_names = [name_of[i] for i in sorted(used)]
    missing = [name for name in class_names if name not in name_of.values()]
    if missing:
        raise UserInputError("class not among the dataset's categories", file=source, field="categories",
                             value=missing)
    label_of = {cid: list(class_names).index(name) + 1 for cid, name in name_of.items() if name in class_names}

    def spacing_of(image_id: int) -> float | None:
        return spacing_mm.get(image_id) if isinstance(spacing_mm, dict) else spacing_mm

    kept = [(record, obj) for record in dataset.images for obj in record.objects if obj.category_id in label_of]
    sides = [cut.side_px(obj.width, obj.height, spacing_of(record.image_id)) for record, obj in kept]
    background_side = int(np.median(sides)) if sides else 4 * cut.min_side_px
    out_size = out_size or (cut.patch_px, cut.patch_px)
    rng = np.random.default_rng(seed)
    patches: list[torch.Tensor] = []
    labels: list[int] = []
    ids: list[str] = []
    patients: list[str] = []
    copies = cut.jitter_copies if augment else 0

    def add(pixels: np.ndarray, cx: float, cy: float, side: int, label: int, sample_id: str, patient: str,
            jitter: bool) -> None:
        if jitter:
            cx += float(rng.uniform(-cut.jitter_shift, cut.jitter_shift)) * side
            cy += float(rng.uniform(-cut.jitter_shift, cut.jitter_shift)) * side
            side = max(cut.min_side_px, int(round(side * float(rng.uniform(1 - cut.jitter_scale,
                                                                           1 + cut.jitter_scale)))))
        crop = _crop_square(pixels, cx, cy, side)
        if cut.window == "patch":
            crop = window_percentiles(crop, 1.0, 99.0)
        if jitter:
            crop = np.rot90(crop, k=int(rng.integers(4)))
            crop = crop[:, ::-1] if rng.integers(2) else crop
        t = torch.from_numpy(np.ascontiguousarray(crop))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        patches.append(resize_images(t.unsqueeze(0), out_size)[0])
        labels.append(label)
        ids.append(sample_id)
        patients.append(patient)

    records = sorted(dataset.images, key=lambda r: r.image_id)
    for record in tqdm(records, desc="cutting RFO patches", unit="image", leave=False):
        pixels = read_pixels(resolve_dataset_image(dataset.root, record.file_name), in_chans)
        if cut.window == "film":
            pixels = window_percentiles(pixels, 0.5, 99.5)
        patient = record.patient_id or f"image-{record.image_id}"
        spacing = spacing_of(record.image_id)
        boxes = [obj.bbox_xyxy for obj in record.objects]
        for number, obj in enumerate(record.objects):
            if obj.category_id not in label_of:
                continue
            x0, y0, x1, y1 = obj.bbox_xyxy
            name = f"ann{obj.annotation_id}" if obj.annotation_id is not None else f"obj{number}"
            side = cut.side_px(obj.width, obj.height, spacing)
            for copy in range(copies + 1):
                add(pixels, (x0 + x1) / 2, (y0 + y1) / 2, side, label_of[obj.category_id],
                    f"image{record.image_id}-{name}" + (f"-j{copy}" if copy else ""), patient, copy > 0)
        height, width = pixels.shape[:2]
        side = min(background_side, height, width)
        corner = background_window(boxes, side, height, width, rng)
        if corner is None:
            logger.debug("image %d: no object-free background patch found", record.image_id)
        else:
            add(pixels, corner[0] + side / 2, corner[1] + side / 2, side, 0, f"image{record.image_id}-bg0", patient,
                False)
    if not any(label == 0 for label in labels):
        raise UserInputError("no object-free background patch could be cut from any image", file=source,
                             field=RFO_BACKGROUND_CLASS)
    return finish_data(torch.stack(patches), np.asarray(labels), ids, patients,
                       [RFO_BACKGROUND_CLASS, *class_names], image_size=None, in_chans=in_chans)


def read_rfo_patches(
    directory: Path, size: tuple[int, int] | None, in_chans: int, seed: int
) -> ClassificationData:
    """The ``rfo-patches:DIR`` set: :func:`cut_patch_set` with the object-relative rule, no window, no jitter.

    The COCO file is read with the shared :func:`rfo_bench.io.coco.read_coco`. Classes are ``"none"``
    followed by the categories that have at least one object, in category-id order. Patches are resized to
    ``size`` (default :data:`DEFAULT_RFO_PATCH_SIZE`).

    The patient of a patch is the image's ``patient_id`` field, else the image id. The physics
    generator writes no ``patient_id``: its images are separate "patients" even when they were rendered
    on the same real background radiograph (recorded in each image's ``background`` field), so anatomy
    is shared across train and test when few backgrounds are used.
    """
    from rfo_bench.io.coco import dataset_annotations_path, read_coco

    annotations_file = dataset_annotations_path(directory)
    dataset = read_coco(annotations_file)
    if not dataset.images:
        raise UserInputError("COCO file lists no images", file=annotations_file, field="images")
    used = {obj.category_id for record in dataset.images for obj in record.objects}
    unused = [c.name for c in sorted(dataset.categories, key=lambda c: c.id) if c.id not in used]
    if unused:
        logger.info("%s: categories without objects are left out of the patch classes: %s",
                    annotations_file, ", ".join(unused))
    return cut_patch_set(dataset, PatchCut(), in_chans=in_chans, seed=seed, spacing_mm=None,
                         annotations_file=annotations_file, out_size=size)

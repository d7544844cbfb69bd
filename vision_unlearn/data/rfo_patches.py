"""The ``rfo-patches`` source: object and background patches cut from a COCO detection dataset."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from toolkit_core.errors import UserInputError
from vision_unlearn.data.container import ClassificationData
from vision_unlearn.data.pixels import finish_data, read_pixels, resize_images

logger = logging.getLogger(__name__)

RFO_BACKGROUND_CLASS = "none"
"""Label of the background patches of the ``rfo-patches`` set."""

RFO_PATCH_CONTEXT = 1.5
"""An object patch is a square of side ``RFO_PATCH_CONTEXT * max(bbox_w, bbox_h)`` around the box centre."""

RFO_MIN_PATCH_PX = 16
"""Smallest patch side in source pixels, so that tiny objects (needles) keep some context."""

DEFAULT_RFO_PATCH_SIZE = 64
"""Side of the ``rfo-patches`` images when ``image_size`` is not given."""


def _crop_square(pixels: np.ndarray, cx: float, cy: float, side: int) -> np.ndarray:
    """A ``side x side`` crop around ``(cx, cy)`` (pixels) that stays inside the image.

    Near a border the window is shifted inwards rather than padded, so that no patch carries an
    artificial black margin a classifier could use as a cue (objects near the edge are not centred
    then, but stay inside). Only a window larger than the image is padded, by edge replication.
    """
    height, width = pixels.shape[:2]
    x0 = int(round(cx - side / 2))
    y0 = int(round(cy - side / 2))
    x0 = min(max(x0, 0), width - side) if side <= width else (width - side) // 2
    y0 = min(max(y0, 0), height - side) if side <= height else (height - side) // 2
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


def read_rfo_patches(
    directory: Path, size: tuple[int, int] | None, in_chans: int, seed: int
) -> ClassificationData:
    """One patch per annotated object (labelled by category) plus one background patch per image.

    The COCO file is read with the shared :func:`rfo_bench.io.coco.read_coco`. Classes are
    ``"none"`` (background, label 0) followed by the categories that have at least one object, in
    category-id order. An object patch is a square of side ``RFO_PATCH_CONTEXT * max(w, h)`` (at least
    :data:`RFO_MIN_PATCH_PX`) around the box centre, shifted inside the image at its border; the background
    patch of an image is a seeded random square of the median object-patch side that overlaps no box
    (images where none fits after 100 draws get none). Patches are resized to ``size``
    (default :data:`DEFAULT_RFO_PATCH_SIZE`).

    The patient of a patch is the image's ``patient_id`` field, else the image id. The physics
    generator writes no ``patient_id``: its images are separate "patients" even when they were rendered
    on the same real background radiograph (recorded in each image's ``background`` field), so anatomy
    is shared across train and test when few backgrounds are used.
    """
    from rfo_bench.io.coco import dataset_annotations_path, read_coco, resolve_dataset_image

    annotations_file = dataset_annotations_path(directory)
    dataset = read_coco(annotations_file)
    if not dataset.images:
        raise UserInputError("COCO file lists no images", file=annotations_file, field="images")
    objects = [obj for record in dataset.images for obj in record.objects]
    used_ids = {obj.category_id for obj in objects}
    categories = sorted(dataset.categories, key=lambda c: c.id)
    unknown = used_ids - {c.id for c in categories}
    if unknown:
        raise UserInputError("annotations use category ids missing from 'categories'", file=annotations_file,
                             field="category_id", value=sorted(unknown))
    unused = [c.name for c in categories if c.id not in used_ids]
    if unused:
        logger.info("%s: categories without objects are left out of the patch classes: %s",
                    annotations_file, ", ".join(unused))
    kept = [c for c in categories if c.id in used_ids]
    class_names = [RFO_BACKGROUND_CLASS, *[c.name for c in kept]]
    label_of = {c.id: i + 1 for i, c in enumerate(kept)}

    def patch_side(width: float, height: float) -> int:
        return max(RFO_MIN_PATCH_PX, int(round(RFO_PATCH_CONTEXT * max(width, height))))

    sides = [patch_side(obj.width, obj.height) for obj in objects]
    background_side = int(np.median(sides)) if sides else 4 * RFO_MIN_PATCH_PX
    out_size = size or (DEFAULT_RFO_PATCH_SIZE, DEFAULT_RFO_PATCH_SIZE)
    rng = np.random.default_rng(seed)
    patches: list[torch.Tensor] = []
    labels: list[int] = []
    ids: list[str] = []
    patients: list[str] = []

    def add(crop: np.ndarray, label: int, sample_id: str, patient: str) -> None:
        t = torch.from_numpy(crop)
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        patches.append(resize_images(t.unsqueeze(0), out_size)[0])
        labels.append(label)
        ids.append(sample_id)
        patients.append(patient)

    records = sorted(dataset.images, key=lambda r: r.image_id)
    for record in tqdm(records, desc="cutting RFO patches", unit="image", leave=False):
        pixels = read_pixels(resolve_dataset_image(directory, record.file_name), in_chans)
        patient = record.patient_id or f"image-{record.image_id}"
        boxes = []
        for number, obj in enumerate(record.objects):
            x0, y0, x1, y1 = obj.bbox_xyxy
            boxes.append((x0, y0, x1, y1))
            name = f"ann{obj.annotation_id}" if obj.annotation_id is not None else f"obj{number}"
            add(_crop_square(pixels, (x0 + x1) / 2, (y0 + y1) / 2, patch_side(obj.width, obj.height)),
                label_of[obj.category_id], f"image{record.image_id}-{name}", patient)
        height, width = pixels.shape[:2]
        side = min(background_side, height, width)
        for _ in range(100):
            bx = int(rng.integers(0, width - side + 1))
            by = int(rng.integers(0, height - side + 1))
            if not _boxes_overlap((bx, by, bx + side, by + side), boxes):
                add(_crop_square(pixels, bx + side / 2, by + side / 2, side), 0, f"image{record.image_id}-bg0",
                    patient)
                break
        else:
            logger.debug("image %d: no object-free background patch found", record.image_id)
    if not any(label == 0 for label in labels):
        raise UserInputError("no object-free background patch could be cut from any image",
                             file=annotations_file, field=RFO_BACKGROUND_CLASS)
    images = torch.stack(patches)
    return finish_data(images, np.asarray(labels), ids, patients, class_names, image_size=None, in_chans=in_chans)

"""A lazy torch ``Dataset`` over a :class:`~rfo_bench.io.records.DetectionDataset`.

Each item is ``(image, target)`` in the torchvision detection convention:

* ``image``: ``float32`` tensor ``(C, H, W)`` in ``[0, 1]`` (bright = dense), read on access with the
  shared reader (PNG/JPEG 8/16-bit, DICOM incl. MONOCHROME1); ``C`` = ``in_chans`` (the gray image is
  repeated for 3).
* ``target``: ``boxes`` ``(N, 4)`` float32 ``x1 y1 x2 y2`` px, ``labels`` ``(N,)`` int64 (1..K, 0 is
  background, :attr:`RFOTorchDataset.label_names`), ``critical`` ``(N,)`` bool, ``image_id``,
  ``positive`` (image-level label), and ``masks`` ``(N, H, W)`` uint8 when ``with_masks`` (polygon and
  ellipse shapes are rasterised; a box annotation's mask is its filled box).

Augmentation: ``transform`` is an albumentations pipeline that moves boxes (and masks) with the pixels —
build it with :func:`bbox_safe_compose` — and ``intensity_transform`` any callable on the ``(C, H, W)``
tensor, e.g. MONAI's ``RandGaussianNoise`` / ``ScaleIntensityRange``, applied after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from rfo_bench.io.records import DetectionDataset, ImageRecord, RFOObject


def bbox_safe_compose(transforms: Sequence[Any], *, min_visibility: float = 0.0, min_area: float = 0.0) -> Any:
    """An ``albumentations.Compose`` that carries ``pascal_voc`` boxes, their labels and object indices.

    Args:
        transforms: albumentations transforms (spatial ones move boxes and masks along).
        min_visibility: drop boxes keeping less than this fraction of their area.
        min_area: drop boxes smaller than this (px²) after the transform.
    """
    import albumentations as A

    return A.Compose(
        list(transforms),
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels", "object_index"],
                                 min_visibility=min_visibility, min_area=min_area),
    )


def rasterize_object(obj: RFOObject, height: int, width: int) -> np.ndarray:
    """``(H, W)`` uint8 mask of an object's shape (1 inside)."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    x1, y1, x2, y2 = obj.bbox_xyxy
    if obj.shape == "polygon" and len(obj.polygon_xy) >= 6:
        draw.polygon(list(zip(obj.polygon_xy[0::2], obj.polygon_xy[1::2])), fill=1)
    elif obj.shape == "ellipse":
        draw.ellipse([x1, y1, x2, y2], fill=1)
    else:
        draw.rectangle([x1, y1, x2, y2], fill=1)
    return np.asarray(canvas, dtype=np.uint8)


class RFOTorchDataset(Dataset):
    """Lazy torch dataset of images and detection targets (see the module docstring).

    Args:
        dataset: the records.
        transform: albumentations pipeline from :func:`bbox_safe_compose` (or None).
        intensity_transform: callable on the ``(C, H, W)`` tensor (MONAI intensity transforms), or None.
        with_masks: also return per-object masks.
        in_chans: 1 or 3 output channels.
    """

    def __init__(
        self,
        dataset: DetectionDataset,
        *,
        transform: Any | None = None,
        intensity_transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        with_masks: bool = False,
        in_chans: int = 1,
    ) -> None:
        if in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 or 3, got {in_chans}")
        self.dataset = dataset
        self.transform = transform
        self.intensity_transform = intensity_transform
        self.with_masks = with_masks
        self.in_chans = in_chans
        categories = sorted(dataset.categories, key=lambda c: c.id)
        self.label_of = {c.id: k + 1 for k, c in enumerate(categories)}
        self.label_names = ["background", *[c.name for c in categories]]

    def __len__(self) -> int:
        return len(self.dataset.images)

    def record(self, index: int) -> ImageRecord:
        return self.dataset.images[index]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from rfo_bench.io.images import read_image

        record = self.dataset.images[index]
        pixels = read_image(self.dataset.resolve(record)).pixels
        height, width = pixels.shape[:2]
        objects = list(record.objects)
        boxes = np.array([o.bbox_xyxy for o in objects], dtype=np.float32).reshape(-1, 4)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        labels = [self.label_of[o.category_id] for o in objects]
        critical = [self.dataset.is_critical(o) is not False for o in objects]
        masks = [rasterize_object(o, height, width) for o in objects] if self.with_masks else []
        keep_index = list(range(len(objects)))
        if self.transform is not None:
            valid = [k for k in keep_index if boxes[k, 2] > boxes[k, 0] and boxes[k, 3] > boxes[k, 1]]
            call: dict[str, Any] = {
                "image": pixels, "bboxes": boxes[valid], "labels": [labels[k] for k in valid], "object_index": valid,
            }
            if self.with_masks:
                call["masks"] = masks if masks else [np.zeros((height, width), np.uint8)]
            out = self.transform(**call)
            pixels = np.asarray(out["image"], dtype=np.float32)
            keep_index = [int(k) for k in out["object_index"]]
            boxes = np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)
            labels = [int(v) for v in out["labels"]]
            if self.with_masks:
                masks = [np.asarray(out["masks"][k]) for k in keep_index]
            critical = [critical[k] for k in keep_index]
        height, width = pixels.shape[:2]
        image = torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32))
        image = image.unsqueeze(0) if image.ndim == 2 else image.permute(2, 0, 1)
        if self.in_chans == 3 and image.shape[0] == 1:
            image = image.repeat(3, 1, 1)
        if self.intensity_transform is not None:
            image = torch.as_tensor(self.intensity_transform(image), dtype=torch.float32)
        target: dict[str, Any] = {
            "boxes": torch.from_numpy(boxes).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "critical": torch.tensor(critical, dtype=torch.bool),
            "image_id": record.image_id,
            "positive": record.is_positive,
        }
        if self.with_masks:
            stacked = np.stack(masks) if masks else np.zeros((0, height, width), np.uint8)
            target["masks"] = torch.from_numpy(stacked.astype(np.uint8))
        return image, target


def detection_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Collate for detection: lists of images and targets (sizes may differ)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)

"""From :class:`~rfo_bench.io.records.DetectionDataset` to detector training samples.

Images stay ``float32`` in ``[0, 1]`` from the file to the network: 16-bit PNG and DICOM precision is
kept through resizing and augmentation (albumentations on float32 arrays), never quantised to 8 bits.
Several datasets (real + synthetic arms) are trained on together without copying files: a sample is
a ``(dataset, record)`` pair, so each image resolves against its own dataset root.

Category ids (COCO, e.g. the shared vocabulary 1..10) are mapped to contiguous labels ``1..K`` for
the torchvision heads (0 = background) and ``0..K-1`` for YOLO by one :class:`CategoryMap`, stored
with the trained model so predictions come back in the dataset's ids.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rfo_bench.io.images import read_image
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CategoryMap:
    """The detector's classes: COCO categories in label order.

    Attributes:
        categories: ``categories[k]`` is the category of torchvision label ``k + 1`` / YOLO class ``k``.
    """

    categories: tuple[Category, ...]

    @property
    def num_classes(self) -> int:
        """Object classes, background excluded."""
        return len(self.categories)

    def label(self, category_id: int) -> int:
        """Torchvision label (1-based) of a COCO category id."""
        for index, cat in enumerate(self.categories):
            if cat.id == category_id:
                return index + 1
        raise KeyError(category_id)

    def category_id(self, label: int) -> int:
        """COCO category id of a torchvision label (1-based)."""
        return self.categories[label - 1].id

    def to_list(self) -> list[dict[str, object]]:
        return [{"id": c.id, "name": c.name, "critical": c.critical} for c in self.categories]

    @classmethod
    def from_list(cls, items: Sequence[dict[str, object]]) -> CategoryMap:
        return cls(tuple(Category(int(i["id"]), str(i["name"]), i.get("critical")) for i in items))  # type: ignore[arg-type]


def category_map(datasets: Sequence[DetectionDataset]) -> CategoryMap:
    """Union of the categories of ``datasets``, sorted by id.

    Raises:
        UserInputError: two datasets give one id different names.
    """
    by_id: dict[int, Category] = {}
    for dataset in datasets:
        for cat in dataset.categories:
            known = by_id.get(cat.id)
            if known is not None and known.name != cat.name:
                raise UserInputError(
                    f"category id {cat.id} is {known.name!r} in one training set and {cat.name!r} in another; "
                    "relabel to one vocabulary (see rfo_bench.categories)",
                    file=dataset.source or None, field="categories", value=cat.name,
                )
            by_id.setdefault(cat.id, cat)
    if not by_id:
        raise UserInputError("the training data defines no categories", field="categories")
    return CategoryMap(tuple(by_id[i] for i in sorted(by_id)))


def count_objects(datasets: Sequence[DetectionDataset]) -> tuple[int, int]:
    """``(positive images, annotated objects)`` over ``datasets``."""
    images = sum(1 for d in datasets for r in d.images if r.objects)
    objects = sum(len(r.objects) for d in datasets for r in d.images)
    return images, objects


def require_trainable(datasets: Sequence[DetectionDataset], *, what: str = "training split") -> None:
    """Refuse training data without a single annotated object (nothing to learn from).

    Raises:
        UserInputError: no images, or no image with a box.
    """
    sources = ", ".join(sorted({d.source for d in datasets if d.source})) or None
    if not any(len(d) for d in datasets):
        raise UserInputError(f"the {what} has no images", file=sources)
    positives, _ = count_objects(datasets)
    if positives == 0:
        raise UserInputError(
            f"the {what} has no positive image (no annotated object); a detector cannot be trained on negatives only",
            file=sources,
        )


def load_pixels(dataset: DetectionDataset, record: ImageRecord) -> np.ndarray:
    """``float32 [H, W]`` in ``[0, 1]`` of one record (bright = dense), through the shared reader."""
    return read_image(dataset.resolve(record)).pixels


def record_boxes(record: ImageRecord) -> np.ndarray:
    """``float32 [N, 4]`` boxes ``x1, y1, x2, y2`` of a record's valid (non-degenerate) objects."""
    boxes = [o.bbox_xyxy for o in record.objects if o.width > 0 and o.height > 0]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4)


def record_category_ids(record: ImageRecord) -> list[int]:
    return [o.category_id for o in record.objects if o.width > 0 and o.height > 0]


def build_transform(imgsz: int, *, hflip_p: float = 0.0, intensity_jitter: float = 0.0, seed: int | None = None):
    """Albumentations pipeline on float32 images with ``pascal_voc`` (xyxy pixel) boxes.

    Resizes the longest side to ``imgsz`` (aspect kept), then optionally flips and jitters
    brightness/contrast. Works on ``float32 [H, W]`` arrays in ``[0, 1]`` without any 8-bit step.
    """
    import albumentations as A

    steps: list[object] = [A.LongestMaxSize(max_size=imgsz, interpolation=1)]
    if hflip_p > 0:
        steps.append(A.HorizontalFlip(p=hflip_p))
    if intensity_jitter > 0:
        steps.append(A.RandomBrightnessContrast(brightness_limit=intensity_jitter, contrast_limit=intensity_jitter,
                                                p=0.5))
    return A.Compose(
        steps,
        bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"], min_visibility=0.3),
        seed=seed,
    )


class DetectionSamples(torch.utils.data.Dataset):
    """Training samples for the torchvision detectors.

    Args:
        datasets: one or more datasets trained on together.
        categories: label mapping shared by all of them.
        transform: an albumentations pipeline from :func:`build_transform`.

    ``__getitem__`` returns ``(image Tensor[1, h, w] float32 in [0, 1], target)`` where ``target`` has
    ``boxes`` ``Tensor[N, 4]`` (xyxy pixels of the transformed image) and ``labels`` ``Tensor[N]``.
    """

    def __init__(self, datasets: Sequence[DetectionDataset], categories: CategoryMap, transform) -> None:
        self.items: list[tuple[DetectionDataset, ImageRecord]] = [(d, r) for d in datasets for r in d.images]
        self.categories = categories
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        dataset, record = self.items[index]
        pixels = load_pixels(dataset, record)
        height, width = pixels.shape[:2]
        boxes = record_boxes(record)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
        keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        labels = [self.categories.label(c) for c, k in zip(record_category_ids(record), keep, strict=True) if k]
        out = self.transform(image=pixels, bboxes=boxes[keep], labels=labels)
        image = torch.from_numpy(np.ascontiguousarray(out["image"], dtype=np.float32))[None]
        target = {
            "boxes": torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4)),
            "labels": torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1)),
        }
        return image, target


def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[list[Tensor], list[dict[str, Tensor]]]:
    """Keep images of different sizes as a list (torchvision detectors batch them internally)."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)

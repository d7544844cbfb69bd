"""The in-memory classification split: :class:`ClassificationData` and its torch view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vision_unlearn.image_set import ImageSet


@dataclass(frozen=True)
class ClassificationData(ImageSet):
    """A labelled image set held in memory: one label per image.

    The classification form of :class:`~vision_unlearn.image_set.ImageSet` (images, identities,
    vocabulary and sizes are shared with the detection split); what differs is that ``labels`` has
    one entry per *image* and the ids are lists.

    Attributes:
        images: ``float32 [N, C, H, W]`` in ``[0, 1]``, bright = dense for radiographs.
        labels: ``int64 [N]`` class indices into ``class_names``.
        sample_ids: ``N`` unique, stable strings (the ids a deletion request names).
        patient_ids: ``N`` strings; images of one person share one id.
        class_names: the class vocabulary; ``labels`` index it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    sample_ids: list[str]
    patient_ids: list[str]
    class_names: list[str]

    def __post_init__(self) -> None:
        self.check_images()
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        n = int(self.images.shape[0])
        if not (int(self.labels.shape[0]) == len(self.sample_ids) == len(self.patient_ids) == n):
            raise ValueError(
                f"length mismatch: images {n}, labels {int(self.labels.shape[0])}, "
                f"sample_ids {len(self.sample_ids)}, patient_ids {len(self.patient_ids)}"
            )
        self.check_sample_ids()
        if not self.class_names:
            raise ValueError("class_names is empty")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names) - 1}]")

    def class_counts(self) -> np.ndarray:
        """``int64 [num_classes]``: number of samples per class."""
        return np.bincount(self.labels.numpy(), minlength=self.num_classes).astype(np.int64)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ClassificationData:
        """The samples at ``indices`` (in that order), same class vocabulary."""
        index = torch.as_tensor(np.asarray(indices, dtype=np.int64).reshape(-1))
        if index.numel() and (int(index.min()) < -len(self) or int(index.max()) >= len(self)):
            raise IndexError(f"subset index out of range for {len(self)} samples")
        picked = index.tolist()
        return ClassificationData(
            images=self.images[index].contiguous(),
            labels=self.labels[index].contiguous(),
            sample_ids=[self.sample_ids[i] for i in picked],
            patient_ids=[self.patient_ids[i] for i in picked],
            class_names=list(self.class_names),
        )

    def as_dataset(self) -> ClassificationDataset:
        """A :class:`torch.utils.data.Dataset` view (no copy)."""
        return ClassificationDataset(self)


class ClassificationDataset(Dataset):
    """Torch view of :class:`ClassificationData`.

    Items are dicts ``{"images": float32 [C, H, W], "labels": int64 [], "ids": str, "index": int}``;
    the default collate turns a batch into ``images [B, C, H, W]``, ``labels [B]``, ``ids`` (list of
    ``B`` strings) and ``index [B]`` (positions in the underlying data).
    """

    def __init__(self, data: ClassificationData) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {
            "images": self.data.images[i],
            "labels": self.data.labels[i],
            "ids": self.data.sample_ids[i],
            "index": int(i),
        }

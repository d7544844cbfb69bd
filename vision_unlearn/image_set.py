"""What every in-memory image split shares, whatever the task: :class:`ImageSet`.

A classification split (:class:`vision_unlearn.data.ClassificationData`) and a detection split
(:class:`vision_unlearn.adapters.yolo_data.DetectionData`) are one concept with two label layouts:

==================  =====================================  ==============================================
                    ``ClassificationData``                 ``DetectionData``
==================  =====================================  ==============================================
``images``          ``float32 [N, C, H, W]`` as stored      letterboxed to the network input size
                    (or resized), in ``[0, 1]``            (``ratio_pad``, ``original_hw`` map back)
labels              ``labels int64 [N]``: one per image    ``labels int64 [M]`` one per *box*, with
                                                           ``boxes_xyxy [M, 4]``, ``box_image [M]``
identities          ``sample_ids``, ``patient_ids`` (lists) ``sample_ids``, ``patient_ids`` (tuples), plus
                                                           ``instance_ids`` (one per box)
rows of a subset    :meth:`ClassificationData.subset`      :meth:`DetectionData.select` (can also drop
                                                           boxes); :meth:`subset` keeps every box
==================  =====================================  ==============================================

The base holds what does not differ: the image tensor's contract, the identities a deletion request
names (unique ``sample_ids``, one ``patient_id`` per image) and the class vocabulary, with one
validation of them and the derived sizes. Subclasses are frozen dataclasses that declare the fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

_Set = TypeVar("_Set", bound="ImageSet")


class ImageSet:
    """Images held in memory with the identities a deletion request refers to.

    Subclasses are frozen dataclasses with (at least) these fields:

    Attributes:
        images: ``float32 [N, C, H, W]`` in ``[0, 1]``, bright = dense for radiographs.
        sample_ids: ``N`` unique, stable strings naming the images.
        patient_ids: ``N`` strings; images of one person share one id.
        class_names: the class vocabulary the labels index.
    """

    images: Tensor
    sample_ids: Sequence[str]
    patient_ids: Sequence[str]
    class_names: Sequence[str]

    def check_images(self) -> None:
        """Validate the image tensor: ``float32 [N, C, H, W]``.

        Raises:
            ValueError: naming the field and what it got.
        """
        if self.images.ndim != 4 or self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32 [N, C, H, W], got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")

    def check_sample_ids(self) -> None:
        """Validate that ``sample_ids`` are unique (the lengths of the per-image fields are checked by
        the subclass, which names all of them in one message).

        Raises:
            ValueError: duplicate sample ids.
        """
        if len(set(self.sample_ids)) != len(self.sample_ids):
            raise ValueError("sample_ids must be unique")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` of the stored images in pixels (the network input for detection data)."""
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self: _Set, indices: Sequence[int] | np.ndarray | Tensor) -> _Set:
        """The images at ``indices`` (in that order) with their labels; same class vocabulary."""
        raise NotImplementedError

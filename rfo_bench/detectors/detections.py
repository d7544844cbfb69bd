"""The detections of one image: what every detector family returns and sliced inference merges."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections on one image, in that image's pixel coordinates.

    Attributes:
        boxes_xyxy: ``float32 [N, 4]`` ``x1, y1, x2, y2`` in pixels.
        scores: ``float32 [N]`` confidence in ``[0, 1]``.
        category_ids: ``int64 [N]`` COCO category ids of the training data.
    """

    boxes_xyxy: np.ndarray
    scores: np.ndarray
    category_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

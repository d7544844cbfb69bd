"""Which cells of a feature map hold an object: box masks on the feature grid, and images paired
with their boxes (pure tensor code, no model)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor


def box_position_mask(boxes_xyxy: Tensor, box_valid: Tensor, feature_hw: tuple[int, int], image_hw: tuple[int, int],
                      expand_cells: float = 0.0) -> Tensor:
    """Which cells of a feature map belong to the boxes: bool ``[B, h, w]``.

    A cell ``(i, j)`` of an ``h x w`` map over an ``H x W`` input has stride ``(H / h, W / w)`` and
    centre ``((j + 0.5) W / w, (i + 0.5) H / h)``; it belongs to a box when its centre lies in the
    box grown by ``expand_cells`` strides on every side (the anchor rule of YOLO's task-aligned
    assigner for ``expand_cells = 0``). The cell holding a box's centre always belongs to it, so
    a box smaller than a cell still has one.

    Args:
        boxes_xyxy: ``[B, K, 4]`` boxes in input pixels (x right, y down).
        box_valid: bool ``[B, K]`` (``False`` = padding).
        feature_hw: ``(h, w)`` of the map.
        image_hw: ``(H, W)`` of the input.
        expand_cells: margin in strides.

    Hand case: a 4 x 4 map over a 16 x 16 input (stride 4) and the box ``(0, 0, 6, 6)``: centres
    at 2 and 6 are inside, so cells ``(0..1, 0..1)`` belong; with ``expand_cells = 1`` also row and
    column 2 (centre 10 <= 6 + 4).
    """
    h, w = feature_hw
    height, width = image_hw
    stride_y, stride_x = height / h, width / w
    device = boxes_xyxy.device
    cy = (torch.arange(h, device=device, dtype=torch.float64) + 0.5) * stride_y  # [h]
    cx = (torch.arange(w, device=device, dtype=torch.float64) + 0.5) * stride_x  # [w]
    boxes = boxes_xyxy.double()
    x1 = boxes[..., 0] - expand_cells * stride_x
    y1 = boxes[..., 1] - expand_cells * stride_y
    x2 = boxes[..., 2] + expand_cells * stride_x
    y2 = boxes[..., 3] + expand_cells * stride_y
    inside_y = (cy.view(1, 1, h) >= y1.unsqueeze(-1)) & (cy.view(1, 1, h) <= y2.unsqueeze(-1))  # [B, K, h]
    inside_x = (cx.view(1, 1, w) >= x1.unsqueeze(-1)) & (cx.view(1, 1, w) <= x2.unsqueeze(-1))  # [B, K, w]
    inside = inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)  # [B, K, h, w]
    row = ((boxes[..., 1] + boxes[..., 3]) / 2 / stride_y).floor().long().clamp(0, h - 1)
    col = ((boxes[..., 0] + boxes[..., 2]) / 2 / stride_x).floor().long().clamp(0, w - 1)
    centre = (torch.arange(h, device=device).view(1, 1, h, 1) == row[..., None, None]) & \
        (torch.arange(w, device=device).view(1, 1, 1, w) == col[..., None, None])
    return ((inside | centre) & box_valid.bool()[..., None, None]).any(dim=1)


def scale_boxes(boxes_xyxy: Tensor, factor: float) -> Tensor:
    """Boxes ``[..., 4]`` scaled by ``factor`` about their centres (1 = unchanged)."""
    if factor == 1.0:
        return boxes_xyxy
    centre = (boxes_xyxy[..., :2] + boxes_xyxy[..., 2:]) / 2
    half = (boxes_xyxy[..., 2:] - boxes_xyxy[..., :2]) * (factor / 2)
    return torch.cat([centre - half, centre + half], dim=-1)


@dataclass(frozen=True)
class BoxedImages:
    """Images with boxes, the input of :func:`~vision_unlearn.steering.fit_position_steering`.

    Attributes:
        images: ``[N, C, H, W]``.
        boxes_xyxy: ``[N, K, 4]`` input pixels; ``box_valid`` bool ``[N, K]`` (``False`` = padding).
        ignore_xyxy: ``[N, J, 4]`` regions that count neither as object nor as background (e.g. the
            forgotten objects of a class request inside retain images); ``ignore_valid`` ``[N, J]``.
    """

    images: Tensor
    boxes_xyxy: Tensor
    box_valid: Tensor
    ignore_xyxy: Tensor | None = None
    ignore_valid: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if self.images.ndim != 4 or self.boxes_xyxy.shape[:1] != (n,) or self.boxes_xyxy.shape[-1:] != (4,) or \
                self.box_valid.shape != self.boxes_xyxy.shape[:2]:
            raise ValueError(f"expected images [N, C, H, W], boxes [N, K, 4] and valid [N, K], got "
                             f"{tuple(self.images.shape)}, {tuple(self.boxes_xyxy.shape)}, "
                             f"{tuple(self.box_valid.shape)}")

    def __len__(self) -> int:
        return int(self.images.shape[0])


def boxed_images(batch: Mapping[str, Any], ignore: Mapping[str, Any] | None = None) -> BoxedImages:
    """The images and boxes of a detection stream or batch (keys ``images``, ``boxes_xyxy``,
    ``box_labels``; ``-1`` = padding).

    With ``ignore`` (the forget stream), the forget boxes of every image that is also in ``ignore``
    (same pixels: a class or instance request keeps the image in the retain stream without those
    boxes) become ignore regions: they are neither retained objects nor background.
    """
    images = batch["images"]
    boxes, valid = batch["boxes_xyxy"], batch["box_labels"] >= 0
    if ignore is None:
        return BoxedImages(images, boxes, valid)
    ignore_boxes = torch.zeros(images.shape[0], ignore["boxes_xyxy"].shape[1], 4, dtype=boxes.dtype,
                               device=boxes.device)
    ignore_valid = torch.zeros(images.shape[0], ignore["boxes_xyxy"].shape[1], dtype=torch.bool, device=boxes.device)
    for row, match in _same_images(images, ignore["images"]).items():
        ignore_boxes[row] = ignore["boxes_xyxy"][match].to(boxes)
        ignore_valid[row] = (ignore["box_labels"][match] >= 0).to(boxes.device)
    return BoxedImages(images, boxes, valid, ignore_boxes, ignore_valid)


def _same_images(images: torch.Tensor, others: torch.Tensor) -> dict[int, int]:
    """``{row of images: row of others}`` for the images whose pixels are identical."""
    def fingerprint(x: torch.Tensor) -> list[tuple[float, float]]:
        flat = x.flatten(1).double()
        ramp = torch.linspace(0.5, 1.5, flat.shape[1], dtype=torch.float64, device=flat.device)
        return list(zip(flat.sum(1).tolist(), (flat * ramp).sum(1).tolist(), strict=True))

    index: dict[tuple[float, float], list[int]] = {}
    for j, key in enumerate(fingerprint(others)):
        index.setdefault(key, []).append(j)
    matches: dict[int, int] = {}
    for i, key in enumerate(fingerprint(images)):
        for j in index.get(key, []):
            if torch.equal(images[i], others[j].to(images.device)):
                matches[i] = j
                break
    return matches

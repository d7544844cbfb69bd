"""Reading activations of one block: pooled per image, per position inside / outside boxes, the
"unknown" images whose mean activation is the target, and the check that a block feeds the head.

Every collector runs the model in eval mode on its own device without gradients, and restores the
model's mode and removes its hook afterwards.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from vision_unlearn.steering.algebra import channels_last, pool_activations
from vision_unlearn.steering.layers import device_of, resolve_layer
from vision_unlearn.steering.positions import BoxedImages, box_position_mask, scale_boxes

UnknownKind = Literal["noise", "blank", "mixed"]
"""Kinds of images no class owns (:func:`make_unknown_images`)."""


@torch.no_grad()
def collect_pooled_activations(model: nn.Module, layer: str, images: Tensor, batch_size: int = 256) -> Tensor:
    """Pooled activations ``[N, C]`` (float32, CPU) of block ``layer`` for ``[N, C_in, H, W]`` images.

    The model runs in eval mode (restored afterwards) on its own device.

    Raises:
        UserInputError: unknown layer, or a block whose output is not a tensor.
    """
    module = resolve_layer(model, layer)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor):
            raise UserInputError("the block's output is not a single tensor; choose another layer",
                                 field="layer", value=layer)
        captured.append(pool_activations(output).float().cpu())

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    device = device_of(model)
    try:
        for start in range(0, images.shape[0], batch_size):
            model(images[start:start + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was_training)
    return torch.cat(captured) if captured else torch.empty(0, 0)


def make_unknown_images(like: Tensor, count: int, kind: UnknownKind, seed: int) -> Tensor:
    """Images no class owns, shaped like ``like[0]`` (``[count, C, H, W]`` in ``[0, 1]``).

    ``"noise"``: i.i.d. uniform pixels; ``"blank"``: constant images at uniformly drawn grey levels;
    ``"mixed"``: half of each. Drawn from a private generator seeded with ``seed``.
    """
    if like.ndim != 4 or like.shape[0] == 0:
        raise ValueError(f"need at least one [C, H, W] image to copy the shape of, got {tuple(like.shape)}")
    if kind not in ("noise", "blank", "mixed"):
        raise UserInputError("unknown-input kind must be noise, blank or mixed", field="target", value=kind)
    generator = torch.Generator().manual_seed(seed)
    shape = (count, *like.shape[1:])
    noise = torch.rand(shape, generator=generator)
    blank = torch.rand(count, 1, 1, 1, generator=generator).expand(shape).clone()
    if kind == "noise":
        return noise
    if kind == "blank":
        return blank
    half = count // 2
    return torch.cat([noise[:half], blank[half:]])


@torch.no_grad()
def check_feeds_head(model: nn.Module, layer: str, head: nn.Module, images: Tensor) -> None:
    """Check that the pooled output of ``layer`` is the input of ``head`` (on ``images``).

    Raises:
        UserInputError: it is not (another block must be chosen for an ``abstain`` target).
    """
    captured: dict[str, Tensor] = {}

    def block_hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            captured["block"] = pool_activations(output).float()

    def head_hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        captured["head"] = inputs[0].float()

    handles = [resolve_layer(model, layer).register_forward_hook(block_hook), head.register_forward_pre_hook(head_hook)]
    was_training = model.training
    model.eval()
    try:
        model(images.to(device_of(model)))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    block, head_input = captured.get("block"), captured.get("head")
    if block is None or head_input is None or block.shape != head_input.shape or \
            not torch.allclose(block, head_input, rtol=1e-4, atol=1e-5):
        raise UserInputError("an 'abstain' target needs the block whose pooled output feeds the classifier "
                             "(e.g. layer4 of a ResNet, norm of a ViT with average pooling)", field="layer",
                             value=layer)


@torch.no_grad()
def collect_position_features(model: nn.Module, layer: str, data: BoxedImages, batch_size: int = 32,
                              background_per_image: int = 0, generator: torch.Generator | None = None,
                              background_margin: float = 1.0, object_scale: float = 1.0) -> dict[str, Tensor]:
    """Activation vectors ``[n, C]`` (float32, CPU) of block ``layer`` at object and background positions.

    ``"object"``: cells of the boxes scaled by ``object_scale`` about their centres
    (:func:`~vision_unlearn.steering.box_position_mask`, :func:`~vision_unlearn.steering.scale_boxes`)
    outside the ignore regions;
    ``"background"``: cells farther than ``background_margin`` strides from any box or ignore
    region, at most ``background_per_image`` per image (0 = all; drawn with ``generator``). Hooks
    already on the model (earlier steering layers) act as usual.
    """
    module = resolve_layer(model, layer)
    captured: list[Tensor] = []

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        if not isinstance(output, Tensor) or output.ndim != 4:
            raise UserInputError("a per-position gate needs a block whose output is one [B, C, H, W] map",
                                 field="layer", value=layer)
        captured.append(output.detach().float())

    handle = module.register_forward_hook(hook)
    was_training = model.training
    model.eval()
    device = device_of(model)
    image_hw = (int(data.images.shape[2]), int(data.images.shape[3]))
    objects: list[Tensor] = []
    backgrounds: list[Tensor] = []
    try:
        for start in range(0, len(data), batch_size):
            rows = slice(start, start + batch_size)
            captured.clear()
            model(data.images[rows].to(device))
            maps = captured[-1]
            feature_hw = (int(maps.shape[2]), int(maps.shape[3]))
            boxes, valid = data.boxes_xyxy[rows].to(device), data.box_valid[rows].to(device)
            in_box = box_position_mask(scale_boxes(boxes, object_scale), valid, feature_hw, image_hw)
            near = box_position_mask(boxes, valid, feature_hw, image_hw, expand_cells=background_margin)
            if data.ignore_xyxy is not None and data.ignore_valid is not None and data.ignore_xyxy.shape[1] > 0:
                ignore_boxes, ignore_valid = data.ignore_xyxy[rows].to(device), data.ignore_valid[rows].to(device)
                in_box &= ~box_position_mask(ignore_boxes, ignore_valid, feature_hw, image_hw)
                near |= box_position_mask(ignore_boxes, ignore_valid, feature_hw, image_hw,
                                          expand_cells=background_margin)
            last = channels_last(maps)
            objects.append(last[in_box].cpu())
            background = ~near
            if background_per_image > 0:
                for b in range(background.shape[0]):
                    cells = torch.nonzero(background[b].flatten()).flatten()
                    if cells.numel() > background_per_image:
                        keep = torch.randperm(cells.numel(), generator=generator)[:background_per_image]
                        chosen = torch.zeros_like(background[b].flatten())
                        chosen[cells[keep.to(cells.device)]] = True
                        background[b] = chosen.view_as(background[b])
            backgrounds.append(last[background].cpu())
    finally:
        handle.remove()
        model.train(was_training)
    channels = int(objects[0].shape[1]) if objects else 0
    return {"object": torch.cat(objects) if objects else torch.empty(0, channels),
            "background": torch.cat(backgrounds) if backgrounds else torch.empty(0, channels)}

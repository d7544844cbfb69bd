"""Images as tensors: sizes, resizing, channel mapping, stacking read images, and turning pixels
plus labels and identities into a :class:`~vision_unlearn.data.container.ClassificationData`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from toolkit_core.errors import UserInputError
from vision_unlearn.data.container import ClassificationData


def size_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    """``(H, W)`` from an ``int`` side or a pair; ``None`` stays ``None`` (keep the native size)."""
    if image_size is None:
        return None
    if isinstance(image_size, int):
        size = (image_size, image_size)
    else:
        size = tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise UserInputError("image size must be a positive int or (height, width)", field="image_size",
                             value=image_size)
    return size  # type: ignore[return-value]


def resize_images(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` (antialiased when shrinking), clipped back to ``[0, 1]``."""
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    out = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out.clamp_(0.0, 1.0)


def to_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Map ``[N, 1|3, H, W]`` to ``in_chans`` channels (gray repeated, RGB to ITU-R 601 luma)."""
    if in_chans not in (1, 3):
        raise UserInputError("in_chans must be 1 or 3", field="in_chans", value=in_chans)
    have = images.shape[1]
    if have == in_chans:
        return images.contiguous()
    if have == 1:
        return images.repeat(1, 3, 1, 1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
    return (images * weights).sum(dim=1, keepdim=True).contiguous()


def finish_data(
    images: torch.Tensor,
    labels: np.ndarray,
    sample_ids: list[str],
    patient_ids: list[str],
    class_names: list[str],
    *,
    image_size: tuple[int, int] | None,
    in_chans: int,
) -> ClassificationData:
    """Resize ``images`` and map their channels, then wrap them with labels and identities."""
    images = to_channels(resize_images(images.float(), image_size), in_chans)
    return ClassificationData(
        images=images.contiguous(),
        labels=torch.as_tensor(np.asarray(labels, dtype=np.int64)),
        sample_ids=sample_ids,
        patient_ids=patient_ids,
        class_names=class_names,
    )


def stack_images(
    pixels: list[np.ndarray], files: list[Path], size: tuple[int, int] | None, in_chans: int
) -> torch.Tensor:
    """Stack read images (``(H, W)`` or ``(H, W, 3)``) into ``[N, in_chans, H, W]``, resizing each if asked."""
    tensors = []
    for array, file in zip(pixels, files, strict=True):
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        t = to_channels(t.unsqueeze(0), in_chans)
        if size is not None:
            t = resize_images(t, size)
        tensors.append((t[0], file))
    shapes = {tuple(t.shape) for t, _ in tensors}
    if len(shapes) > 1:
        first = tuple(tensors[0][0].shape)
        odd = next(f for t, f in tensors if tuple(t.shape) != first)
        raise UserInputError(
            f"images differ in size or channels ({sorted(shapes)}); pass an image size to resize them",
            file=odd, field="image_size",
        )
    return torch.stack([t for t, _ in tensors])


def read_pixels(file: Path, in_chans: int) -> np.ndarray:
    """The pixels of one image file in ``[0, 1]`` (grey for ``in_chans == 1``), via :mod:`rfo_bench.io.images`."""
    from rfo_bench.io.images import read_image

    return read_image(file, as_gray=in_chans == 1).pixels

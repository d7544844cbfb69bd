"""Detection data for YOLO unlearning: letterboxed images and their boxes, held in memory.

A :class:`DetectionData` holds a whole split at the network input size: every image is letterboxed
exactly as Ultralytics does at validation time (:class:`ultralytics.data.augment.LetterBox`: one
scale factor for both axes, the rest padded with grey 114/255 and centred), and every box is mapped
with the same scale and offset. The mapping back to the stored image is kept per image
(``ratio_pad``) so predictions can be reported in original pixel coordinates.

Boxes are stored flat: ``boxes_xyxy [M, 4]`` with ``box_image [M]`` naming the image of each box,
plus the identities a deletion request refers to: ``sample_ids`` (one per image), ``patient_ids``
(one per image) and ``instance_ids`` (one per box).

:meth:`DetectionData.stream` turns the split into the *stream* the unlearning loop slices
(:func:`vision_unlearn.loop.take` indexes every tensor by image rows, so boxes are padded per image
to the largest count ``K`` of the split):

* ``"images"``: ``float32 [N, C, H, W]`` in ``[0, 1]``, bright = dense;
* ``"index"``: ``int64 [N]`` rows of the images in this data;
* ``"boxes_xyxy"``: ``float32 [N, K, 4]`` boxes in input-pixel coordinates (x right, y down),
  zero rows as padding;
* ``"box_labels"``: ``int64 [N, K]`` class of each box, ``-1`` marks padding;
* ``"labels"``: ``int64 [N]`` the image's *reference class*: the most frequent class among its
  boxes (smallest id on ties; 0 for an image without boxes). Image-level objectives of the
  methods (``log(1 - p_y)``, random relabelling) read it;
* ``"image_labels"``: ``int64 [N]`` an untouched copy of ``"labels"``. A method that replaces
  ``"labels"`` (random relabelling) thereby shifts every box class of that image by the same
  offset: the adapter trains box classes ``(box_labels + labels - image_labels) mod num_classes``,
  so each relabelled box gets a class other than its own.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from toolkit_core.errors import UserInputError
from vision_unlearn.image_set import ImageSet

logger = logging.getLogger(__name__)

LETTERBOX_PAD_VALUE = 114 / 255
"""Grey level of letterbox padding in ``[0, 1]`` (Ultralytics pads 8-bit images with 114)."""


@dataclass(frozen=True)
class LetterboxParams:
    """How one image was letterboxed: ``x_input = x_original * gain + pad_x`` (same for y with pad_y).

    Attributes:
        gain: scale factor input / original (equal on both axes).
        pad_x: pixels added on the left.
        pad_y: pixels added on the top.
        original_hw: ``(height, width)`` of the original image in pixels.
    """

    gain: float
    pad_x: int
    pad_y: int
    original_hw: tuple[int, int]


def letterbox(pixels: np.ndarray, size_hw: tuple[int, int]) -> tuple[np.ndarray, LetterboxParams]:
    """Resize with unchanged aspect ratio and pad to ``size_hw``, as Ultralytics' ``LetterBox`` does.

    Args:
        pixels: ``float32`` ``(H, W)`` or ``(H, W, C)`` image in ``[0, 1]``.
        size_hw: output ``(height, width)`` in pixels.

    Returns:
        ``(image (h, w, C) float32, params)``; ``C`` is 1 for a 2-D input.
    """
    from rfo_bench.detectors.ultralytics_setup import import_ultralytics

    import_ultralytics()
    from ultralytics.data.augment import LetterBox

    image = np.ascontiguousarray(pixels, dtype=np.float32)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3:
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {pixels.shape}")
    boxer = LetterBox(new_shape=size_hw, auto=False, scale_fill=False, scaleup=True, center=True,
                      padding_value=LETTERBOX_PAD_VALUE)
    labels = {"img": image}
    params = boxer.get_params(labels)
    out = boxer.apply_image(labels, params)["img"]
    if out.ndim == 2:
        out = out[..., None]
    gain = float(params["ratio"][0])
    return out.astype(np.float32), LetterboxParams(gain=gain, pad_x=int(params["left"]), pad_y=int(params["top"]),
                                                    original_hw=(int(image.shape[0]), int(image.shape[1])))


def boxes_to_input(boxes_xyxy: np.ndarray, params: LetterboxParams) -> np.ndarray:
    """Map ``[K, 4]`` original-pixel boxes into letterboxed input pixels."""
    out = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4) * params.gain
    out[:, [0, 2]] += params.pad_x
    out[:, [1, 3]] += params.pad_y
    return out


def boxes_to_original(boxes_xyxy: Tensor, ratio_pad: Tensor, original_hw: Tensor) -> Tensor:
    """Map ``[K, 4]`` input-pixel boxes of one image back to original pixels, clipped to the image.

    Args:
        boxes_xyxy: ``Tensor[K, 4]`` in letterboxed input pixels.
        ratio_pad: ``Tensor[3]``: gain, pad_x, pad_y (see :class:`LetterboxParams`).
        original_hw: ``Tensor[2]``: original height and width in pixels.
    """
    gain, pad_x, pad_y = (float(v) for v in ratio_pad)
    out = boxes_xyxy.clone().float()
    out[:, [0, 2]] = (out[:, [0, 2]] - pad_x) / gain
    out[:, [1, 3]] = (out[:, [1, 3]] - pad_y) / gain
    height, width = (float(v) for v in original_hw)
    out[:, [0, 2]] = out[:, [0, 2]].clamp(0, width)
    out[:, [1, 3]] = out[:, [1, 3]].clamp(0, height)
    return out


def _to_channels(image: np.ndarray, in_chans: int) -> np.ndarray:
    """``(h, w, C)`` -> ``(h, w, in_chans)``: grey replicated to 3 channels, RGB averaged to 1."""
    if image.shape[2] == in_chans:
        return image
    if in_chans == 3 and image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    if in_chans == 1:
        return image.mean(axis=2, keepdims=True)
    raise ValueError(f"cannot turn {image.shape[2]} channels into {in_chans}")


@dataclass(frozen=True)
class DetectionData(ImageSet):
    """A detection split held in memory at the network input size: labels per box.

    The detection form of :class:`~vision_unlearn.image_set.ImageSet` (images, identities,
    vocabulary and sizes are shared with the classification split); what differs is that ``labels``
    has one entry per *box* (``boxes_xyxy``, ``box_image``, ``instance_ids``), the images are
    letterboxed (``ratio_pad``, ``original_hw`` map boxes back), and the ids are tuples.

    Attributes:
        images: ``float32 [N, C, H, W]`` letterboxed images in ``[0, 1]``.
        boxes_xyxy: ``float32 [M, 4]`` boxes in input pixels.
        labels: ``int64 [M]`` class index of each box into ``class_names``.
        box_image: ``int64 [M]`` image row of each box.
        instance_ids: ``M`` unique strings naming the boxes (annotation ids).
        sample_ids: ``N`` unique strings naming the images (file names).
        patient_ids: ``N`` strings; images of one person share one id.
        class_names: the class vocabulary.
        ratio_pad: ``float32 [N, 3]``: letterbox gain, pad_x, pad_y of each image.
        original_hw: ``int64 [N, 2]``: height and width of each stored image.
    """

    images: Tensor
    boxes_xyxy: Tensor
    labels: Tensor
    box_image: Tensor
    instance_ids: tuple[str, ...]
    sample_ids: tuple[str, ...]
    patient_ids: tuple[str, ...]
    class_names: tuple[str, ...]
    ratio_pad: Tensor
    original_hw: Tensor

    def __post_init__(self) -> None:
        self.check_images()
        n, m = int(self.images.shape[0]), int(self.boxes_xyxy.shape[0])
        if tuple(self.boxes_xyxy.shape) != (m, 4):
            raise ValueError(f"boxes_xyxy must be [M, 4], got {tuple(self.boxes_xyxy.shape)}")
        if not (self.labels.shape[0] == self.box_image.shape[0] == len(self.instance_ids) == m):
            raise ValueError(f"per-box lengths differ: boxes {m}, labels {self.labels.shape[0]}, "
                             f"box_image {self.box_image.shape[0]}, instance_ids {len(self.instance_ids)}")
        if not (len(self.sample_ids) == len(self.patient_ids) == self.ratio_pad.shape[0]
                == self.original_hw.shape[0] == n):
            raise ValueError(f"per-image lengths differ: images {n}, sample_ids {len(self.sample_ids)}, "
                             f"patient_ids {len(self.patient_ids)}, ratio_pad {self.ratio_pad.shape[0]}")
        self.check_sample_ids()
        if len(set(self.instance_ids)) != m:
            raise ValueError("instance_ids must be unique")
        if m and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names) - 1}]")
        if m and (int(self.box_image.min()) < 0 or int(self.box_image.max()) >= n):
            raise ValueError(f"box_image must lie in [0, {n - 1}]")

    @property
    def num_boxes(self) -> int:
        return int(self.boxes_xyxy.shape[0])

    def boxes_of(self, row: int) -> tuple[Tensor, Tensor]:
        """``(boxes_xyxy [k, 4], labels [k])`` of image ``row`` in input pixels."""
        keep = self.box_image == row
        return self.boxes_xyxy[keep], self.labels[keep]

    def select(self, rows: Sequence[int] | np.ndarray | Tensor, keep_boxes: Tensor | None = None) -> DetectionData:
        """The images at ``rows`` (in that order) with their boxes, optionally only boxes in ``keep_boxes``.

        Args:
            rows: image rows to keep.
            keep_boxes: ``bool [M]`` mask over this data's boxes; ``None`` keeps every box.
        """
        rows_t = torch.as_tensor(np.asarray(rows, dtype=np.int64).reshape(-1))
        new_row = torch.full((len(self),), -1, dtype=torch.int64)
        new_row[rows_t] = torch.arange(rows_t.numel())
        mask = new_row[self.box_image] >= 0
        if keep_boxes is not None:
            mask &= keep_boxes.to(torch.bool)
        box_rows = torch.nonzero(mask).flatten()
        # order the boxes by their new image row so batches slice contiguously
        order = torch.argsort(new_row[self.box_image[box_rows]], stable=True)
        box_rows = box_rows[order]
        idx = rows_t.tolist()
        return DetectionData(
            images=self.images[rows_t], boxes_xyxy=self.boxes_xyxy[box_rows], labels=self.labels[box_rows],
            box_image=new_row[self.box_image[box_rows]], instance_ids=tuple(self.instance_ids[i] for i in box_rows),
            sample_ids=tuple(self.sample_ids[i] for i in idx), patient_ids=tuple(self.patient_ids[i] for i in idx),
            class_names=self.class_names, ratio_pad=self.ratio_pad[rows_t], original_hw=self.original_hw[rows_t],
        )

    def subset(self, indices: Sequence[int] | np.ndarray | Tensor) -> DetectionData:
        """The images at ``indices`` (in that order) with all their boxes (:meth:`select`)."""
        return self.select(indices)

    def stream(self) -> dict[str, Tensor]:
        """The whole split as one padded batch-like mapping (keys in the module docstring)."""
        n = len(self)
        counts = torch.bincount(self.box_image, minlength=n) if self.num_boxes else torch.zeros(n, dtype=torch.int64)
        width = max(1, int(counts.max()) if n else 1)
        boxes = torch.zeros(n, width, 4, dtype=torch.float32)
        box_labels = torch.full((n, width), -1, dtype=torch.int64)
        starts = torch.cumsum(counts, 0) - counts
        order = torch.argsort(self.box_image, stable=True)
        owner = self.box_image[order]
        slot = torch.arange(order.numel()) - starts[owner]
        boxes[owner, slot] = self.boxes_xyxy[order]
        box_labels[owner, slot] = self.labels[order]
        reference = reference_labels(box_labels, self.num_classes)
        return {"images": self.images, "index": torch.arange(n, dtype=torch.int64), "labels": reference,
                "image_labels": reference.clone(), "boxes_xyxy": boxes, "box_labels": box_labels}

    def batch(self, rows: Sequence[int] | Tensor) -> dict[str, Tensor]:
        """Rows ``rows`` of :meth:`stream` (what the loop hands a method for those images)."""
        rows_t = torch.as_tensor(rows, dtype=torch.int64).reshape(-1)
        return {key: value[rows_t] for key, value in self.stream().items()}

    def original_boxes(self, row: int) -> tuple[Tensor, Tensor]:
        """``(boxes_xyxy [k, 4], labels [k])`` of image ``row`` in original-image pixels."""
        boxes, labels = self.boxes_of(row)
        return boxes_to_original(boxes, self.ratio_pad[row], self.original_hw[row]), labels

    @staticmethod
    def from_arrays(
        images: Sequence[np.ndarray],
        boxes_xyxy: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        class_names: Sequence[str],
        image_size: int | tuple[int, int],
        in_chans: int = 1,
        sample_ids: Sequence[str] | None = None,
        patient_ids: Sequence[str] | None = None,
        instance_ids: Sequence[Sequence[str]] | None = None,
    ) -> DetectionData:
        """Letterbox images given at their stored size, with boxes in stored-image pixels.

        Args:
            images: ``N`` arrays ``(H_i, W_i)`` or ``(H_i, W_i, C)`` float in ``[0, 1]``.
            boxes_xyxy: ``N`` arrays ``[k_i, 4]`` in pixels of the stored image.
            labels: ``N`` arrays ``[k_i]`` of class indices into ``class_names``.
            class_names: the class vocabulary.
            image_size: network input side, or ``(height, width)``; multiples of 32.
            in_chans: 1 (grey) or 3 channels.
            sample_ids: image names (default ``"0"``, ``"1"``, ...).
            patient_ids: patient of each image (default: every image its own patient).
            instance_ids: names of the boxes of each image (default ``"<sample_id>@<k>"``; not ``#``,
                which starts a comment in id files).
        """
        size_hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if any(s % 32 or s <= 0 for s in size_hw):
            raise UserInputError("the image size must be a positive multiple of 32 (the largest YOLO stride)",
                                 field="image_size", value=image_size)
        if in_chans not in (1, 3):
            raise UserInputError("in_chans must be 1 or 3", field="in_chans", value=in_chans)
        n = len(images)
        if not (len(boxes_xyxy) == len(labels) == n):
            raise ValueError(f"got {n} images, {len(boxes_xyxy)} box arrays and {len(labels)} label arrays")
        sample_ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(n)]
        patient_ids = list(patient_ids) if patient_ids is not None else list(sample_ids)
        stacked, all_boxes, all_labels, box_image, box_ids, ratio_pad, original_hw = [], [], [], [], [], [], []
        for i, pixels in enumerate(images):
            image, params = letterbox(pixels, size_hw)  # type: ignore[arg-type]
            stacked.append(torch.from_numpy(_to_channels(image, in_chans).transpose(2, 0, 1).copy()))
            b = np.asarray(boxes_xyxy[i], dtype=np.float32).reshape(-1, 4)
            lab = np.asarray(labels[i], dtype=np.int64).reshape(-1)
            if lab.shape[0] != b.shape[0]:
                raise ValueError(f"image {sample_ids[i]}: {b.shape[0]} boxes but {lab.shape[0]} labels")
            all_boxes.append(boxes_to_input(b, params))
            all_labels.append(lab)
            box_image.append(np.full(b.shape[0], i, dtype=np.int64))
            names = (list(instance_ids[i]) if instance_ids is not None
                     else [f"{sample_ids[i]}@{k}" for k in range(b.shape[0])])
            box_ids.extend(names)
            ratio_pad.append((params.gain, params.pad_x, params.pad_y))
            original_hw.append(params.original_hw)
        return DetectionData(
            images=torch.stack(stacked) if stacked else torch.empty(0, in_chans, *size_hw),
            boxes_xyxy=torch.from_numpy(np.concatenate(all_boxes) if all_boxes else np.zeros((0, 4), np.float32)),
            labels=torch.from_numpy(np.concatenate(all_labels) if all_labels else np.zeros(0, np.int64)),
            box_image=torch.from_numpy(np.concatenate(box_image) if box_image else np.zeros(0, np.int64)),
            instance_ids=tuple(box_ids), sample_ids=tuple(sample_ids), patient_ids=tuple(patient_ids),
            class_names=tuple(class_names),
            ratio_pad=torch.tensor(ratio_pad, dtype=torch.float32).reshape(-1, 3),
            original_hw=torch.tensor(original_hw, dtype=torch.int64).reshape(-1, 2),
        )


def reference_labels(box_labels: Tensor, num_classes: int) -> Tensor:
    """``int64 [N]`` most frequent class per row of ``box_labels [N, K]`` (``-1`` = padding).

    Ties go to the smallest class id; a row without boxes gets class 0.
    """
    n = box_labels.shape[0]
    valid = box_labels >= 0
    counts = torch.zeros(n, num_classes, dtype=torch.int64)
    rows = torch.arange(n).unsqueeze(1).expand_as(box_labels)
    counts.index_put_((rows[valid], box_labels[valid]), torch.ones(int(valid.sum()), dtype=torch.int64),
                      accumulate=True)
    return torch.argmax(counts, dim=1)  # first maximum: smallest id on ties, 0 for empty rows


def detection_data_from_records(dataset: Any, image_size: int | tuple[int, int], in_chans: int = 1,
                                class_names: Sequence[str] | None = None) -> DetectionData:
    """Read every image of an :class:`rfo_bench.io.records.DetectionDataset` and letterbox it.

    Sample ids are the stored file names (relative POSIX paths), instance ids the COCO annotation
    ids (or ``"<file_name>@<k>"`` where the source has none), patient ids the record's
    ``patient_id`` or, failing that, the pseudonymous DICOM patient key, or the file name.

    Args:
        dataset: the loaded dataset (COCO, YOLO or any layout ``rfo_bench`` reads).
        image_size: network input side or ``(height, width)``.
        in_chans: 1 or 3.
        class_names: the model's class vocabulary in index order; default: the dataset's
            categories sorted by id. A dataset category outside it is an error.
    """
    from rfo_bench.io.images import read_image

    categories = sorted(dataset.categories, key=lambda c: c.id)
    names = list(class_names) if class_names is not None else [c.name for c in categories]
    index_of = {name: i for i, name in enumerate(names)}
    id_to_index: dict[int, int] = {}
    for cat in categories:
        if cat.name not in index_of:
            raise UserInputError(f"dataset category is not a class of the model; model classes: {', '.join(names)}",
                                 file=getattr(dataset, "root", None), field="categories", value=cat.name)
        id_to_index[cat.id] = index_of[cat.name]
    images, boxes, labels, sample_ids, patient_ids, instance_ids = [], [], [], [], [], []
    try:
        from tqdm import tqdm

        records = tqdm(dataset.images, desc="reading images", leave=False, disable=len(dataset.images) < 50)
    except ImportError:  # pragma: no cover
        records = dataset.images
    for record in records:
        loaded = read_image(dataset.resolve(record), as_gray=in_chans == 1)
        images.append(loaded.pixels)
        boxes.append(np.array([o.bbox_xyxy for o in record.objects], dtype=np.float32).reshape(-1, 4))
        labels.append(np.array([id_to_index[o.category_id] for o in record.objects], dtype=np.int64))
        sample_ids.append(str(record.file_name))
        patient_ids.append(str(record.patient_id or loaded.patient_key or record.file_name))
        instance_ids.append([str(o.annotation_id) if o.annotation_id is not None else f"{record.file_name}@{k}"
                             for k, o in enumerate(record.objects)])
    return DetectionData.from_arrays(images, boxes, labels, names, image_size, in_chans, sample_ids, patient_ids,
                                     instance_ids)


def save_detection_cache(data: DetectionData, path: str | os.PathLike[str]) -> Path:
    """Cache ``data`` in one ``torch.save`` file (loadable with ``weights_only=True``)."""
    from toolkit_core.utils import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({k: getattr(data, k) for k in data.__dataclass_fields__}, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def load_detection_cache(path: str | os.PathLike[str]) -> DetectionData:
    """Read a file written by :func:`save_detection_cache`."""
    if not Path(path).is_file():
        raise UserInputError("cached detection data not found", file=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise UserInputError(f"damaged or unreadable detection-data cache ({type(err).__name__})", file=path) from None
    fields = set(DetectionData.__dataclass_fields__)
    if not isinstance(state, dict) or set(state) != fields:
        raise UserInputError(f"not a detection-data cache (expected the fields {', '.join(sorted(fields))})",
                             file=path)
    return DetectionData(**{k: tuple(v) if isinstance(v, list) else v for k, v in state.items()})

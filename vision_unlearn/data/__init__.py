"""Image-classification data for unlearning experiments: one in-memory container, one loader.

:class:`ClassificationData` holds a whole split in memory (``images`` ``float32 [N, C, H, W]`` in
``[0, 1]``, ``labels`` ``int64 [N]``) together with the two kinds of identity a deletion request
refers to: a stable, unique ``sample_id`` per image and a ``patient_id`` grouping images of one
person. :func:`load_classification_data` turns a dataset *spec* into ``{"train", "test"}`` splits:

============================  ================================================================
spec                          source
============================  ================================================================
``digits``                    scikit-learn's built-in 8x8 handwritten digits (real, 1797 images)
``folder:DIR``                ImageFolder layout ``DIR/<class>/<image>`` (PNG/JPEG/TIFF/DICOM)
``csv:FILE``                  a CSV with columns ``image_path,label[,patient_id][,split]``
``cifar10:DIR``               the local CIFAR-10 python-pickle batches (never downloaded)
``cifar100:DIR``              the local CIFAR-100 python-pickle files (fine labels)
``rfo-patches:DIR``           object / background patches cut from a COCO dataset directory
============================  ================================================================

Splits are made at *patient* level: no patient has images in both ``train`` and ``test``, so a
forgotten patient can never leak back through the test set. When every image is its own patient
this is an ordinary stratified split (:func:`sklearn.model_selection.train_test_split`); otherwise a
seeded greedy assignment of whole patients keeps each class's test share close to
``test_fraction`` (:func:`grouped_stratified_split`). CIFAR keeps its official train/test split and a
CSV with a ``split`` column keeps the split it states.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

DIGITS_PATIENT_BLOCK = 5
"""sklearn's digits carry no writer ids; consecutive blocks of this many samples (in the order
``load_digits`` returns them) form one pseudo-patient, ``digits-p0000`` holding samples 0-4 and so on.
The grouping is deterministic and only exists so that patient-level requests can be exercised."""

RFO_BACKGROUND_CLASS = "none"
"""Label of the background patches of the ``rfo-patches`` set."""

RFO_PATCH_CONTEXT = 1.5
"""An object patch is a square of side ``RFO_PATCH_CONTEXT * max(bbox_w, bbox_h)`` around the box centre."""

RFO_MIN_PATCH_PX = 16
"""Smallest patch side in source pixels, so that tiny objects (needles) keep some context."""

DEFAULT_RFO_PATCH_SIZE = 64
"""Side of the ``rfo-patches`` images when ``image_size`` is not given."""

SPEC_KINDS = ("digits", "folder", "csv", "cifar10", "cifar100", "rfo-patches")


@dataclass(frozen=True)
class ClassificationData:
    """A labelled image set held in memory.

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
        if self.images.ndim != 4:
            raise ValueError(f"images must be [N, C, H, W], got shape {tuple(self.images.shape)}")
        if self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32, got {self.images.dtype}")
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1:
            raise ValueError(f"labels must be int64 [N], got {self.labels.dtype} {tuple(self.labels.shape)}")
        n = int(self.images.shape[0])
        if not (int(self.labels.shape[0]) == len(self.sample_ids) == len(self.patient_ids) == n):
            raise ValueError(
                f"length mismatch: images {n}, labels {int(self.labels.shape[0])}, "
                f"sample_ids {len(self.sample_ids)}, patient_ids {len(self.patient_ids)}"
            )
        if len(set(self.sample_ids)) != n:
            raise ValueError("sample_ids must be unique")
        if not self.class_names:
            raise ValueError("class_names is empty")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= len(self.class_names)):
            raise ValueError(f"labels must lie in [0, {len(self.class_names) - 1}]")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        """``(H, W)`` in pixels."""
        return int(self.images.shape[2]), int(self.images.shape[3])

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


# --------------------------------------------------------------------------------------------- splits


def grouped_stratified_split(
    labels: np.ndarray, groups: Sequence[str], *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split samples into train/test so that no group is on both sides, stratified by class.

    When every sample is its own group this is :func:`sklearn.model_selection.train_test_split` with
    ``stratify=labels``. Otherwise groups are visited in a seeded random order, largest first, and a
    group goes to the test side when that moves the per-class test counts closer (in L1) to
    ``test_fraction * class_count``.

    Args:
        labels: ``int [N]`` class labels.
        groups: ``N`` group (patient) ids.
        test_fraction: wanted share of samples in the test split, in ``(0, 1)``.
        seed: seed of the split.

    Returns:
        ``(train_index, test_index)``: sorted ``int64`` arrays partitioning ``range(N)``.
    """
    from sklearn.model_selection import train_test_split

    labels = np.asarray(labels, dtype=np.int64)
    n = labels.shape[0]
    if not 0.0 < test_fraction < 1.0:
        raise UserInputError("test fraction must lie strictly between 0 and 1", field="test_fraction",
                             value=test_fraction)
    if len(groups) != n:
        raise ValueError(f"{len(groups)} groups for {n} labels")
    if n < 2:
        raise UserInputError("at least two samples are needed for a train/test split", field="dataset", value=n)
    counts = np.bincount(labels)
    present = counts[counts > 0]
    unique_groups, group_of = np.unique(np.asarray(groups, dtype=object).astype(str), return_inverse=True)
    if unique_groups.shape[0] == n:
        stratify = labels if present.min() >= 2 else None
        try:
            train, test = train_test_split(np.arange(n), test_size=test_fraction, random_state=seed,
                                           stratify=stratify)
        except ValueError as err:  # e.g. fewer test samples than classes
            raise UserInputError(f"cannot split {n} samples of {present.size} classes: {err}",
                                 field="test_fraction", value=test_fraction) from None
        return np.sort(train).astype(np.int64), np.sort(test).astype(np.int64)
    num_classes = int(labels.max()) + 1
    per_group = np.zeros((unique_groups.shape[0], num_classes), dtype=np.int64)
    np.add.at(per_group, (group_of, labels), 1)
    target = test_fraction * counts
    rng = np.random.default_rng(seed)
    order = rng.permutation(unique_groups.shape[0])
    order = order[np.argsort(-per_group[order].sum(axis=1), kind="stable")]
    test_counts = np.zeros(num_classes, dtype=np.float64)
    in_test = np.zeros(unique_groups.shape[0], dtype=bool)
    for g in order:
        before = np.abs(test_counts - target).sum()
        after = np.abs(test_counts + per_group[g] - target).sum()
        if after < before:
            in_test[g] = True
            test_counts += per_group[g]
    if not in_test.any() or in_test.all():
        raise UserInputError(
            f"cannot split {unique_groups.shape[0]} patients into train and test with test fraction "
            f"{test_fraction}", field="test_fraction", value=test_fraction,
        )
    test_mask = in_test[group_of]
    return np.flatnonzero(~test_mask).astype(np.int64), np.flatnonzero(test_mask).astype(np.int64)


# --------------------------------------------------------------------------------------------- helpers


def _size_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
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


def _resize(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    """Bilinear resize of ``[N, C, H, W]`` (antialiased when shrinking), clipped back to ``[0, 1]``."""
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    shrinking = size[0] < images.shape[-2] or size[1] < images.shape[-1]
    out = F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out.clamp_(0.0, 1.0)


def _to_channels(images: torch.Tensor, in_chans: int) -> torch.Tensor:
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


def _finish(
    images: torch.Tensor,
    labels: np.ndarray,
    sample_ids: list[str],
    patient_ids: list[str],
    class_names: list[str],
    *,
    image_size: tuple[int, int] | None,
    in_chans: int,
) -> ClassificationData:
    images = _to_channels(_resize(images.float(), image_size), in_chans)
    return ClassificationData(
        images=images.contiguous(),
        labels=torch.as_tensor(np.asarray(labels, dtype=np.int64)),
        sample_ids=sample_ids,
        patient_ids=patient_ids,
        class_names=class_names,
    )


def _split(
    data: ClassificationData, *, test_fraction: float, seed: int
) -> dict[str, ClassificationData]:
    train, test = grouped_stratified_split(
        data.labels.numpy(), data.patient_ids, test_fraction=test_fraction, seed=seed
    )
    out = {"train": data.subset(train), "test": data.subset(test)}
    for name, part in out.items():
        missing = [data.class_names[c] for c in np.flatnonzero(part.class_counts() == 0)]
        if missing:
            logger.warning("the %s split has no samples of class(es) %s (patients are not split across "
                           "train and test)", name, ", ".join(missing))
    return out


def _stack_loaded(
    pixels: list[np.ndarray], files: list[Path], size: tuple[int, int] | None, in_chans: int
) -> torch.Tensor:
    """Stack read images (``(H, W)`` or ``(H, W, 3)``) into ``[N, in_chans, H, W]``, resizing each if asked."""
    tensors = []
    for array, file in zip(pixels, files, strict=True):
        t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        t = _to_channels(t.unsqueeze(0), in_chans)
        if size is not None:
            t = _resize(t, size)
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


def _read_pixels(file: Path, in_chans: int) -> np.ndarray:
    from rfo_bench.io.images import read_image

    return read_image(file, as_gray=in_chans == 1).pixels


# --------------------------------------------------------------------------------------------- sources


def _load_digits(size: tuple[int, int] | None, in_chans: int) -> ClassificationData:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    n = images.shape[0]
    return _finish(
        images,
        bunch.target.astype(np.int64),
        [f"digits-{i:04d}" for i in range(n)],
        [f"digits-p{i // DIGITS_PATIENT_BLOCK:04d}" for i in range(n)],
        [str(c) for c in bunch.target_names],
        image_size=size,
        in_chans=in_chans,
    )


def _load_folder(directory: Path, size: tuple[int, int] | None, in_chans: int) -> ClassificationData:
    from rfo_bench.io.images import IMAGE_SUFFIXES, read_image

    if not directory.is_dir():
        raise UserInputError("image folder does not exist (expected DIR/<class>/<image>)", file=directory)
    class_dirs = sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserInputError("no class sub-directories found (expected DIR/<class>/<image>)", file=directory)
    files: list[Path] = []
    labels: list[int] = []
    for label, class_dir in enumerate(class_dirs):
        found = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise UserInputError(
                f"class has no images (looked for {', '.join(IMAGE_SUFFIXES)})", file=class_dir, field="class",
                value=class_dir.name,
            )
        files.extend(found)
        labels.extend([label] * len(found))
    pixels, patients, ids = [], [], []
    for file in tqdm(files, desc=f"reading {directory.name}", unit="image", leave=False):
        loaded = read_image(file, as_gray=in_chans == 1)
        pixels.append(loaded.pixels)
        sample_id = file.relative_to(directory).as_posix()
        ids.append(sample_id)
        patients.append(loaded.patient_key or sample_id)
    images = _stack_loaded(pixels, files, size, in_chans)
    return _finish(images, np.asarray(labels), ids, patients, [d.name for d in class_dirs],
                   image_size=None, in_chans=in_chans)


def _class_order(names: set[str]) -> list[str]:
    """Numeric order when every label is an integer, otherwise lexicographic."""
    try:
        return sorted(names, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(names)


def _load_csv(
    file: Path, root: Path | None, size: tuple[int, int] | None, in_chans: int
) -> tuple[ClassificationData, list[str] | None]:
    if not file.is_file():
        raise UserInputError("CSV file does not exist", file=file)
    with open(file, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v or "").strip() for k, v in row.items()} for row in reader]
    for required in ("image_path", "label"):
        if required not in fields:
            raise UserInputError(f"missing column; expected columns image_path,label[,patient_id][,split] "
                                 f"(found {', '.join(fields) or 'none'})", file=file, field=required)
    if not rows:
        raise UserInputError("CSV has no rows", file=file)
    base = root if root is not None else file.parent
    seen: set[str] = set()
    for line, row in enumerate(rows, start=2):
        if not row["image_path"]:
            raise UserInputError(f"empty image path on line {line}", file=file, field="image_path")
        if not row["label"]:
            raise UserInputError(f"empty label on line {line}", file=file, field="label")
        if row["image_path"] in seen:
            raise UserInputError(f"duplicate image path on line {line}", file=file, field="image_path",
                                 value=row["image_path"])
        seen.add(row["image_path"])
    class_names = _class_order({row["label"] for row in rows})
    index_of = {name: i for i, name in enumerate(class_names)}
    paths = [Path(row["image_path"]) if Path(row["image_path"]).is_absolute() else base / row["image_path"]
             for row in rows]
    for line, path in enumerate(paths, start=2):
        if not path.is_file():
            raise UserInputError(f"image on line {line} does not exist", file=file, field="image_path",
                                 value=str(path))
    pixels = [_read_pixels(p, in_chans) for p in tqdm(paths, desc=f"reading {file.name}", unit="image",
                                                       leave=False)]
    images = _stack_loaded(pixels, paths, size, in_chans)
    ids = [row["image_path"] for row in rows]
    has_patient = "patient_id" in fields
    patients = [(row["patient_id"] or row["image_path"]) if has_patient else row["image_path"] for row in rows]
    splits: list[str] | None = None
    if "split" in fields:
        splits = []
        for line, row in enumerate(rows, start=2):
            value = row["split"].lower()
            if value not in ("train", "test"):
                raise UserInputError(f"split on line {line} must be 'train' or 'test'", file=file, field="split",
                                     value=row["split"])
            splits.append(value)
    data = _finish(images, np.asarray([index_of[row["label"]] for row in rows]), ids, patients, class_names,
                   image_size=None, in_chans=in_chans)
    return data, splits


_CIFAR_FILES = {
    "cifar10": (("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
                ("test_batch",), "batches.meta", b"labels", b"label_names", "cifar-10-batches-py"),
    "cifar100": (("train",), ("test",), "meta", b"fine_labels", b"fine_label_names", "cifar-100-python"),
}


def _load_cifar(kind: str, directory: Path, size: tuple[int, int] | None, in_chans: int) -> dict[str, ClassificationData]:
    from vision_unlearn.cifar_pickle import read_cifar_batch

    train_names, test_names, meta_name, label_key, names_key, subdir = _CIFAR_FILES[kind]
    if (directory / subdir).is_dir():
        directory = directory / subdir
    expected = [*train_names, *test_names, meta_name]
    missing = [name for name in expected if not (directory / name).is_file()]
    if missing:
        raise UserInputError(
            f"{kind} python batches not found; expected {', '.join(expected)} in this directory "
            f"(the 'python version' archive, extracted; nothing is downloaded)", file=directory,
            field="missing", value=missing,
        )
    meta = read_cifar_batch(directory / meta_name)
    if names_key not in meta:
        raise UserInputError("meta file lacks the class names", file=directory / meta_name,
                             field=names_key.decode())
    class_names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta[names_key]]
    out: dict[str, ClassificationData] = {}
    for split, names in (("train", train_names), ("test", test_names)):
        arrays, labels = [], []
        for name in names:
            batch = read_cifar_batch(directory / name)
            for key in (b"data", label_key):
                if key not in batch:
                    raise UserInputError("CIFAR batch lacks a field", file=directory / name, field=key.decode())
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise UserInputError("CIFAR data must be [N, 3072] uint8", file=directory / name, field="data",
                                     value=data.shape)
            arrays.append(data)
            labels.append(np.asarray(batch[label_key], dtype=np.int64))
        data = np.concatenate(arrays)
        images = torch.from_numpy(data.reshape(-1, 3, 32, 32)).float().div_(255.0)
        n = images.shape[0]
        ids = [f"{kind}-{split}-{i:05d}" for i in range(n)]
        out[split] = _finish(images, np.concatenate(labels), ids, list(ids), class_names,
                             image_size=size, in_chans=in_chans)
    return out


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


def _coco_image_path(dataset: Any, file_name: str, annotations_file: Path) -> Path:
    """An image of a COCO dataset: ``file_name`` relative to the dataset root or to its ``images/`` folder."""
    from rfo_bench.io.records import resolve_inside

    for base in (dataset.root, dataset.root / "images"):
        candidate = resolve_inside(base, file_name, source=str(annotations_file))
        if candidate.is_file():
            return candidate
    raise UserInputError("image listed in annotations.json does not exist (looked in DIR and DIR/images)",
                         file=annotations_file, field="images.file_name", value=file_name)


def _load_rfo_patches(
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
    from rfo_bench.io.coco import read_coco

    annotations_file = directory / "annotations.json"
    if not annotations_file.is_file():
        raise UserInputError("COCO annotations not found (expected DIR/annotations.json and DIR/images/)",
                             file=annotations_file)
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
        patches.append(_resize(t.unsqueeze(0), out_size)[0])
        labels.append(label)
        ids.append(sample_id)
        patients.append(patient)

    records = sorted(dataset.images, key=lambda r: r.image_id)
    for record in tqdm(records, desc="cutting RFO patches", unit="image", leave=False):
        pixels = _read_pixels(_coco_image_path(dataset, record.file_name, annotations_file), in_chans)
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
    return _finish(images, np.asarray(labels), ids, patients, class_names, image_size=None, in_chans=in_chans)


# --------------------------------------------------------------------------------------------- entry point


def _resolve(path_text: str, root: str | os.PathLike[str] | None) -> Path:
    path = Path(path_text).expanduser()
    if not path.is_absolute() and root is not None:
        path = Path(root) / path
    return path


def load_classification_data(
    spec: str,
    *,
    root: str | os.PathLike[str] | None = None,
    image_size: int | Sequence[int] | None = None,
    in_chans: int = 1,
    seed: int = 0,
    test_fraction: float = 0.3,
) -> dict[str, ClassificationData]:
    """Load a classification dataset and split it into ``train`` and ``test``.

    Args:
        spec: ``digits``, ``folder:DIR``, ``csv:FILE``, ``cifar10:DIR``, ``cifar100:DIR`` or
            ``rfo-patches:DIR`` (see the module docstring).
        root: directory that relative paths in ``spec`` (and, for ``csv:``, relative image paths in
            the file) are resolved against; default: the working directory (image paths: the CSV's
            directory).
        image_size: resize every image to this ``int`` or ``(H, W)`` (bilinear; antialiased when
            shrinking). ``None`` keeps the native size (8x8 digits, 32x32 CIFAR, 64x64 RFO patches).
        in_chans: 1 (gray) or 3 (gray repeated, or RGB kept).
        seed: seed of the train/test split and of the background patch positions.
        test_fraction: share of samples (of patients, when grouped) put in ``test``; ignored by
            CIFAR and by CSVs with a ``split`` column.

    Returns:
        ``{"train": ClassificationData, "test": ClassificationData}`` sharing one ``class_names``.

    Raises:
        UserInputError: unknown spec, missing files or fields, an empty class, inconsistent images.
    """
    size = _size_hw(image_size)
    if in_chans not in (1, 3):
        raise UserInputError("in_chans must be 1 or 3", field="in_chans", value=in_chans)
    kind, _, argument = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SPEC_KINDS:
        raise UserInputError(
            "unknown dataset spec; expected digits, folder:DIR, csv:FILE, cifar10:DIR, cifar100:DIR or "
            "rfo-patches:DIR", field="dataset", value=spec,
        )
    if kind == "digits":
        if argument:
            raise UserInputError("the digits dataset takes no path", field="dataset", value=spec)
        return _split(_load_digits(size, in_chans), test_fraction=test_fraction, seed=seed)
    if not argument:
        raise UserInputError(f"dataset spec '{kind}:' needs a path after the colon", field="dataset", value=spec)
    path = _resolve(argument, root)
    if kind == "folder":
        return _split(_load_folder(path, size, in_chans), test_fraction=test_fraction, seed=seed)
    if kind == "csv":
        data, splits = _load_csv(path, Path(root) if root is not None else None, size, in_chans)
        if splits is None:
            return _split(data, test_fraction=test_fraction, seed=seed)
        chosen = np.asarray(splits)
        out = {name: data.subset(np.flatnonzero(chosen == name)) for name in ("train", "test")}
        for name, part in out.items():
            if len(part) == 0:
                raise UserInputError(f"the split column names no '{name}' rows", file=path, field="split")
        shared = set(out["train"].patient_ids) & set(out["test"].patient_ids)
        if shared:
            logger.warning("%s: %d patient(s) have images in both the train and the test split; test accuracy "
                           "and membership inference will be optimistic", path, len(shared))
        return out
    if kind in ("cifar10", "cifar100"):
        return _load_cifar(kind, path, size, in_chans)
    return _split(_load_rfo_patches(path, size, in_chans, seed), test_fraction=test_fraction, seed=seed)

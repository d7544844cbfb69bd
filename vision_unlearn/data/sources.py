"""Readers of the classification sources: scikit-learn's digits, an image folder, a CSV, the local
CIFAR python batches (the ``rfo-patches`` source has its own module). Each returns whole splits in
memory as :class:`~vision_unlearn.data.container.ClassificationData`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from toolkit_core.errors import UserInputError
from vision_unlearn.data.container import ClassificationData
from vision_unlearn.data.pixels import finish_data, read_pixels, stack_images

DIGITS_PATIENT_BLOCK = 5
"""sklearn's digits carry no writer ids; consecutive blocks of this many samples (in the order
``load_digits`` returns them) form one pseudo-patient, ``digits-p0000`` holding samples 0-4 and so on.
The grouping is deterministic and only exists so that patient-level requests can be exercised."""


def read_digits(size: tuple[int, int] | None, in_chans: int) -> ClassificationData:
    """scikit-learn's 8x8 digits (1797 images), grouped into pseudo-patients of :data:`DIGITS_PATIENT_BLOCK`."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy((bunch.images / 16.0).astype(np.float32)).unsqueeze(1)
    n = images.shape[0]
    return finish_data(
        images,
        bunch.target.astype(np.int64),
        [f"digits-{i:04d}" for i in range(n)],
        [f"digits-p{i // DIGITS_PATIENT_BLOCK:04d}" for i in range(n)],
        [str(c) for c in bunch.target_names],
        image_size=size,
        in_chans=in_chans,
    )


def read_folder(directory: Path, size: tuple[int, int] | None, in_chans: int) -> ClassificationData:
    """An ImageFolder layout ``DIR/<class>/<image>``; the patient is a DICOM's patient key, else the image."""
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
    images = stack_images(pixels, files, size, in_chans)
    return finish_data(images, np.asarray(labels), ids, patients, [d.name for d in class_dirs],
                   image_size=None, in_chans=in_chans)


def _class_order(names: set[str]) -> list[str]:
    """Numeric order when every label is an integer, otherwise lexicographic."""
    try:
        return sorted(names, key=lambda s: (int(s), s))
    except ValueError:
        return sorted(names)


def read_csv(
    file: Path, root: Path | None, size: tuple[int, int] | None, in_chans: int
) -> tuple[ClassificationData, list[str] | None]:
    """A CSV ``image_path,label[,patient_id][,split]``; returns the data and the ``split`` column if any."""
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
    pixels = [read_pixels(p, in_chans) for p in tqdm(paths, desc=f"reading {file.name}", unit="image",
                                                       leave=False)]
    images = stack_images(pixels, paths, size, in_chans)
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
    data = finish_data(images, np.asarray([index_of[row["label"]] for row in rows]), ids, patients, class_names,
                   image_size=None, in_chans=in_chans)
    return data, splits


_CIFAR_FILES = {
    "cifar10": (("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5"),
                ("test_batch",), "batches.meta", b"labels", b"label_names", "cifar-10-batches-py"),
    "cifar100": (("train",), ("test",), "meta", b"fine_labels", b"fine_label_names", "cifar-100-python"),
}


def read_cifar(kind: str, directory: Path, size: tuple[int, int] | None,
               in_chans: int) -> dict[str, ClassificationData]:
    """The local CIFAR-10 / CIFAR-100 python batches, with their official train / test split."""
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
        out[split] = finish_data(images, np.concatenate(labels), ids, list(ids), class_names,
                             image_size=size, in_chans=in_chans)
    return out

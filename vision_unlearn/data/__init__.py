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

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toolkit_core.errors import UserInputError
from vision_unlearn.data.container import ClassificationData, ClassificationDataset
from vision_unlearn.data.pixels import size_hw
from vision_unlearn.data.rfo_patches import (
    DEFAULT_RFO_PATCH_SIZE,
    RFO_BACKGROUND_CLASS,
    RFO_MIN_PATCH_PX,
    RFO_PATCH_CONTEXT,
    read_rfo_patches,
)
from vision_unlearn.data.sources import DIGITS_PATIENT_BLOCK, read_cifar, read_csv, read_digits, read_folder
from vision_unlearn.data.splits import grouped_stratified_split, split_by_patient

__all__ = [
    "DEFAULT_RFO_PATCH_SIZE",
    "DIGITS_PATIENT_BLOCK",
    "RFO_BACKGROUND_CLASS",
    "RFO_MIN_PATCH_PX",
    "RFO_PATCH_CONTEXT",
    "SPEC_KINDS",
    "ClassificationData",
    "ClassificationDataset",
    "grouped_stratified_split",
    "load_classification_data",
]

logger = logging.getLogger(__name__)

SPEC_KINDS = ("digits", "folder", "csv", "cifar10", "cifar100", "rfo-patches")


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
    size = size_hw(image_size)
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
        return split_by_patient(read_digits(size, in_chans), test_fraction=test_fraction, seed=seed)
    if not argument:
        raise UserInputError(f"dataset spec '{kind}:' needs a path after the colon", field="dataset", value=spec)
    path = _resolve(argument, root)
    if kind == "folder":
        return split_by_patient(read_folder(path, size, in_chans), test_fraction=test_fraction, seed=seed)
    if kind == "csv":
        data, splits = read_csv(path, Path(root) if root is not None else None, size, in_chans)
        if splits is None:
            return split_by_patient(data, test_fraction=test_fraction, seed=seed)
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
        return read_cifar(kind, path, size, in_chans)
    return split_by_patient(read_rfo_patches(path, size, in_chans, seed), test_fraction=test_fraction, seed=seed)

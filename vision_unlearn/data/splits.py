"""Train / test splits at patient level: no patient has images on both sides."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from toolkit_core.errors import UserInputError
from vision_unlearn.data.container import ClassificationData

logger = logging.getLogger(__name__)


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


def split_by_patient(
    data: ClassificationData, *, test_fraction: float, seed: int
) -> dict[str, ClassificationData]:
    """``{"train", "test"}`` of :func:`grouped_stratified_split` by patient; warns about a split
    missing a class."""
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

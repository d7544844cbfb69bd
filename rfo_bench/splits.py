"""Patient-level, stratified, seeded splits and k-fold cross-validation.

A patient never spans two splits. Patients are stratified by their most severe image stratum
(``critical`` > ``non_critical`` > ``none``, see :meth:`DetectionDataset.stratum`), so that each split
keeps the dataset's mix of critical, non-critical and negative studies (the Hopkins RFO Bench split is
70/10/20). Images without a patient id are their own patient (a warning tells how many).

Ratio splits give each split its share of all patients by largest remainder (so a split with a positive
share of at least one patient's worth is never empty, however the patients fall into strata), and spread
each split's patients evenly over the strata: the patients, shuffled (seeded) within each stratum and laid
out stratum after stratum, take split labels from one evenly interleaved sequence, so each stratum holds
every split's share to within two patients. k-fold uses scikit-learn's
:class:`~sklearn.model_selection.StratifiedGroupKFold`.

Manifests that leave the site: file names often carry patient names (``Smith_John_CXR.dcm``) and CSV
patient columns raw MRNs. :func:`pseudonymised_dataset` replaces both by keyed pseudonyms
(:mod:`toolkit_core.pseudonym`) before a split is written (``rfo-bench split --pseudonymise-names``;
``rfo-bench convert --pseudonymise-names`` does the same for a COCO or CSV file). The image ids, the
split and its summary stay the same; whoever holds the site key maps a pseudonym back by pseudonymising
the local file list. Without the option the real names are written, so that the files still lead to
the images.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from rfo_bench.io.records import STRATA, DetectionDataset
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def patient_groups(dataset: DetectionDataset) -> tuple[np.ndarray, list[str]]:
    """``(I,)`` patient index per image and the patient keys (``image:<id>`` when unknown)."""
    keys = [r.patient_id if r.patient_id is not None else f"image:{r.image_id}" for r in dataset.images]
    missing = sum(r.patient_id is None for r in dataset.images)
    if missing:
        logger.warning("%d of %d images have no patient id and are treated as their own patient",
                       missing, len(dataset.images))
    unique, index = np.unique(np.array(keys, dtype=object).astype(str), return_inverse=True)
    return index.astype(np.int64), [str(u) for u in unique]


def patient_strata(dataset: DetectionDataset, groups: np.ndarray, num_patients: int) -> np.ndarray:
    """``(P,)`` stratum index (0 critical, 1 non-critical, 2 none) of each patient: its most severe image."""
    strata = np.full(num_patients, len(STRATA) - 1, dtype=np.int64)
    for record, g in zip(dataset.images, groups):
        strata[g] = min(strata[g], STRATA.index(dataset.stratum(record)))
    return strata


def _largest_remainder(total: int, fractions: Sequence[float]) -> list[int]:
    raw = np.asarray(fractions, dtype=np.float64) * total
    counts = np.floor(raw).astype(int)
    order = np.argsort(-(raw - counts), kind="stable")
    for k in order[: total - counts.sum()]:
        counts[k] += 1
    return counts.tolist()


def _interleaved_labels(counts: Sequence[int]) -> np.ndarray:
    """``sum(counts)`` split labels, ``counts[k]`` of label ``k``, spread evenly: position ``i`` takes the label
    furthest behind its share of the first ``i + 1`` positions (ties: the lowest label). Integer arithmetic, so
    every machine gives the same sequence."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    assigned = np.zeros_like(counts)
    labels = np.empty(total, dtype=np.int64)
    for i in range(total):
        k = int(np.argmax((i + 1) * counts - assigned * total))  # deficit x total; a used-up label is never behind
        labels[i] = k
        assigned[k] += 1
    return labels


def split_dataset(
    dataset: DetectionDataset, fractions: dict[str, float] | None = None, *, seed: int = 0
) -> dict[str, list[int]]:
    """Patient-level stratified split.

    Args:
        dataset: the dataset.
        fractions: split name -> fraction (summing to 1); default 70/10/20 train/val/test.
        seed: shuffle seed.

    Returns:
        Split name -> image ids (dataset order).
    """
    fractions = dict(fractions or DEFAULT_FRACTIONS)
    values = list(fractions.values())
    if not values or any(v < 0 for v in values) or abs(sum(values) - 1.0) > 1e-6:
        raise UserInputError("split fractions must be non-negative and sum to 1", field="fractions", value=fractions)
    groups, keys = patient_groups(dataset)
    strata = patient_strata(dataset, groups, len(keys))
    rng = np.random.default_rng(seed)
    ordered = []
    for s in range(len(STRATA)):
        members = np.flatnonzero(strata == s)
        rng.shuffle(members)
        ordered.append(members)
    assignment = np.empty(len(keys), dtype=np.int64)
    assignment[np.concatenate(ordered)] = _interleaved_labels(_largest_remainder(len(keys), values))
    names = list(fractions)
    out: dict[str, list[int]] = {name: [] for name in names}
    for record, g in zip(dataset.images, groups):
        out[names[assignment[g]]].append(record.image_id)
    return out


def kfold_splits(dataset: DetectionDataset, folds: int, *, seed: int = 0) -> list[dict[str, list[int]]]:
    """Patient-level stratified k-fold: ``folds`` dicts ``{"train": ids, "test": ids}``."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups, keys = patient_groups(dataset)
    if folds < 2 or folds > len(keys):
        raise UserInputError(f"k-fold needs 2 <= k <= number of patients ({len(keys)})", field="folds", value=folds)
    strata = patient_strata(dataset, groups, len(keys))[groups]
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    ids = np.array([r.image_id for r in dataset.images])
    out = []
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        for train, test in splitter.split(np.zeros(len(ids)), strata, groups):
            out.append({"train": ids[train].tolist(), "test": ids[test].tolist()})
    return out


def split_summary(dataset: DetectionDataset, split: dict[str, list[int]]) -> dict[str, dict[str, int]]:
    """Images per stratum in each split (for logs and the split manifest)."""
    by_id = dataset.image_by_id()
    return {
        name: {s: sum(dataset.stratum(by_id[i]) == s for i in ids) for s in STRATA} | {"images": len(ids)}
        for name, ids in split.items()
    }


def pseudonymised_dataset(
    dataset: DetectionDataset, *, root: str | os.PathLike[str] | None = None, key: bytes | None = None
) -> DetectionDataset:
    """A copy to share: every file name and patient id replaced by its keyed pseudonym.

    A file name becomes ``<32 hex>.<suffix>`` (:func:`toolkit_core.pseudonym.file_name_pseudonym`: no
    folder and no part of the name survives), a patient id its
    :func:`~toolkit_core.pseudonym.patient_pseudonym` (ids read from DICOM headers are pseudonyms already
    and are pseudonymised once more, consistently). Image ids, sizes, annotations and the grouping of
    images by patient are unchanged, so a split computed on the original applies to the copy.

    Args:
        dataset: the dataset.
        root: root of the copy; pass the folder the manifests are written to, so that a COCO writer
            records neither the original image folder nor paths relative to it. Default: unchanged.
        key: the secret key; default :func:`toolkit_core.pseudonym.load_key`.
    """
    from toolkit_core.pseudonym import file_name_pseudonym, load_key, patient_pseudonym

    secret = load_key() if key is None else key
    records = [
        replace(r, file_name=file_name_pseudonym(r.file_name, key=secret),
                patient_id=None if r.patient_id is None else patient_pseudonym(r.patient_id, key=secret))
        for r in dataset.images
    ]
    base = dataset.root if root is None else Path(root).resolve()
    return replace(dataset, root=base, images=tuple(records))

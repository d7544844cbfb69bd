"""Accuracy metrics of the unlearning protocol: UA, RA, TA and the class-wise variants.

Notation of the SalUn / Unlearn-Sparse protocol (Fan et al., ICLR 2024; Jia et al., NeurIPS 2023):

* UA (unlearning accuracy) = 100 - accuracy on the forget set D_f (higher = more forgotten),
* RA (remaining accuracy) = accuracy on the retain set D_r,
* TA (test accuracy) = accuracy on the test set; for class-wise forgetting the protocol reports TA on
  the remaining classes (:func:`remaining_class_accuracy`), since the forgotten class must now fail.

All values are percentages in ``[0, 100]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from vision_unlearn.metrics._arrays import as_numpy


def predictions(logits_or_preds: Any) -> np.ndarray:
    """Class predictions ``int64 [N]`` from ``[N, K]`` scores (argmax) or ``[N]`` integer predictions."""
    values = as_numpy(logits_or_preds, name="logits_or_preds")
    if values.ndim == 2:
        if values.shape[1] == 0:
            raise ValueError("logits have zero classes")
        return values.argmax(axis=1).astype(np.int64)
    if values.ndim == 1:
        if values.size and not np.issubdtype(values.dtype, np.integer):
            if not np.all(np.equal(np.mod(values, 1), 0)):
                raise ValueError("1-D predictions must be integer class indices; pass [N, K] logits instead")
        return values.astype(np.int64)
    raise ValueError(f"expected [N, K] logits or [N] predictions, got shape {values.shape}")


def _labels(labels: Any, n: int) -> np.ndarray:
    array = as_numpy(labels, name="labels").reshape(-1)
    if array.shape[0] != n:
        raise ValueError(f"{array.shape[0]} labels for {n} predictions")
    return array.astype(np.int64)


def accuracy(logits_or_preds: Any, labels: Any, *, name: str = "set") -> float:
    """Top-1 accuracy in percent.

    Args:
        logits_or_preds: ``[N, K]`` logits / probabilities or ``[N]`` predicted classes.
        labels: ``[N]`` true classes.
        name: what the samples are (used in the error message), e.g. ``"forget set"``.

    Raises:
        ValueError: on an empty set (an accuracy of nothing is undefined) or mismatched lengths.
    """
    preds = predictions(logits_or_preds)
    truth = _labels(labels, preds.shape[0])
    if preds.shape[0] == 0:
        raise ValueError(f"accuracy of an empty {name} is undefined")
    return float(100.0 * np.mean(preds == truth))


def unlearning_accuracy(forget_logits_or_preds: Any, forget_labels: Any) -> float:
    """UA = 100 - accuracy on the forget set, in percent."""
    return 100.0 - accuracy(forget_logits_or_preds, forget_labels, name="forget set")


def per_class_accuracy(logits_or_preds: Any, labels: Any, num_classes: int) -> np.ndarray:
    """``float64 [num_classes]`` accuracy (percent) of each class; NaN where a class has no samples."""
    preds = predictions(logits_or_preds)
    truth = _labels(labels, preds.shape[0])
    if truth.size and (truth.min() < 0 or truth.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    total = np.bincount(truth, minlength=num_classes).astype(np.float64)
    right = np.bincount(truth[preds == truth], minlength=num_classes).astype(np.float64)
    out = np.full(num_classes, np.nan)
    seen = total > 0
    out[seen] = 100.0 * right[seen] / total[seen]
    return out


def _class_mask(labels: np.ndarray, forget_classes: Iterable[int]) -> np.ndarray:
    forgotten = np.asarray(sorted({int(c) for c in forget_classes}), dtype=np.int64)
    if forgotten.size == 0:
        raise ValueError("no forget classes given")
    return np.isin(labels, forgotten)


def remaining_class_accuracy(logits_or_preds: Any, labels: Any, forget_classes: Iterable[int]) -> float:
    """Accuracy (percent) on the samples whose true class is *not* a forgotten class.

    The prediction may still be a forgotten class (that counts as an error): a model that forgot class 3
    by predicting 3 for everything must not look good here.
    """
    preds = predictions(logits_or_preds)
    truth = _labels(labels, preds.shape[0])
    keep = ~_class_mask(truth, forget_classes)
    if not keep.any():
        raise ValueError("no samples of the remaining classes: every sample belongs to a forgotten class")
    return float(100.0 * np.mean(preds[keep] == truth[keep]))


def forgotten_class_accuracy(logits_or_preds: Any, labels: Any, forget_classes: Iterable[int]) -> float:
    """Accuracy (percent) on the samples of the forgotten classes (should fall to ~0 after class-wise forgetting)."""
    preds = predictions(logits_or_preds)
    truth = _labels(labels, preds.shape[0])
    chosen = _class_mask(truth, forget_classes)
    if not chosen.any():
        raise ValueError("no samples of the forgotten classes in this set")
    return float(100.0 * np.mean(preds[chosen] == truth[chosen]))

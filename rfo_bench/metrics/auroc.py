"""Image-level AUROC (the classification half of the object-CXR / RFO Bench protocol).

An image's score is the maximum box score of its detections (0 for an image without detection) or
a separate classification score (the Hopkins ``classification.csv``); its label is whether it holds an
RFO. The point estimate comes from :func:`sklearn.metrics.roc_auc_score`; the bootstrap uses
:func:`weighted_auroc`, the Mann-Whitney form with integer image weights (ties count one half), which
equals scikit-learn's weighted AUROC.
"""

from __future__ import annotations

import numpy as np


def image_scores_from_detections(pred_image: np.ndarray, pred_score: np.ndarray, num_images: int) -> np.ndarray:
    """``(I,)`` max detection score per image; images without detections score 0."""
    scores = np.zeros(num_images, dtype=np.float64)
    if len(pred_image):
        np.maximum.at(scores, np.asarray(pred_image, dtype=np.int64), np.asarray(pred_score, dtype=np.float64))
    return scores


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present.

    Args:
        labels: ``(I,)`` bool / {0, 1}, True = image holds an RFO.
        scores: ``(I,)`` image scores, higher = more likely positive.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, np.asarray(scores, dtype=np.float64)))


def weighted_auroc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """AUROC for each row of integer image weights.

    Args:
        labels: ``(I,)`` bool.
        scores: ``(I,)`` float.
        weights: ``(B, I)`` or ``(I,)`` non-negative weights (bootstrap multiplicities).

    Returns:
        ``(B,)`` (or a scalar array) AUROC; NaN where a row has no positive or no negative weight.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="stable")
    s_sorted = scores[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1] if s_sorted.size else np.zeros(0, np.int64)
    pos_w = np.where(labels[order], w[:, order], 0.0)
    neg_w = np.where(labels[order], 0.0, w[:, order])
    if s_sorted.size == 0:
        return np.full(w.shape[0], np.nan)
    pos_g = np.add.reduceat(pos_w, starts, axis=1)  # (B, groups) weight per tied-score group
    neg_g = np.add.reduceat(neg_w, starts, axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    numerator = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1)
    denominator = pos_g.sum(axis=1) * neg_g.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)
    return out if np.ndim(weights) == 2 else out.reshape(())

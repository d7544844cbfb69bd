"""Image-level AUROC (the classification half of the object-CXR / RFO Bench protocol).

An image's score is the maximum box score of its detections (``-inf`` for an image without detection,
so that it ranks below every image with one, whatever the range of the scores: logits may be negative) or
a separate classification score (the Hopkins ``classification.csv``); its label is whether it holds an
RFO. The point estimate comes from :func:`sklearn.metrics.roc_auc_score`; the bootstrap uses
:func:`weighted_auroc`, the Mann-Whitney form with integer image weights (ties count one half), which
equals scikit-learn's weighted AUROC.
"""

from __future__ import annotations

import numpy as np

NO_DETECTION = -np.inf
"""Score of an image without any detection: below every detection score."""


def image_scores_from_detections(pred_image: np.ndarray, pred_score: np.ndarray, num_images: int) -> np.ndarray:
    """``(I,)`` max detection score per image; images without detections score :data:`NO_DETECTION`.

    Only the order of the scores matters to AUROC, so a constant shift of all detection scores leaves
    it unchanged.
    """
    scores = np.full(num_images, NO_DETECTION, dtype=np.float64)
    if len(pred_image):
        np.maximum.at(scores, np.asarray(pred_image, dtype=np.int64), np.asarray(pred_score, dtype=np.float64))
    return scores


def auroc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve; NaN when only one class is present.

    Args:
        labels: ``(I,)`` bool / {0, 1}, True = image holds an RFO.
        scores: ``(I,)`` image scores, higher = more likely positive; ``-inf`` ranks below every finite
            score.
    """
    from sklearn.metrics import roc_auc_score

    labels = np.asarray(labels).astype(bool)
    if labels.all() or not labels.any():
        return float("nan")
    # AUROC depends on the order of the scores only; their ranks keep ties and let -inf (no detection)
    # through scikit-learn's finiteness check
    _, ranks = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
    return float(roc_auc_score(labels, ranks.reshape(-1)))


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
    # `!=` rather than np.diff: two -inf scores (no detection) tie, and -inf - -inf is NaN
    starts = np.r_[0, np.flatnonzero(s_sorted[1:] != s_sorted[:-1]) + 1] if s_sorted.size else np.zeros(0, np.int64)
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

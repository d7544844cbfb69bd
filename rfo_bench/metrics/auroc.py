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

    The Mann-Whitney count: each positive image wins over every negative image scored below it and
    half-wins over every tie, all counted with the images' weights. The doubled count is an integer,
    so it is summed exactly in int64 (any order gives the same float64 AUROC).

    Args:
        labels: ``(I,)`` bool.
        scores: ``(I,)`` float (``-inf`` allowed).
        weights: ``(B, I)`` or ``(I,)`` non-negative integer weights (bootstrap multiplicities).

    Returns:
        ``(B,)`` (or a scalar array) AUROC; NaN where a row has no positive or no negative weight.
    """
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    w = np.atleast_2d(np.asarray(weights)).astype(np.int64)
    positives, negatives = np.flatnonzero(labels), np.flatnonzero(~labels)
    negatives = negatives[np.argsort(scores[negatives], kind="stable")]
    negative_scores = scores[negatives]
    below = np.searchsorted(negative_scores, scores[positives], side="left")  # negatives scored lower
    at_most = np.searchsorted(negative_scores, scores[positives], side="right")  # ... lower or tied
    negative_cum = np.concatenate([np.zeros((w.shape[0], 1), np.int64), np.cumsum(w[:, negatives], axis=1)], axis=1)
    positive_w = w[:, positives]
    # 2 x wins = sum over positives of weight x (negatives below + negatives below or tied)
    twice_wins = (positive_w * (negative_cum[:, below] + negative_cum[:, at_most])).sum(axis=1)
    denominator = positive_w.sum(axis=1).astype(np.float64) * negative_cum[:, -1].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denominator > 0, (twice_wins / 2) / np.where(denominator > 0, denominator, 1.0), np.nan)
    return out if np.ndim(weights) == 2 else out.reshape(())

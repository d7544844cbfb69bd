"""Bootstrap confidence intervals over images (or patients) without re-running the evaluation.

A replicate is a vector of image multiplicities drawn by resampling images — or patients, all of a
patient's images together, when patient ids are known — with replacement. Every metric here is
re-aggregated from per-image results computed once: COCO AP from the :class:`MatchTable`, FROC from
the :class:`FrocEvents`, AUROC from the image scores. A replicate of AP is therefore a few cumulative
sums over the detections instead of a COCO evaluation; with all multiplicities equal to one it
reproduces the full COCO AP bit for bit (a test checks this).

The interval is the percentile interval of the replicates (2.5th and 97.5th percentiles for 95 %);
replicates in which a metric is undefined (e.g. no positive image drawn) are left out and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from rfo_bench.metrics.coco_eval import _EPS, RECALL_THRESHOLDS, MatchTable


def resample_counts(
    num_images: int, replicates: int, seed: int, clusters: np.ndarray | None = None
) -> np.ndarray:
    """Image multiplicities ``(B, I)`` (int32) of ``replicates`` bootstrap draws.

    Args:
        num_images: I.
        replicates: B.
        seed: seed of the NumPy generator.
        clusters: ``(I,)`` cluster (patient) index per image; clusters are drawn instead of images.
    """
    rng = np.random.default_rng(seed)
    if clusters is None:
        draws = rng.integers(0, num_images, size=(replicates, num_images))
        counts = np.zeros((replicates, num_images), dtype=np.int32)
        np.add.at(counts, (np.repeat(np.arange(replicates), num_images), draws.ravel()), 1)
        return counts
    clusters = np.asarray(clusters, dtype=np.int64)
    num_c = int(clusters.max()) + 1 if clusters.size else 0
    draws = rng.integers(0, num_c, size=(replicates, num_c))
    cluster_counts = np.zeros((replicates, num_c), dtype=np.int32)
    np.add.at(cluster_counts, (np.repeat(np.arange(replicates), num_c), draws.ravel()), 1)
    return cluster_counts[:, clusters]


def _min_count_for_recall(num_gt: np.ndarray) -> np.ndarray:
    """``(B, R)`` smallest integer ``v`` with ``v / num_gt >= r`` in float64 (COCO's comparison)."""
    thr = RECALL_THRESHOLDS[None, :]
    n = num_gt[:, None].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.ceil(thr * n)
        for _ in range(2):
            lower = np.maximum(v - 1, 0)
            v = np.where((lower < v) & (lower / n >= thr), lower, v)
        for _ in range(2):
            v = np.where(v / n < thr, v + 1, v)
    return v.astype(np.int64)


def precision_replicates(table: MatchTable, counts: np.ndarray, *, chunk: int = 256) -> np.ndarray:
    """COCO interpolated precision ``(B, T, R, K)`` (area ``all``, all kept detections) per replicate.

    Only positions right after a true positive can hold the interpolated precision (a false positive
    lowers precision at unchanged recall), so each replicate evaluates the precision at the true
    positives only: cumulative true positives there, and false positives as (detections so far -
    true positives so far).

    Args:
        table: the matching (its ``max_dets`` = 100, as COCO's AP uses).
        counts: ``(B, I)`` image multiplicities.
        chunk: replicates processed together.

    Returns:
        Precision with -1 for categories without ground truth in a replicate; ``counts`` of ones gives
        COCO's ``precision[:, :, :, 0, -1]`` bit for bit.
    """
    counts = np.asarray(counts)
    num_b = counts.shape[0]
    num_t, num_k = table.matched.shape[1], table.num_categories
    num_r = RECALL_THRESHOLDS.size
    out = -np.ones((num_b, num_t, num_r, num_k))
    by_cat = np.argsort(table.det_category, kind="stable")
    bounds = np.searchsorted(table.det_category[by_cat], np.arange(num_k + 1))
    counts_i64 = counts.astype(np.int64)
    for k in range(num_k):
        sel = by_cat[bounds[k]:bounds[k + 1]]
        order = sel[np.argsort(-table.det_score[sel], kind="mergesort")]
        dt_ig = table.ignored[0][:, order]
        tp_flag = table.matched[0][:, order] & ~dt_ig  # (T, n)
        counted = ~dt_ig  # detections that are a TP or an FP at each threshold
        det_img = table.det_image[order]
        union = np.flatnonzero(tp_flag.any(axis=0))
        uniform = bool(counted.all())
        segments_t = _segment_matrix(union, det_img, counted.all(axis=0), table.num_images).T.tocsr() \
            if union.size else None
        for b0 in range(0, num_b, chunk):
            c = counts_i64[b0:b0 + chunk]  # (Bc, I)
            num_gt = c @ table.gt_count[0, k]  # (Bc,)
            valid = num_gt > 0
            q = np.zeros((c.shape[0], num_t, num_r))
            if valid.any() and union.size:
                need = _min_count_for_recall(np.where(valid, num_gt, 1))  # (Bc, R)
                # detections counted so far (TP or FP) at each position of `union`
                seen_union = np.cumsum(np.asarray(c @ segments_t), axis=1) if uniform else None  # (Bc, m)
                for t in range(num_t):
                    positions = np.flatnonzero(tp_flag[t])
                    if positions.size == 0:
                        continue
                    if uniform:
                        seen = seen_union[:, np.searchsorted(union, positions)]
                    else:
                        seen = np.cumsum(c[:, det_img] * counted[t], axis=1)[:, positions]
                    tp = np.cumsum(c[:, det_img[positions]], axis=1)  # (Bc, n_t)
                    fp = seen - tp
                    tp_f = tp.astype(np.float64)
                    precision = tp_f / (fp.astype(np.float64) + tp_f + _EPS)
                    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
                    q[:, t, :] = _first_at_least(tp, envelope, need)
            q[~valid] = -1
            out[b0:b0 + chunk, :, :, k] = q
    return out


def _segment_matrix(union: np.ndarray, det_img: np.ndarray, counted: np.ndarray, num_images: int):
    """Sparse ``(len(union), I)`` counts of counted detections per image between consecutive ``union`` positions.

    Row ``s`` counts detections at positions ``(union[s-1], union[s]]``; ``cumsum(segments @ weights)``
    is then the weighted number of detections up to each position of ``union``.
    """
    from scipy.sparse import csr_matrix

    positions = np.arange(det_img.size)
    segment = np.searchsorted(union, positions, side="left")
    keep = (segment < union.size) & counted
    data = np.ones(int(keep.sum()), dtype=np.int64)
    return csr_matrix((data, (segment[keep], det_img[keep])), shape=(union.size, num_images))


def first_index_at_least(cum: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Per row ``b``: the first ``j`` with ``cum[b, j] >= need[b, r]`` (``n`` when none), as ``(B, R)``.

    ``cum (B, n)`` must be non-decreasing per row (integers); one batched ``searchsorted`` over
    row-offset values does all rows at once.
    """
    rows, n = cum.shape
    big = int(max(cum.max(initial=0), need.max(initial=0))) + 2
    offsets = np.arange(rows, dtype=np.int64)[:, None] * big
    idx = np.searchsorted((cum + offsets).ravel(), (need + offsets).ravel(), side="left").reshape(need.shape)
    return idx - np.arange(rows)[:, None] * n


def _first_at_least(cum: np.ndarray, values: np.ndarray, need: np.ndarray) -> np.ndarray:
    """``values[b, j]`` at :func:`first_index_at_least`, else 0."""
    rows, n = cum.shape
    idx = first_index_at_least(cum, need)
    found = idx < n
    out = np.zeros(need.shape)
    row_idx = np.broadcast_to(np.arange(rows)[:, None], need.shape)
    out[found] = values[row_idx[found], idx[found]]
    return out


def mean_ap(precision_b: np.ndarray, iou_index: np.ndarray | slice = slice(None),
            category_index: np.ndarray | None = None) -> np.ndarray:
    """``(B,)`` COCO-style mean of the valid entries of ``precision_b (B, T, R, K)`` (same averaging order)."""
    out = np.empty(precision_b.shape[0])
    for b in range(precision_b.shape[0]):
        s = precision_b[b][iou_index]
        if category_index is not None:
            s = s[..., category_index]
        valid = s[s > -1]
        out[b] = np.mean(valid) if valid.size else np.nan
    return out


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval."""

    low: float
    high: float
    replicates_used: int

    def as_list(self) -> list[float | None]:
        return [None if not np.isfinite(self.low) else self.low, None if not np.isfinite(self.high) else self.high]


def percentile_interval(values: np.ndarray, level: float = 0.95) -> Interval:
    """Percentile interval of the finite ``values``; NaN bounds when none is finite."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return Interval(float("nan"), float("nan"), 0)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(finite, [alpha, 1.0 - alpha])
    return Interval(float(low), float(high), int(finite.size))

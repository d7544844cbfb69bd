"""Bootstrap confidence intervals over images (or patients) without re-running the evaluation.

A replicate is a vector of image multiplicities drawn by resampling images — or patients, all of a
patient's images together, when patient ids are known — with replacement. Every metric here is
re-aggregated from per-image results computed once: COCO AP from the :class:`MatchTable`, FROC from
the :class:`FrocEvents`, AUROC from the image scores. A replicate of AP is therefore a few cumulative
sums over the detections instead of a COCO evaluation; with all multiplicities equal to one it
reproduces the full COCO AP (the same float64 operations on the same counts; tests compare with
pycocotools within 1e-12).

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
        return _row_counts(draws, num_images)
    clusters = np.asarray(clusters, dtype=np.int64)
    num_c = int(clusters.max()) + 1 if clusters.size else 0
    draws = rng.integers(0, num_c, size=(replicates, num_c))
    return _row_counts(draws, num_c)[:, clusters]


def _row_counts(draws: np.ndarray, size: int) -> np.ndarray:
    """``(B, size)`` int32: how often each value ``0..size-1`` occurs in each row of ``draws (B, n)``."""
    rows = draws.shape[0]
    flat = (draws + np.arange(rows, dtype=draws.dtype)[:, None] * size).ravel()
    return np.bincount(flat, minlength=rows * size).astype(np.int32).reshape(rows, size)


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


def precision_replicates(table: MatchTable, counts: np.ndarray, *, chunk: int | None = None,
                         progress: bool = False) -> np.ndarray:
    """COCO interpolated precision ``(B, T, R, K)`` (area ``all``, all kept detections) per replicate.

    Only positions right after a true positive can hold the interpolated precision (a false positive
    lowers precision at unchanged recall), so each replicate evaluates the precision at the true
    positives only: cumulative true positives there, over the detections counted so far (true or
    false positives). COCO's interpolated precision at recall threshold ``r`` is the largest precision
    among the positions whose true positives reach ``r``; a position's true-positive count says which
    thresholds it reaches (a lookup table per replicate), so one ``maximum.at`` into (threshold,
    replicate, recall bucket) and a running maximum over the 101 buckets give every value. All IoU
    thresholds of a category go through together: their positions are concatenated and the running
    sums restart at each threshold.

    Args:
        table: the matching (its ``max_dets`` = 100, as COCO's AP uses).
        counts: ``(B, I)`` image multiplicities.
        chunk: replicates processed together; default: about :data:`_CHUNK_ELEMENTS` positions x
            replicates per array (temporaries of about 1 MiB, which stay in a CPU's L2 cache).
        progress: a tqdm bar on stderr over the categories (each: every replicate).

    Returns:
        Precision with -1 for categories without ground truth in a replicate; ``counts`` of ones gives
        COCO's ``precision[:, :, :, 0, -1]`` (the same float64 operations on the same counts).
    """
    counts = np.asarray(counts)
    num_b = counts.shape[0]
    num_t, num_k = table.matched.shape[1], table.num_categories
    num_r = RECALL_THRESHOLDS.size
    out = -np.ones((num_b, num_t, num_r, num_k))
    by_cat = np.argsort(table.det_category, kind="stable")
    bounds = np.searchsorted(table.det_category[by_cat], np.arange(num_k + 1))
    num_gt_all = counts.astype(np.int64) @ table.gt_count[0].T  # (B, K)
    positions_per_category = np.bincount(table.det_category, minlength=num_k,
                                         weights=(table.matched[0] & ~table.ignored[0]).sum(axis=0))
    rows = chunk or int(np.clip(_CHUNK_ELEMENTS // max(int(positions_per_category.max(initial=0)), 1), 4, 256))
    # int32 halves the traffic of the gathers (a running sum stays below 2**31 when this holds). Each
    # chunk is kept as (replicate, image) for the gathers and running sums along rows, and as
    # (image, replicate) for the sparse products (both contiguous: no copy inside the loop)
    small = int(counts.max(initial=0)) * max(table.det_image.size, 1) < 2**31
    weights = counts.astype(np.int32 if small else np.int64)
    blocks = [(weights[b0:b0 + rows], np.ascontiguousarray(weights[b0:b0 + rows].T, dtype=np.int64))
              for b0 in range(0, num_b, rows)]  # int64 as the sparse matrices' data: no conversion there
    from tqdm.auto import tqdm

    for k in tqdm(range(num_k), desc=f"AP of {num_b} replicates", unit="class", leave=False, disable=not progress):
        sel = by_cat[bounds[k]:bounds[k + 1]]
        order = sel[np.argsort(-table.det_score[sel], kind="mergesort")]
        dt_ig = table.ignored[0][:, order]
        tp_flag = table.matched[0][:, order] & ~dt_ig  # (T, n)
        det_img = table.det_image[order]
        union = np.flatnonzero(tp_flag.any(axis=0))
        if union.size == 0:  # no true positive: precision 0 wherever the category has ground truth
            out[:, :, :, k] = np.where(num_gt_all[:, k] > 0, 0.0, -1.0)[:, None, None]
            continue
        # detections counted so far (TP or FP) = all detections - those ignored at the threshold
        segments = _segment_matrix(union, det_img, np.ones(det_img.size, dtype=bool), table.num_images)
        positions = [np.flatnonzero(tp_flag[t]) for t in range(num_t)]
        sizes = np.array([p.size for p in positions])
        starts = np.r_[0, np.cumsum(sizes)[:-1]]
        nonempty = np.flatnonzero(sizes)
        all_positions = np.concatenate(positions)
        all_images = det_img[all_positions]
        all_union = np.searchsorted(union, all_positions)
        threshold_of = np.repeat(np.arange(num_t), sizes)
        ignored = [(t, _segment_matrix(union, det_img, dt_ig[t], table.num_images))
                   for t in nonempty if dt_ig[t].any()]
        top = int(num_gt_all[:, k].max()) + 1  # true positives never exceed the ground truths
        for b0, (w, w_t) in zip(range(0, num_b, rows), blocks):  # (Bc, I), (I, Bc)
            num_gt = num_gt_all[b0:b0 + rows, k]
            valid = num_gt > 0
            if not valid.any():
                continue
            bc = w.shape[0]
            need = _min_count_for_recall(np.where(valid, num_gt, 1))  # (Bc, R), values < top
            # slot of a position with v true positives in row b: (b, number of thresholds v reaches)
            reached = np.cumsum(np.bincount((need + np.arange(bc)[:, None] * top).ravel(),
                                            minlength=bc * top).reshape(bc, top), axis=1)
            slot_of = (reached + (np.arange(bc) * (num_r + 1))[:, None]).ravel()
            # COCO's tp / (fp + tp + eps): fp + tp is the integer count seen so far, exact in float64
            seen_all = np.cumsum(np.ascontiguousarray((segments @ w_t).T), axis=1)  # (Bc, m)
            denominator = (seen_all.astype(np.float64) + _EPS)[:, all_union]  # (Bc, P)
            for t, ignored_segments in ignored:
                seen = seen_all - np.cumsum(np.ascontiguousarray((ignored_segments @ w_t).T), axis=1)
                span = slice(starts[t], starts[t] + sizes[t])
                denominator[:, span] = seen[:, all_union[span]].astype(np.float64) + _EPS
            tp = w[:, all_images]  # (Bc, P)
            # the running sums restart at each IoU threshold: the first position of a threshold takes
            # away the previous threshold's total
            totals = np.add.reduceat(tp, starts[nonempty], axis=1)
            tp[:, starts[nonempty[1:]]] -= totals[:, :-1]
            tp = np.cumsum(tp, axis=1, dtype=tp.dtype)  # in the weights' integer type
            precision = tp / denominator
            slot = slot_of[tp + np.arange(0, bc * top, top, dtype=np.int64)[:, None]]
            slot += (threshold_of * (bc * (num_r + 1)))[None, :]
            best = np.zeros(num_t * bc * (num_r + 1))
            np.maximum.at(best, slot.ravel(), precision.ravel())
            # precision at threshold r: the best over the positions reaching more than r thresholds
            best = best.reshape(num_t, bc, num_r + 1)[:, :, :0:-1]
            q = np.maximum.accumulate(best, axis=2)[:, :, ::-1].transpose(1, 0, 2)  # (Bc, T, R)
            out[b0:b0 + rows, :, :, k] = np.where(valid[:, None, None], q, -1.0)
    return out


_CHUNK_ELEMENTS = 1 << 17
"""Positions x replicates per array in :func:`precision_replicates` (1 MiB of float64)."""


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

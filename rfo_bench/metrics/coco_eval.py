"""COCO bounding-box evaluation: a vectorised re-implementation of pycocotools that keeps its per-image matching.

The numbers are those of ``pycocotools.cocoeval.COCOeval`` (``iouType="bbox"``, default parameters),
bit for bit: the same IoU formula (``maskUtils.iou`` in float64), the same greedy matching (detections
by descending score with a stable sort, each ground truth matched once, the last ground truth of
maximal IoU wins, non-ignored ground truths first), the same 101-point interpolated precision and the
same averages. Crowd ground truths (``iscrowd=1``) are handled as pycocotools does: always ignored,
their IoU is the intersection over the detection's area, and any number of detections may match one. Tests compare all of this with pycocotools and faster-coco-eval on randomised cases.

Why re-implement: a confidence interval needs AP on hundreds of resampled image sets. pycocotools
computes the matching per image and throws it away in ``accumulate``; here :func:`match_detections`
computes it once into a :class:`MatchTable` and :func:`accumulate` (or the bootstrap) re-aggregates it
with image weights, so a replicate costs a cumulative sum instead of a full evaluation.

Everything here is pure array math: no files, no printing. The wrappers for the two reference
libraries are :func:`reference_coco_eval`. faster-coco-eval computes precision as ``tp / (tp + fp)``
without pycocotools' ``+ np.spacing(1)`` and averages in another order, so its numbers differ from
pycocotools (and from this module) in the last bits only (<= 1e-12 in the tests).

Limitations: ``useCats=1`` and boxes only (no segmentation masks). :mod:`rfo_bench`'s own readers refuse
crowd annotations (RFOs are countable), so the crowd path serves COCO dicts passed in directly.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from typing import Any

import numpy as np

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
"""COCO IoU thresholds 0.50:0.05:0.95 (T = 10), computed exactly as pycocotools does."""
RECALL_THRESHOLDS = np.linspace(0.0, 1.0, int(np.round((1.0 - 0.0) / 0.01)) + 1, endpoint=True)
"""COCO recall thresholds 0:0.01:1 (R = 101) of the interpolated precision."""
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))
"""COCO object-size ranges in px² (``all``, ``small``, ``medium``, ``large``); bounds inclusive."""
AREA_NAMES = ("all", "small", "medium", "large")
MAX_DETS = (1, 10, 100)
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
"""Names of the 12 numbers of ``COCOeval.summarize()``, in its order."""
_EPS = np.spacing(1)


@dataclass(frozen=True)
class CocoArrays:
    """Ground truth and detections as flat arrays (indices, not ids).

    Attributes:
        image_ids: ``(I,)`` sorted unique image ids (the evaluation's image order).
        category_ids: ``(K,)`` sorted unique category ids.
        gt_image: ``(G,)`` index into ``image_ids`` of each ground-truth box, in file order.
        gt_category: ``(G,)`` index into ``category_ids``.
        gt_xywh: ``(G, 4)`` float64 boxes ``[x, y, w, h]`` in px.
        gt_area: ``(G,)`` float64 area used for the size ranges (COCO ``area``).
        dt_image: ``(D,)`` index into ``image_ids`` of each detection, in results order.
        dt_category: ``(D,)`` index into ``category_ids``.
        dt_xywh: ``(D, 4)`` float64 boxes.
        dt_score: ``(D,)`` float64 confidences.
        gt_crowd: ``(G,)`` bool COCO ``iscrowd`` of each ground-truth box; None = no crowd box.
    """

    image_ids: np.ndarray
    category_ids: np.ndarray
    gt_image: np.ndarray
    gt_category: np.ndarray
    gt_xywh: np.ndarray
    gt_area: np.ndarray
    dt_image: np.ndarray
    dt_category: np.ndarray
    dt_xywh: np.ndarray
    dt_score: np.ndarray
    gt_crowd: np.ndarray | None = None

    @property
    def num_images(self) -> int:
        return int(self.image_ids.shape[0])


def coco_arrays(gt: dict[str, Any], results: list[dict[str, Any]]) -> CocoArrays:
    """:class:`CocoArrays` from a COCO ground-truth dict and a results list (already validated).

    Detections of categories absent from the ground truth are dropped, as pycocotools does; an
    annotation with a true ``iscrowd`` is a crowd box (see :func:`match_detections`).
    """
    image_ids = np.unique(np.array([im["id"] for im in gt["images"]], dtype=np.int64))
    category_ids = np.unique(np.array([c["id"] for c in gt["categories"]], dtype=np.int64))
    anns = gt["annotations"]
    gt_img = np.searchsorted(image_ids, np.array([a["image_id"] for a in anns], dtype=np.int64))
    gt_cat_id = np.array([a["category_id"] for a in anns], dtype=np.int64)
    gt_cat = np.searchsorted(category_ids, gt_cat_id)
    gt_xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
    gt_area = np.array([a["area"] for a in anns], dtype=np.float64)
    gt_crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    dt_cat_id = np.array([r["category_id"] for r in results], dtype=np.int64)
    keep = np.isin(dt_cat_id, category_ids)
    kept = [r for r, k in zip(results, keep) if k]
    dt_img = np.searchsorted(image_ids, np.array([r["image_id"] for r in kept], dtype=np.int64))
    return CocoArrays(
        image_ids=image_ids, category_ids=category_ids,
        gt_image=gt_img.astype(np.int64), gt_category=gt_cat.astype(np.int64), gt_xywh=gt_xywh, gt_area=gt_area,
        dt_image=dt_img.astype(np.int64), dt_category=np.searchsorted(category_ids, dt_cat_id[keep]).astype(np.int64),
        dt_xywh=np.array([r["bbox"] for r in kept], dtype=np.float64).reshape(-1, 4),
        dt_score=np.array([r["score"] for r in kept], dtype=np.float64),
        gt_crowd=gt_crowd if gt_crowd.any() else None,
    )


@dataclass(frozen=True)
class MatchTable:
    """Per-detection matching results, computed once and re-aggregated many times.

    Detections are those COCO evaluates (the top ``max_dets[-1]`` per image and category by score),
    ordered by category, then image, then descending score within the image (stable).

    Attributes:
        det_category: ``(N,)`` category index.
        det_image: ``(N,)`` image index.
        det_rank: ``(N,)`` rank of the detection within its image and category (0 = best score).
        det_score: ``(N,)`` score.
        det_source: ``(N,)`` row of the detection in the :class:`CocoArrays` detection arrays.
        matched: ``(A, T, N)`` bool, the detection is matched to a ground truth at area range ``a``,
            IoU threshold ``t``.
        ignored: ``(A, T, N)`` bool, COCO's ``dtIgnore`` (matched to an ignored ground truth, or
            unmatched and outside the area range).
        matched_gt: ``(A, T, N)`` int, row in the ground-truth arrays the detection is matched to, or -1.
        gt_count: ``(A, K, I)`` int, number of non-ignored ground truths per area range, category, image.
        num_images: I.
        iou_thresholds: ``(T,)``.
    """

    det_category: np.ndarray
    det_image: np.ndarray
    det_rank: np.ndarray
    det_score: np.ndarray
    det_source: np.ndarray
    matched: np.ndarray
    ignored: np.ndarray
    matched_gt: np.ndarray
    gt_count: np.ndarray
    num_images: int
    iou_thresholds: np.ndarray

    @property
    def num_categories(self) -> int:
        return int(self.gt_count.shape[1])


def box_iou_xywh(dt: np.ndarray, gt: np.ndarray, gt_crowd: np.ndarray | None = None) -> np.ndarray:
    """IoU of ``dt (..., D, 4)`` and ``gt (..., G, 4)`` ``[x, y, w, h]`` boxes as ``(..., D, G)``.

    Same float64 operations and order as ``pycocotools.mask.iou``, so ties and exact threshold hits
    resolve identically. For a crowd ground truth (``gt_crowd (..., G)`` true) the "union" is the
    detection's area: the share of the detection inside the crowd region.
    """
    dx, dy, dw, dh = (dt[..., :, None, i] for i in range(4))
    gx, gy, gw, gh = (gt[..., None, :, i] for i in range(4))
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    union = dw * dh + gw * gh - inter
    if gt_crowd is not None:
        union = np.where(gt_crowd[..., None, :], dw * dh, union)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
    return np.where((w > 0) & (h > 0), iou, 0.0)


def _last_argmax(values: np.ndarray, candidate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the last maximum of ``values`` over the candidates on the last axis, and whether any."""
    masked = np.where(candidate, values, -np.inf)
    best = masked.max(axis=-1, keepdims=True)
    is_best = candidate & (masked == best)
    size = values.shape[-1]
    last = size - 1 - np.argmax(is_best[..., ::-1], axis=-1)
    return last, candidate.any(axis=-1)


def _pow2(n: np.ndarray) -> np.ndarray:
    return np.where(n <= 1, n, 2 ** np.ceil(np.log2(np.maximum(n, 1))).astype(np.int64))


def match_detections(
    data: CocoArrays,
    *,
    iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    area_ranges: tuple[tuple[float, float], ...] = AREA_RANGES,
    max_dets: int = MAX_DETS[-1],
) -> MatchTable:
    """Greedy COCO matching of every (image, category) pair, vectorised over pairs, area ranges and IoU thresholds.

    Crowd ground truths are ignored in every area range, never counted, and stay available after a
    match (several detections may match one crowd box); a detection matched to one is ignored.

    Args:
        data: ground truth and detections.
        iou_thresholds: ``(T,)`` IoU thresholds.
        area_ranges: ``A`` inclusive area ranges in px².
        max_dets: detections kept per image and category (highest scores, stable order).

    Returns:
        The :class:`MatchTable`.
    """
    num_i, num_k = data.num_images, int(data.category_ids.shape[0])
    thr = np.minimum(np.asarray(iou_thresholds, dtype=np.float64), 1 - 1e-10)
    lo = np.array([r[0] for r in area_ranges], dtype=np.float64)
    hi = np.array([r[1] for r in area_ranges], dtype=np.float64)
    num_a, num_t = lo.shape[0], thr.shape[0]

    # Ground-truth counts per area range, category and image (non-ignored = area inside the range).
    gt_in = (data.gt_area[None, :] >= lo[:, None]) & (data.gt_area[None, :] <= hi[:, None])  # (A, G)
    if data.gt_crowd is not None:
        gt_in &= ~data.gt_crowd[None, :]
    gt_count = np.zeros((num_a, num_k, num_i), dtype=np.int64)
    for a in range(num_a):
        np.add.at(gt_count[a], (data.gt_category[gt_in[a]], data.gt_image[gt_in[a]]), 1)

    # Detections: per (category, image) pair, descending score with a stable sort, top max_dets.
    pair_dt = data.dt_category * num_i + data.dt_image
    order = np.lexsort((-data.dt_score, pair_dt))  # stable: file order among equal (pair, score)
    sorted_pair = pair_dt[order]
    first = np.r_[0, np.flatnonzero(np.diff(sorted_pair)) + 1] if order.size else np.zeros(0, np.int64)
    rank = np.arange(order.size) - np.repeat(first, np.diff(np.r_[first, order.size]))
    keep = rank < max_dets
    det_idx, det_rank, det_pair = order[keep], rank[keep], sorted_pair[keep]
    n_det = det_idx.size
    det_area = data.dt_xywh[det_idx, 2] * data.dt_xywh[det_idx, 3]
    matched = np.zeros((num_a, num_t, n_det), dtype=bool)
    matched_ignored = np.zeros((num_a, num_t, n_det), dtype=bool)
    matched_gt = -np.ones((num_a, num_t, n_det), dtype=np.int64)

    # Ground truths per pair, in file order.
    pair_gt = data.gt_category * num_i + data.gt_image
    gt_order = np.argsort(pair_gt, kind="stable")
    gt_pairs, gt_start, gt_num = np.unique(pair_gt[gt_order], return_index=True, return_counts=True)
    det_pairs, det_start, det_num = np.unique(det_pair, return_index=True, return_counts=True)
    where_gt = np.searchsorted(gt_pairs, det_pairs)
    has_gt = (where_gt < gt_pairs.size) & (gt_pairs[np.minimum(where_gt, max(gt_pairs.size - 1, 0))] == det_pairs) \
        if gt_pairs.size else np.zeros(det_pairs.size, dtype=bool)
    pairs = np.flatnonzero(has_gt)
    if pairs.size:
        n_d, n_g = det_num[pairs], gt_num[where_gt[pairs]]
        bucket_key = _pow2(n_d) * 100003 + _pow2(n_g)
        for key in np.unique(bucket_key):
            members = pairs[bucket_key == key]
            _match_bucket(
                members, det_start, det_num, gt_start[where_gt[members]], gt_num[where_gt[members]], gt_order,
                det_idx, data, gt_in, thr, matched, matched_ignored, matched_gt,
            )
    outside = (det_area[None, :] < lo[:, None]) | (det_area[None, :] > hi[:, None])  # (A, N)
    ignored = matched_ignored | (~matched & outside[:, None, :])
    return MatchTable(
        det_category=det_pair // num_i if num_i else det_pair, det_image=det_pair % num_i if num_i else det_pair,
        det_rank=det_rank, det_score=data.dt_score[det_idx], det_source=det_idx, matched=matched, ignored=ignored, matched_gt=matched_gt,
        gt_count=gt_count, num_images=num_i, iou_thresholds=np.asarray(iou_thresholds, dtype=np.float64),
    )


def _match_bucket(
    members: np.ndarray, det_start: np.ndarray, det_num: np.ndarray, g_start: np.ndarray, g_num: np.ndarray,
    gt_order: np.ndarray, det_idx: np.ndarray, data: CocoArrays, gt_in: np.ndarray, thr: np.ndarray,
    matched: np.ndarray, matched_ignored: np.ndarray, matched_gt: np.ndarray,
) -> None:
    """Match one bucket of (image, category) pairs padded to the same (D, G)."""
    p = members.size
    d_max, g_max = int(det_num[members].max()), int(g_num.max())
    d_pos = det_start[members][:, None] + np.arange(d_max)[None, :]  # (P, D) positions in the table
    d_valid = np.arange(d_max)[None, :] < det_num[members][:, None]
    g_valid = np.arange(g_max)[None, :] < g_num[:, None]
    g_rows = gt_order[np.minimum(g_start[:, None] + np.arange(g_max)[None, :], gt_order.size - 1)]  # (P, G)
    d_rows = det_idx[np.where(d_valid, d_pos, det_start[members][:, None])]  # (P, D)
    crowd = None if data.gt_crowd is None else data.gt_crowd[g_rows] & g_valid  # (P, G)
    iou = box_iou_xywh(data.dt_xywh[d_rows], data.gt_xywh[g_rows], crowd)  # (P, D, G)
    non_ignored = gt_in[:, g_rows] & g_valid[None]  # (A, P, G)
    ignored_gt = ~gt_in[:, g_rows] & g_valid[None]
    num_a, num_t = gt_in.shape[0], thr.shape[0]
    taken = np.zeros((num_a, num_t, p, g_max), dtype=bool)
    rows = np.arange(p)
    for d in range(d_max):
        ious = iou[:, d, :]  # (P, G)
        free = ~taken & (ious[None, None] >= thr[None, :, None, None])  # (A, T, P, G)
        values = np.broadcast_to(ious, free.shape)
        best_n, any_n = _last_argmax(values, free & non_ignored[:, None])
        best_i, any_i = _last_argmax(values, free & ignored_gt[:, None])
        hit = (any_n | any_i) & d_valid[None, None, :, d]
        chosen = np.where(any_n, best_n, best_i)
        a_idx, t_idx, p_idx = np.nonzero(hit)
        g_idx = chosen[a_idx, t_idx, p_idx]
        if crowd is not None:  # a crowd box stays available to later detections
            keep = ~crowd[p_idx, g_idx]
            a_idx, t_idx, p_idx, g_idx = a_idx[keep], t_idx[keep], p_idx[keep], g_idx[keep]
        taken[a_idx, t_idx, p_idx, g_idx] = True
        pos = d_pos[:, d]
        valid = d_valid[:, d]
        matched[:, :, pos[valid]] = hit[:, :, rows[valid]]
        matched_ignored[:, :, pos[valid]] = (hit & ~any_n)[:, :, rows[valid]]
        gt_row = np.where(hit, g_rows[rows[None, None, :], chosen], -1)
        matched_gt[:, :, pos[valid]] = gt_row[:, :, rows[valid]]


def _interpolated_precision(tp: np.ndarray, fp: np.ndarray, num_gt: float) -> tuple[np.ndarray, np.ndarray]:
    """COCO's 101-point precision ``(T, R)`` and final recall ``(T,)`` from cumulative ``tp``/``fp`` ``(T, n)``."""
    num_t, n = tp.shape
    if n == 0:
        return np.zeros((num_t, RECALL_THRESHOLDS.size)), np.zeros(num_t)
    recall = tp / num_gt
    precision = tp / (fp + tp + _EPS)
    envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    q = np.zeros((num_t, RECALL_THRESHOLDS.size))
    for t in range(num_t):
        idx = np.searchsorted(recall[t], RECALL_THRESHOLDS, side="left")
        ok = idx < n
        q[t, ok] = envelope[t, idx[ok]]
    return q, recall[:, -1]


def accumulate(
    table: MatchTable, image_weights: np.ndarray | None = None, max_dets: tuple[int, ...] = MAX_DETS
) -> tuple[np.ndarray, np.ndarray]:
    """COCO ``accumulate()`` on a :class:`MatchTable`, optionally with integer image weights.

    Args:
        table: the matching.
        image_weights: ``(I,)`` non-negative integers (bootstrap multiplicities); None = all ones,
            which reproduces pycocotools exactly.
        max_dets: detections per image considered for each ``M`` entry.

    Returns:
        ``precision (T, R, K, A, M)`` and ``recall (T, K, A, M)``, -1 where a category has no
        non-ignored ground truth.
    """
    num_a, num_t, _ = table.matched.shape
    num_k, num_m = table.num_categories, len(max_dets)
    precision = -np.ones((num_t, RECALL_THRESHOLDS.size, num_k, num_a, num_m))
    recall = -np.ones((num_t, num_k, num_a, num_m))
    weights = np.ones(table.num_images, dtype=np.int64) if image_weights is None else np.asarray(image_weights)
    by_cat = np.argsort(table.det_category, kind="stable")
    cat_bounds = np.searchsorted(table.det_category[by_cat], np.arange(num_k + 1))
    for k in range(num_k):
        sel_k = by_cat[cat_bounds[k]:cat_bounds[k + 1]]  # image order, then rank: COCO's concatenation
        for m, max_det in enumerate(max_dets):
            sel = sel_k[table.det_rank[sel_k] < max_det]
            order = sel[np.argsort(-table.det_score[sel], kind="mergesort")]
            w = weights[table.det_image[order]]
            for a in range(num_a):
                num_gt = float(np.dot(weights, table.gt_count[a, k]))
                if num_gt == 0:
                    continue
                dt_ig = table.ignored[a][:, order]
                dtm = table.matched[a][:, order]
                tp = np.cumsum((dtm & ~dt_ig) * w, axis=1).astype(np.float64)
                fp = np.cumsum((~dtm & ~dt_ig) * w, axis=1).astype(np.float64)
                q, rc = _interpolated_precision(tp, fp, num_gt)
                precision[:, :, k, a, m] = q
                recall[:, k, a, m] = rc
    return precision, recall


def _mean_valid(values: np.ndarray) -> float:
    valid = values[values > -1]
    return -1.0 if valid.size == 0 else float(np.mean(valid))


def summarize(
    precision: np.ndarray, recall: np.ndarray, iou_thresholds: np.ndarray = IOU_THRESHOLDS,
    category_index: np.ndarray | None = None,
) -> dict[str, float]:
    """The 12 numbers of ``COCOeval.summarize()`` (same averaging) as a name -> value dict.

    Args:
        precision: ``(T, R, K, A, M)`` from :func:`accumulate`.
        recall: ``(T, K, A, M)``.
        iou_thresholds: the ``T`` thresholds (to find 0.5 and 0.75).
        category_index: restrict the averages to these category indices (stratified results).
    """
    if category_index is not None:
        precision = precision[:, :, category_index]
        recall = recall[:, category_index]
    t50 = np.where(iou_thresholds == 0.5)[0]
    t75 = np.where(iou_thresholds == 0.75)[0]
    last = precision.shape[-1] - 1
    return {
        "AP": _mean_valid(precision[:, :, :, 0, last]),
        "AP50": _mean_valid(precision[t50][:, :, :, 0, last]),
        "AP75": _mean_valid(precision[t75][:, :, :, 0, last]),
        "APs": _mean_valid(precision[:, :, :, 1, last]),
        "APm": _mean_valid(precision[:, :, :, 2, last]),
        "APl": _mean_valid(precision[:, :, :, 3, last]),
        "AR1": _mean_valid(recall[:, :, 0, 0]),
        "AR10": _mean_valid(recall[:, :, 0, 1]),
        "AR100": _mean_valid(recall[:, :, 0, last]),
        "ARs": _mean_valid(recall[:, :, 1, last]),
        "ARm": _mean_valid(recall[:, :, 2, last]),
        "ARl": _mean_valid(recall[:, :, 3, last]),
    }


def per_category_ap(precision: np.ndarray, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """``(K, 2)`` AP and AP50 per category (area ``all``, 100 detections); -1 without ground truth."""
    t50 = np.where(iou_thresholds == 0.5)[0]
    out = np.empty((precision.shape[2], 2))
    for k in range(precision.shape[2]):
        out[k, 0] = _mean_valid(precision[:, :, k, 0, -1])
        out[k, 1] = _mean_valid(precision[t50][:, :, k, 0, -1])
    return out


@dataclass(frozen=True)
class CocoResult:
    """COCO bbox evaluation result.

    Attributes:
        stats: the 12 summary numbers by :data:`STAT_NAMES` (0-1 scale; -1 = undefined).
        precision: ``(T, R, K, A, M)`` interpolated precision.
        recall: ``(T, K, A, M)``.
        backend: ``native``, ``pycocotools`` or ``faster_coco_eval``.
    """

    stats: dict[str, float]
    precision: np.ndarray
    recall: np.ndarray
    backend: str


def native_coco_eval(data: CocoArrays, table: MatchTable | None = None) -> CocoResult:
    """COCO bbox evaluation with this module's matcher (identical numbers to pycocotools)."""
    table = match_detections(data) if table is None else table
    precision, recall = accumulate(table)
    return CocoResult(summarize(precision, recall), precision, recall, "native")


BACKENDS = ("faster_coco_eval", "pycocotools", "native")


def reference_coco_eval(gt: dict[str, Any], results: list[dict[str, Any]], backend: str) -> CocoResult:
    """Run pycocotools or faster-coco-eval on a ground-truth dict and a results list (quietly).

    Args:
        gt: COCO dict with ``images``, ``annotations`` (ids >= 1, ``area``, ``iscrowd``), ``categories``.
        results: ``[{image_id, category_id, bbox, score}]``; may be empty.
        backend: ``pycocotools`` or ``faster_coco_eval``.
    """
    import copy

    dataset = copy.deepcopy(gt)
    dets = copy.deepcopy(results)
    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster

        coco_gt = COCO(dataset)
        coco_gt.print_function = lambda *a, **k: None
        quiet = {"print_function": lambda *a, **k: None}
        if not dets:
            return _empty_result(gt, backend)
        coco_dt = coco_gt.loadRes(dets)
        evaluator = COCOeval_faster(coco_gt, coco_dt, "bbox", **quiet)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
        precision, recall = np.asarray(evaluator.eval["precision"]), np.asarray(evaluator.eval["recall"])
        stats = np.asarray(evaluator.stats[:12], dtype=np.float64)
    elif backend == "pycocotools":
        from pycocotools.coco import COCO as PyCOCO
        from pycocotools.cocoeval import COCOeval

        with contextlib.redirect_stdout(io.StringIO()):
            coco_gt = PyCOCO()
            coco_gt.dataset = dataset
            coco_gt.createIndex()
            if not dets:
                return _empty_result(gt, backend)
            coco_dt = coco_gt.loadRes(dets)
            evaluator = COCOeval(coco_gt, coco_dt, "bbox")
            evaluator.evaluate()
            evaluator.accumulate()
            evaluator.summarize()
        precision, recall = evaluator.eval["precision"], evaluator.eval["recall"]
        stats = np.asarray(evaluator.stats, dtype=np.float64)
    else:
        raise ValueError(f"unknown reference backend {backend!r}; expected pycocotools or faster_coco_eval")
    return CocoResult(dict(zip(STAT_NAMES, (float(s) for s in stats))), precision, recall, backend)


def _empty_result(gt: dict[str, Any], backend: str) -> CocoResult:
    """Both libraries refuse an empty results list; COCO semantics are then AP = AR = 0 where GT exists."""
    data = coco_arrays(gt, [])
    result = native_coco_eval(data)
    return CocoResult(result.stats, result.precision, result.recall, backend)

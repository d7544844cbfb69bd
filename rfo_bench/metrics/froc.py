"""FROC as computed by the object-CXR challenge script (JF Healthcare), also used by RFO Bench.

Protocol (the reference ``froc.py`` of object-CXR, in the form RFO Bench publishes it):

1. Every prediction is a point ``(x, y)`` with a probability (for box detectors: the box centre).
2. All predictions of all images are sorted by descending probability (a stable sort, so ties keep
   file order).
3. Walking down that list, a point inside any annotation of its image (box, ellipse inscribed in
   ``x1 y1 x2 y2``, or polygon) is *not* a false positive; every annotation it lies in that was not hit
   before counts one hit (a point inside an already hit annotation is neither hit nor false positive).
   Any other point is a false positive.
4. After each prediction, if ``false_positives / num_images`` has reached the next threshold of
   ``(0.125, 0.25, 0.5, 1, 2, 4, 8)``, the sensitivity ``hits / num_objects`` is recorded for it.
   ``num_images`` counts every ground-truth image, negatives included.
5. The FROC score is the mean of the seven sensitivities.

Oddities of the reference, reproduced by ``variant="reference"`` (the default, so that numbers compare
with published ones) and fixed by ``variant="corrected"``:

* **One threshold per prediction.** The script tests only the *next* threshold after each prediction.
  When one false positive crosses several thresholds at once (e.g. 8 images: the first false positive
  is already 0.125 FP/image, the second one 0.25 ...; or few images and high thresholds), the later
  thresholds are recorded at the following predictions, with whatever hits those added. The corrected
  variant records every threshold crossed at the prediction that crossed it.
* **Padding.** Thresholds never reached (the detector made too few false positives) are filled with
  the *last recorded* sensitivity, ignoring hits made after it. The corrected variant uses the
  sensitivity after all predictions (more false positives could only add hits). When no threshold at
  all is reached the script crashes (``froc[-1]`` on an empty list); here both variants then use the
  final sensitivity and :attr:`FrocResult.reference_undefined` is set.
* A prediction inside two overlapping annotations hits both; predictions for images absent from the
  ground truth count as false positives in the script (the loaders here refuse them instead); a
  degenerate ellipse (zero axis) divides by zero in the script.
* Polygons use ``skimage.measure.points_in_poly`` in the script and :class:`matplotlib.path.Path` here;
  the two may disagree only for points exactly on a polygon edge.

Hopkins RFO Bench annotations (``<ID>_<type>_<shape>``) are mapped to the same shapes (rectangle = box,
polygon = polygon) before the protocol applies; it is class-agnostic, like the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

FPS_THRESHOLDS = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""False positives per image at which sensitivity is read (object-CXR / RFO Bench)."""
VARIANTS = ("reference", "corrected")
VARIANT_LABELS = {"reference": "object-CXR reference", "corrected": "corrected protocol"}
"""How figures and reports name each variant."""


@dataclass(frozen=True)
class Shape:
    """An annotation as the FROC protocol sees it.

    Attributes:
        kind: ``box``, ``ellipse`` or ``polygon``.
        coords: ``(x1, y1, x2, y2)`` for box / ellipse, ``(x1, y1, ..., xn, yn)`` for a polygon (px).
    """

    kind: str
    coords: tuple[float, ...]


def points_inside(shape: Shape, points_xy: np.ndarray) -> np.ndarray:
    """Which of ``points_xy (N, 2)`` lie inside ``shape`` (box and ellipse boundaries count as inside)."""
    pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    if shape.kind == "box":
        x1, y1, x2, y2 = shape.coords
        return (x1 <= x) & (x <= x2) & (y1 <= y) & (y <= y2)
    if shape.kind == "ellipse":
        x1, y1, x2, y2 = shape.coords
        cx, cy, rx, ry = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
        if rx == 0 or ry == 0:
            return np.zeros(len(pts), dtype=bool)
        return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1
    if shape.kind == "polygon":
        from matplotlib.path import Path

        vertices = np.asarray(shape.coords, dtype=np.float64).reshape(-1, 2)
        return Path(vertices).contains_points(pts)
    raise ValueError(f"unknown shape kind {shape.kind!r}; expected box, ellipse or polygon")


@dataclass(frozen=True)
class FrocEvents:
    """The per-prediction outcome of the protocol, in the global sorted order.

    Each image's outcomes depend only on its own predictions, so resampling images re-weights these
    events without recomputing them (see :func:`froc_curve`).

    Attributes:
        order: ``(P,)`` indices of the input predictions in processing order.
        image: ``(P,)`` image index of each processed prediction.
        hits: ``(P,)`` number of annotations newly hit by the prediction.
        false_positive: ``(P,)`` bool.
        objects_per_image: ``(I,)`` number of annotations per image.
        hit_positions: indices of the predictions with ``hits > 0`` (derived).
    """

    order: np.ndarray
    image: np.ndarray
    hits: np.ndarray
    false_positive: np.ndarray
    objects_per_image: np.ndarray
    hit_positions: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hit_positions", np.flatnonzero(self.hits))


def froc_events(
    pred_image: np.ndarray, pred_score: np.ndarray, pred_xy: np.ndarray, shapes: Sequence[Sequence[Shape]]
) -> FrocEvents:
    """Classify every prediction as hit / inside an already-hit annotation / false positive.

    Args:
        pred_image: ``(P,)`` image index of each prediction (into ``shapes``), in file order.
        pred_score: ``(P,)`` probabilities.
        pred_xy: ``(P, 2)`` points in px.
        shapes: per image, its annotations (empty for negatives); ``len(shapes)`` = number of images.
    """
    pred_image = np.asarray(pred_image, dtype=np.int64)
    pred_score = np.asarray(pred_score, dtype=np.float64)
    pred_xy = np.asarray(pred_xy, dtype=np.float64).reshape(-1, 2)
    order = np.argsort(-pred_score, kind="stable")
    image = pred_image[order]
    hits = np.zeros(order.size, dtype=np.int64)
    false_positive = np.ones(order.size, dtype=bool)
    by_image = np.argsort(image, kind="stable")
    bounds = np.searchsorted(image[by_image], np.arange(len(shapes) + 1))
    for i, image_shapes in enumerate(shapes):
        positions = by_image[bounds[i]:bounds[i + 1]]  # this image's predictions, in processing order
        if not image_shapes or positions.size == 0:
            continue
        points = pred_xy[order[positions]]
        inside = np.stack([points_inside(s, points) for s in image_shapes], axis=1)  # (n, objects)
        false_positive[positions] = ~inside.any(axis=1)
        # an annotation is hit by the first prediction inside it
        first = np.where(inside.any(axis=0), np.argmax(inside, axis=0), -1)
        np.add.at(hits, positions[first[first >= 0]], 1)
    objects = np.array([len(s) for s in shapes], dtype=np.int64)
    return FrocEvents(order, image, hits, false_positive, objects)


@dataclass(frozen=True)
class FrocResult:
    """FROC result.

    Attributes:
        fps_per_image: the thresholds.
        sensitivity: sensitivity at each threshold.
        score: mean sensitivity (the FROC score).
        variant: ``reference`` or ``corrected``.
        reference_undefined: True when the reference script would have crashed (no threshold reached).
        curve_fps: ``(P + 1,)`` false positives per image after each prediction (for plotting), from 0.
        curve_sensitivity: ``(P + 1,)`` sensitivity after each prediction, from 0.
    """

    fps_per_image: tuple[float, ...]
    sensitivity: tuple[float, ...]
    score: float
    variant: str
    reference_undefined: bool
    curve_fps: np.ndarray
    curve_sensitivity: np.ndarray


def _needed_false_positives(thresholds: np.ndarray, num_images: float) -> np.ndarray:
    """Smallest integer FP count ``m`` with ``m / num_images >= t`` (float64, as the script compares)."""
    m = np.maximum(np.ceil(thresholds * num_images), 1.0)
    for _ in range(2):
        lower = np.maximum(m - 1, 1.0)
        m = np.where((lower < m) & (lower / num_images >= thresholds), lower, m)
    for _ in range(2):
        m = np.where(m / num_images < thresholds, m + 1, m)
    return m.astype(np.int64)


def froc_curve(
    events: FrocEvents,
    image_weights: np.ndarray | None = None,
    *,
    fps_thresholds: Sequence[float] = FPS_THRESHOLDS,
    variant: str = "reference",
    curves: bool = True,
) -> FrocResult:
    """Sensitivities at the FP-per-image thresholds, optionally with integer image weights (bootstrap).

    A weight ``w`` stands for ``w`` copies of an image; the copies' predictions are consecutive in the
    sorted list (they tie), which the closed form below evaluates without expanding them.

    Args:
        events: from :func:`froc_events`.
        image_weights: ``(I,)`` non-negative integers; None = every image once.
        fps_thresholds: increasing thresholds.
        variant: ``reference`` (the object-CXR script, default) or ``corrected`` (see module docstring).
        curves: also return the full curve (for plots); off in bootstrap replicates.

    Returns:
        The :class:`FrocResult`; sensitivities are NaN when there is no annotation.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown FROC variant {variant!r}; expected one of {VARIANTS}")
    thresholds = np.asarray(fps_thresholds, dtype=np.float64)
    num_t = thresholds.size
    w_img = np.ones(events.objects_per_image.size, np.int64) if image_weights is None else np.asarray(image_weights)
    num_images = float(w_img.sum())
    num_objects = float(np.dot(w_img, events.objects_per_image))
    w = w_img[events.image].astype(np.int64)
    steps = np.cumsum(w)  # S_j: last expanded step of prediction j
    fp_w = w * events.false_positive
    fp_cum = np.cumsum(fp_w)
    hit_pos = events.hit_positions  # hits are rare: cumulate them sparsely
    hit_cum_sparse = np.cumsum(w[hit_pos] * events.hits[hit_pos])
    total_steps = int(steps[-1]) if steps.size else 0

    def hits_at(step: int) -> float:
        j = int(np.searchsorted(steps, step, side="left"))
        before = int(np.searchsorted(hit_pos, j, side="left"))
        prev_hit = int(hit_cum_sparse[before - 1]) if before else 0
        return float(prev_hit + (step - (steps[j] - w[j])) * events.hits[j])

    final_hits = float(hit_cum_sparse[-1]) if hit_cum_sparse.size else 0.0
    needed = _needed_false_positives(thresholds, num_images) if num_images > 0 else np.full(num_t, 1 << 62)
    total_fp = int(fp_cum[-1]) if steps.size else 0
    first_step = np.full(num_t, total_steps + 1, dtype=np.int64)  # beyond the end = never reached
    for i in range(num_t):
        if needed[i] <= total_fp:
            j = int(np.searchsorted(fp_cum, needed[i], side="left"))
            first_step[i] = int(steps[j] - w[j] + (needed[i] - (fp_cum[j] - fp_w[j])))
    recorded: list[float | None] = []
    if variant == "reference":
        last_step = 0
        for i in range(num_t):
            step = max(int(first_step[i]), last_step + 1)
            if step > total_steps:
                break
            recorded.append(hits_at(step))
            last_step = step
        undefined = not recorded
        fill = recorded[-1] if recorded else final_hits
        hit_values = recorded + [fill] * (num_t - len(recorded))
    else:
        undefined = bool(first_step[0] > total_steps)
        hit_values = [hits_at(int(s)) if s <= total_steps else final_hits for s in first_step]
    if undefined:
        logger.debug("no FP/image threshold reached: the reference script would fail; using final sensitivity")
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.asarray(hit_values, dtype=np.float64) / num_objects if num_objects > 0 else \
            np.full(num_t, np.nan)
    if curves:
        curve_fps = np.r_[0.0, fp_cum / num_images] if num_images > 0 else np.zeros(1)
        hit_cum = np.cumsum(w * events.hits)
        curve_sens = np.r_[0.0, hit_cum / num_objects] if num_objects > 0 else np.zeros(steps.size + 1)
    else:
        curve_fps = curve_sens = np.zeros(0)
    return FrocResult(
        fps_per_image=tuple(float(t) for t in thresholds), sensitivity=tuple(float(s) for s in sensitivity),
        score=float(np.mean(sensitivity)), variant=variant, reference_undefined=undefined,
        curve_fps=curve_fps, curve_sensitivity=curve_sens,
    )


def froc_score_replicates(
    events: FrocEvents, counts: np.ndarray, *, fps_thresholds: Sequence[float] = FPS_THRESHOLDS,
    variant: str = "reference", chunk: int = 64,
) -> np.ndarray:
    """FROC score of each bootstrap replicate, ``counts (B, I)`` image multiplicities -> ``(B,)``.

    The mean over the thresholds of :func:`froc_sensitivity_replicates`.
    """
    return np.mean(froc_sensitivity_replicates(events, counts, fps_thresholds=fps_thresholds, variant=variant,
                                               chunk=chunk), axis=1)


def froc_sensitivity_replicates(
    events: FrocEvents, counts: np.ndarray, *, fps_thresholds: Sequence[float] = FPS_THRESHOLDS,
    variant: str = "reference", chunk: int = 64,
) -> np.ndarray:
    """Sensitivity at each threshold of each bootstrap replicate, ``counts (B, I)`` -> ``(B, T)``
    (NaN in a replicate without any object): the band around a FROC curve.

    The same numbers as one :func:`froc_curve` per replicate, computed for a chunk of replicates at
    once. A threshold is read at the false positive that brings the weighted false positives to the
    needed count, and the sensitivity there is the weighted hits before it. Locating that false
    positive takes block sums of the false-positive weights and a running sum inside one block only
    (no running sum over all predictions per replicate). Replicates in
    which two thresholds need the same number of false positives (the reference script's
    one-threshold-per-prediction lag, only with fewer than 8 images) go through :func:`froc_curve`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown FROC variant {variant!r}; expected one of {VARIANTS}")
    counts = np.asarray(counts)
    thresholds = np.asarray(fps_thresholds, dtype=np.float64)
    layout = _FalsePositiveBlocks.of(events, counts.shape[1])
    out = np.empty((counts.shape[0], thresholds.size))
    for b0 in range(0, counts.shape[0], chunk):
        out[b0:b0 + chunk] = _froc_sensitivity_chunk(events, layout, counts[b0:b0 + chunk], thresholds, variant)
    return out


_FP_BLOCK = 256
"""False positives per block when locating a threshold (a running sum runs inside one block only)."""


@dataclass(frozen=True)
class _FalsePositiveBlocks:
    """The false positives of :class:`FrocEvents` in processing order, cut into blocks of :data:`_FP_BLOCK`.

    Attributes:
        positions: ``(F,)`` positions of the false positives among the processed predictions.
        image: ``(blocks * block,)`` image of each false positive; the padding uses image ``I`` (weight 0).
    """

    positions: np.ndarray
    image: np.ndarray

    @property
    def num_blocks(self) -> int:
        return self.image.size // _FP_BLOCK

    @staticmethod
    def of(events: FrocEvents, num_images: int) -> _FalsePositiveBlocks:
        positions = np.flatnonzero(events.false_positive)
        num_blocks = max(-(-positions.size // _FP_BLOCK), 1)
        image = np.full(num_blocks * _FP_BLOCK, num_images, dtype=np.int64)
        image[:positions.size] = events.image[positions]
        return _FalsePositiveBlocks(positions, image)


def _froc_sensitivity_chunk(
    events: FrocEvents, layout: _FalsePositiveBlocks, counts: np.ndarray, thresholds: np.ndarray, variant: str
) -> np.ndarray:
    """:func:`froc_sensitivity_replicates` for one chunk ``counts (Bc, I)``."""
    rows = counts.shape[0]
    # int32 gathers (half the memory traffic); every sum below runs in int64
    weights = np.concatenate([counts.astype(np.int32), np.zeros((rows, 1), np.int32)], axis=1)  # pad image: 0
    pad_image = counts.shape[1]
    num_images = weights.sum(axis=1, dtype=np.int64)
    num_objects = (weights[:, :pad_image].astype(np.int64) @ events.objects_per_image).astype(np.float64)
    fp_positions, num_blocks = layout.positions, layout.num_blocks
    hit_positions = events.hit_positions
    # weighted hits before any hit position: leading 0, then running sums
    hit_w = weights[:, events.image[hit_positions]].astype(np.int64)
    if (events.hits[hit_positions] > 1).any():  # a point inside several objects
        hit_w *= events.hits[hit_positions]
    hit_cum = np.concatenate([np.zeros((rows, 1), np.int64), np.cumsum(hit_w, axis=1)], axis=1)
    fp_w = weights[:, layout.image].reshape(rows, num_blocks, _FP_BLOCK)  # false-positive weights by block
    block_cum = np.cumsum(fp_w.sum(axis=2, dtype=np.int64), axis=1)
    total_fp = block_cum[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        needed = _needed_false_positives(thresholds[None, :], num_images[:, None].astype(np.float64))  # (Bc, T)
    reached = (needed <= total_fp[:, None]) & (num_images[:, None] > 0)
    lagging = (num_images == 0) | (np.diff(needed, axis=1) == 0).any(axis=1)
    # the block holding each crossing, then the crossing inside it
    row = np.broadcast_to(np.arange(rows)[:, None], needed.shape)
    goal = np.where(reached, needed, 1)
    block = np.minimum(_first_at_least_rows(block_cum, goal), num_blocks - 1)
    before_block = np.where(block > 0, block_cum[row, np.maximum(block - 1, 0)], 0)
    local = np.cumsum(fp_w[row, block], axis=2, dtype=np.int64)  # (Bc, T, block)
    offset = np.argmax(local >= (goal - before_block)[..., None], axis=2)
    crossing_fp = np.minimum(block * _FP_BLOCK + offset, max(fp_positions.size - 1, 0))
    crossing = fp_positions[crossing_fp] if fp_positions.size else np.zeros_like(crossing_fp)  # sorted position
    hits_before = hit_cum[row, np.searchsorted(hit_positions, crossing)]
    final_hits = hit_cum[:, -1]
    if variant == "reference":
        # unreached thresholds repeat the last recorded sensitivity (the final one when none was)
        reached_count = reached.sum(axis=1)
        last = np.where(reached_count > 0, hits_before[np.arange(rows), np.maximum(reached_count - 1, 0)],
                        final_hits)
        hit_values = np.where(reached, hits_before, last[:, None])
    else:
        hit_values = np.where(reached, hits_before, final_hits[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(num_objects[:, None] > 0, hit_values.astype(np.float64) / num_objects[:, None],
                               np.nan)
    for b in np.flatnonzero(lagging):
        sensitivity[b] = froc_curve(events, counts[b], fps_thresholds=thresholds, variant=variant,
                                    curves=False).sensitivity
    return sensitivity


def _first_at_least_rows(cum: np.ndarray, need: np.ndarray) -> np.ndarray:
    """Per row ``b`` of a non-decreasing integer ``cum (B, n)``: first ``j`` with ``cum[b, j] >= need[b, k]``."""
    rows, n = cum.shape
    big = int(max(cum.max(initial=0), need.max(initial=0))) + 2
    offsets = np.arange(rows, dtype=np.int64)[:, None] * big
    idx = np.searchsorted((cum + offsets).ravel(), (need + offsets).ravel(), side="left").reshape(need.shape)
    return idx - np.arange(rows)[:, None] * n

"""Sliced inference over whole films: overlapping tiles, a coarse whole-film pass, one merge.

:func:`predict_sliced` windows the film (:func:`~rfo_bench.detectors.tiling.window_film`, as in
training), runs a tile detector on overlapping native-spacing tiles and, optionally, on the whole film
shrunk to one tile (for objects larger than a tile), moves every box to film coordinates and merges
duplicates across tiles: non-maximum *merging* (one detection per group of matched boxes, with the
highest score and a box spanning the group: see ``extent`` below; SAHI's default is the union of every
member) or class-wise NMS. A box cut by a tile edge and the whole box from the neighbouring tile then
become one detection. The result is an ordinary
:class:`~rfo_bench.detectors.detections.Detections` in film pixels for the unchanged evaluator.

Merging is gated by score (``union_score_ratio``). A detector evaluated for AP keeps detections down to a
score of 0.001, so every tile adds dozens of weak boxes around an object; a union of every matched box
lets those weak boxes stretch a confident box far past the object (and link neighbouring objects into
one). A detection therefore extends a group's box, or links two groups, only when it scores at least
``union_score_ratio`` times the group's best; a weaker match is a suppressed duplicate. Measured on the
shipped recipe's validation films (100 films of their own seed, the recipe's checkpoint after epoch 7 of
20): the plain union gave AP50 0.126 and FROC 0.671, the gate at 0.5 gave 0.472 and 0.884 (0.3: 0.425,
0.7: 0.466; NMS 0.396). ``union_score_ratio: 0`` with ``extent: union`` is SAHI's plain union.

A merged box spans the detections that saw the object whole (``extent="whole"``). A detector trained on
tiles learns, from objects that fill a tile, to answer a tile that shows only part of a large object with
a box that runs to the tile's edges; the union of such parts is a box aligned to the tile grid, not the
object (a 114 x 625 px guidewire came out as 558 x 560). A detection whose box reaches an edge of its tile
that lies inside the film (within :data:`CUT_EDGE_PX`) is therefore a *cut view*: it joins and scores its
group, but the group's box is the union of its whole views (detections clear of their tile's inner
edges, and the coarse pass, which sees the whole film); only a group that no member saw whole takes the
union of its cut views. Measured on the same validation films with the recipe's checkpoint after epoch 10 of 20
(the same detections merged both ways): AP50 0.567 with the union of every member, 0.613 with the
whole views (paired bootstrap over the films: +0.045, 95 % interval [0.010, 0.090]; clamp 0.575 -> 0.805,
sponge 0.356 -> 0.442, needle 0.718 -> 0.841), FROC 0.915 and 0.908 (a point-in-box hit depends little
on the box's extent); the score gate stays best at 0.5 with whole views (0.3: 0.580, 0.7: 0.554). Taking
each side of the box from the members whose side is clear of an inner edge (cut views included) gave
0.584: the sides of a cut view that miss the tile's edges are not reliable either. ``extent="union"`` is
SAHI's.

Why SAHI (Akyon et al., ICIP 2022; MIT) is followed, not imported: sahi 0.12.8 requires
``opencv-python`` (which clashes with the ``opencv-python-headless`` Ultralytics and albumentations
install: both own the ``cv2`` package), plus requests, fire, shapely and matplotlib, for about 80 lines
we need (its ``get_slice_bboxes`` layout and ``greedy_nmm``). Its COCO slicer drops objects below
``min_area_ratio`` while leaving them visible in the slice, which the visible-fraction rule forbids.
Slicing and merging are reproduced here with its conventions; ``merge_backend="sahi"`` uses SAHI's own
greedy NMM where it is installed, so the choice is one field, and a test compares the two.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from rfo_bench.detectors.detections import Detections
from rfo_bench.detectors.tiling import TileConfig, cut_tile, slice_windows, tile_to_film, window_film
from toolkit_core.errors import UserInputError

MERGE_METHODS = ("nmm", "greedy_nmm", "nms")
MATCH_METRICS = ("ios", "iou")
MERGE_BACKENDS = ("builtin", "sahi")
EXTENTS = ("whole", "union")

CUT_EDGE_PX = 2.0
"""A tile detection whose box comes within this many tile pixels of an edge of its tile that lies inside
the film saw only part of its object. YOLO regresses a box cut by the tile edge to within a pixel or two
of it: on the shipped recipe's validation films (epoch 10), of the detections within 16 px of an inner
edge and scoring above 0.25, 580 of 666 lie within 1 px, 622 within 2 and 649 within 4."""


@dataclass(frozen=True)
class SliceConfig:
    """How a film is sliced and detections merged.

    Attributes:
        overlap: fraction of the tile side shared by neighbouring tiles (``[0, 1)``; SAHI's default 0.2).
        coarse_pass: also detect on the whole film shrunk to one tile (objects larger than a tile).
        merge: ``nmm`` (transitive merging of detections that agree where their tiles overlap, into one
            box: see ``extent``; the default), ``greedy_nmm`` (SAHI's default: the boxes matched to each
            keeper) or ``nms`` (keep the best box).
        match_metric: ``ios`` (intersection over the smaller box: a clipped part matches its whole) or ``iou``.
        match_threshold: boxes of one class at least this similar are merged.
        union_score_ratio: ``nmm`` and ``greedy_nmm``: a matched detection extends its group's box (and, for
            ``nmm``, links groups) only when it scores at least this fraction of the group's best; a weaker
            one is suppressed as a duplicate. ``0``: every matched box joins (with ``extent="union"``, SAHI's).
        class_agnostic: merge across classes too.
        max_detections: detections kept per film after merging (highest scores).
        extent: ``whole`` (a merged box spans the members that saw the object whole: the coarse pass and
            tile detections clear of their tile's inner edges; the union of every member only when none
            did) or ``union`` (every member; SAHI's). ``nms`` keeps the keeper's box either way.
        merge_backend: ``builtin`` or ``sahi`` (its ``batched_nmm`` / ``batched_greedy_nmm`` / ``batched_nms``
            decide the groups, on plain overlaps: SAHI does not know which tile a box came from).
    """

    overlap: float = 0.25
    coarse_pass: bool = True
    merge: str = "nmm"
    match_metric: str = "ios"
    match_threshold: float = 0.5
    union_score_ratio: float = 0.5
    class_agnostic: bool = False
    max_detections: int = 300
    merge_backend: str = "builtin"
    extent: str = "whole"

    def __post_init__(self) -> None:
        if not 0 <= self.overlap < 1:
            raise UserInputError("must be in [0, 1)", field="overlap", value=self.overlap)
        for name, allowed in (("merge", MERGE_METHODS), ("match_metric", MATCH_METRICS),
                              ("merge_backend", MERGE_BACKENDS), ("extent", EXTENTS)):
            if getattr(self, name) not in allowed:
                raise UserInputError("expected one of: " + ", ".join(allowed), field=name, value=getattr(self, name))
        if not 0 < self.match_threshold <= 1:
            raise UserInputError("must be in (0, 1]", field="match_threshold", value=self.match_threshold)
        if not 0 <= self.union_score_ratio <= 1:
            raise UserInputError("must be in [0, 1]", field="union_score_ratio", value=self.union_score_ratio)
        if not isinstance(self.max_detections, int) or self.max_detections < 1:
            raise UserInputError("must be a positive integer", field="max_detections", value=self.max_detections)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overlap_row(box: np.ndarray, others: np.ndarray, metric: str) -> np.ndarray:
    """IoU or IoS of ``box [4]`` (or ``[M, 4]``, pairwise) with ``others [M, 4]`` (``[M]``; 0 where an area is 0)."""
    box = np.broadcast_to(np.asarray(box, dtype=np.float64), others.shape)
    w = np.clip(np.minimum(box[:, 2], others[:, 2]) - np.maximum(box[:, 0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[:, 3], others[:, 3]) - np.maximum(box[:, 1], others[:, 1]), 0, None)
    inter = w * h
    area = np.clip(box[:, 2] - box[:, 0], 0, None) * np.clip(box[:, 3] - box[:, 1], 0, None)
    areas = np.clip(others[:, 2] - others[:, 0], 0, None) * np.clip(others[:, 3] - others[:, 1], 0, None)
    denom = np.minimum(area, areas) if metric == "ios" else area + areas - inter
    return np.divide(inter, denom, out=np.zeros_like(inter), where=denom > 0)


def _clip(boxes: np.ndarray, regions: np.ndarray) -> np.ndarray:
    return np.stack([np.clip(boxes[:, 0], regions[:, 0], regions[:, 2]), np.clip(boxes[:, 1], regions[:, 1], regions[:, 3]),
                     np.clip(boxes[:, 2], regions[:, 0], regions[:, 2]), np.clip(boxes[:, 3], regions[:, 1], regions[:, 3])],
                    axis=1)


def seen_overlap_row(index: int, others: np.ndarray, boxes: np.ndarray, windows: np.ndarray, metric: str) -> np.ndarray:
    """Overlap of box ``index`` with boxes ``others`` *inside the region both their tiles saw*.

    A detection cut by a tile edge only shows the part of the object its tile saw; two detections of
    one object from neighbouring tiles agree where the tiles overlap. Both boxes are clipped to the
    intersection of their two windows before IoS/IoU is taken (for two boxes of one tile, or any box
    against the coarse whole-film pass, that is the plain overlap). Windows that do not intersect give 0.
    """
    regions = np.concatenate([np.maximum(windows[index, :2], windows[others, :2]),
                              np.minimum(windows[index, 2:], windows[others, 2:])], axis=1)
    valid = (regions[:, 2] > regions[:, 0]) & (regions[:, 3] > regions[:, 1])
    first = _clip(np.broadcast_to(boxes[index], (len(others), 4)), regions)
    second = _clip(boxes[others], regions)
    return np.where(valid, overlap_row(first, second, metric), 0.0)


def greedy_groups(boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray, *, metric: str = "ios",
                  threshold: float = 0.5, class_agnostic: bool = False) -> dict[int, list[int]]:
    """Greedy matching in score order: ``{kept index: [indices matched to it]}`` (SAHI's ``greedy_nmm`` groups).

    Each box, from the highest score down (ties in input order), that no earlier box has taken keeps
    itself and takes every later untaken box of its class whose overlap with it is ``>= threshold``.

    Args:
        boxes_xyxy: ``[N, 4]``.
        scores: ``[N]``.
        labels: ``[N]`` classes.
        metric: ``ios`` or ``iou``.
        threshold: the match threshold.
        class_agnostic: match across classes.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    labels = np.asarray(labels)
    taken = np.zeros(len(boxes), dtype=bool)
    groups: dict[int, list[int]] = {}
    for rank, index in enumerate(order):
        if taken[index]:
            continue
        rest = order[rank + 1:]
        rest = rest[~taken[rest]]
        if not class_agnostic:
            rest = rest[labels[rest] == labels[index]]
        matched = rest[overlap_row(boxes[index], boxes[rest], metric) >= threshold] if len(rest) else rest
        taken[matched] = True
        taken[index] = True
        groups[int(index)] = [int(i) for i in matched]
    return groups


def component_groups(boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray, windows_xyxy: np.ndarray, *,
                     metric: str = "ios", threshold: float = 0.5, class_agnostic: bool = False,
                     union_score_ratio: float = 0.0) -> dict[int, list[int]]:
    """Transitive merging: groups of detections that agree where both tiles saw (:func:`seen_overlap_row`).

    An object larger than the overlap of two tiles is seen as a chain of parts, each agreeing only with
    its neighbours; the chain becomes one group. Detections are taken from the highest score down (ties:
    lowest index). One that agrees with no member of a group starts a group (it is that group's keeper).
    One that agrees with members of groups joins the best of them when it scores at least
    ``union_score_ratio`` times that group's keeper, and then also joins the other groups it agrees with
    into it; otherwise it is a suppressed duplicate, in no group. Only group members are matched
    against, so weak detections never link two objects. With ``union_score_ratio`` 0 the groups are the
    connected components of the agreement graph.

    Args:
        boxes_xyxy: ``[N, 4]`` film pixels.
        scores: ``[N]``.
        labels: ``[N]``.
        windows_xyxy: ``[N, 4]`` film window each detection came from.
        metric: ``ios`` or ``iou``.
        threshold: the match threshold.
        class_agnostic: match across classes.
        union_score_ratio: the fraction of a group keeper's score a detection needs to join it.

    Returns:
        ``{keeper index: [other members]}``; suppressed duplicates are in no group.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    windows = np.asarray(windows_xyxy, dtype=np.float64).reshape(-1, 4)
    score = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels)
    order = np.argsort(-score, kind="stable")
    group_of = np.full(len(boxes), -1, dtype=np.int64)  # the group of each member so far; -1: none (yet)
    keepers: list[int] = []
    members: list[list[int]] = []
    for index in (int(i) for i in order):
        others = np.flatnonzero(group_of >= 0)
        if not class_agnostic:
            others = others[labels[others] == labels[index]]
        others = others[(boxes[others, 0] < boxes[index, 2]) & (boxes[others, 2] > boxes[index, 0])
                        & (boxes[others, 1] < boxes[index, 3]) & (boxes[others, 3] > boxes[index, 1])]
        agreeing = others[seen_overlap_row(index, others, boxes, windows, metric) >= threshold] if len(others) else others
        found = sorted({int(group_of[i]) for i in agreeing}, key=lambda g: (-score[keepers[g]], keepers[g]))
        if not found:
            group_of[index] = len(keepers)
            keepers.append(index)
            members.append([index])
            continue
        best = found[0]
        if score[index] < union_score_ratio * score[keepers[best]]:
            continue  # a weaker duplicate: suppressed, and it links nothing
        group_of[index] = best
        members[best].append(index)
        for other in found[1:]:  # the detection bridges groups: one object seen in parts
            for member in members[other]:
                group_of[member] = best
            members[best] += members[other]
            members[other] = []
    return {keepers[g]: [i for i in group if i != keepers[g]] for g, group in enumerate(members) if group}


def _sahi_groups(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, config: SliceConfig) -> dict[int, list[int]]:
    try:
        from sahi.postprocess import combine
    except ImportError:
        raise UserInputError("merge_backend 'sahi' needs the sahi package (pip install sahi)",
                             field="merge_backend") from None
    predictions = np.concatenate([boxes, scores[:, None], labels[:, None]], axis=1).astype(np.float32)
    if config.class_agnostic:
        predictions[:, 5] = 0
    metric = config.match_metric.upper()
    if config.merge == "nms":
        return {int(k): [] for k in combine.batched_nms(predictions, metric, config.match_threshold)}
    merge = combine.batched_nmm if config.merge == "nmm" else combine.batched_greedy_nmm
    return {int(k): [int(i) for i in v] for k, v in merge(predictions, metric, config.match_threshold).items()}


def cut_views(boxes_xyxy: np.ndarray, window_xyxy: tuple[int, int, int, int], height: int, width: int) -> np.ndarray:
    """``bool [N]``: which boxes (film pixels) reach, within :data:`CUT_EDGE_PX`, an edge of their tile's
    window that lies inside the ``height x width`` film (a tile edge on or past the film's border cuts nothing)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    x0, y0, x1, y1 = window_xyxy
    return (((x0 > 0) & (boxes[:, 0] <= x0 + CUT_EDGE_PX)) | ((y0 > 0) & (boxes[:, 1] <= y0 + CUT_EDGE_PX))
            | ((x1 < width) & (boxes[:, 2] >= x1 - CUT_EDGE_PX)) | ((y1 < height) & (boxes[:, 3] >= y1 - CUT_EDGE_PX)))


def merge_detections(boxes_xyxy: np.ndarray, scores: np.ndarray, labels: np.ndarray, config: SliceConfig,
                     windows_xyxy: np.ndarray | None = None, cut: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge duplicate detections from overlapping tiles.

    Args:
        boxes_xyxy: ``float32 [N, 4]`` film pixels.
        scores: ``float32 [N]``.
        labels: ``int64 [N]``.
        config: merge method, metric, threshold, backend, cap.
        windows_xyxy: ``[N, 4]`` film window each detection came from (``nmm`` compares boxes inside the
            region both windows saw); ``None``: one window for all (plain overlap).
        cut: ``bool [N]``, the detections that saw only part of their object (:func:`cut_views`); with
            ``config.extent == "whole"`` they shape a merged box only when no member saw it whole.
            ``None``: none did.

    Returns:
        ``(boxes [K, 4], scores [K], labels [K])``, highest score first, ``K <= config.max_detections``.
        ``nmm`` and ``greedy_nmm`` give each group the union of its boxes (members scoring at least
        ``config.union_score_ratio`` times the keeper; of those, the whole views where ``config.extent``
        is ``whole`` and any member is one) and the keeper's score and class; ``nms`` keeps the keeper's box.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if not len(boxes):
        return boxes, scores, labels
    if config.merge_backend == "sahi":
        groups = _sahi_groups(boxes, scores, labels, config)
    elif config.merge == "nmm":
        if windows_xyxy is None:
            big = np.array([-np.inf, -np.inf, np.inf, np.inf])
            windows_xyxy = np.broadcast_to(big, boxes.shape)
        groups = component_groups(boxes, scores, labels, windows_xyxy, metric=config.match_metric,
                                  threshold=config.match_threshold, class_agnostic=config.class_agnostic,
                                  union_score_ratio=config.union_score_ratio)
    else:
        groups = greedy_groups(boxes, scores, labels, metric=config.match_metric, threshold=config.match_threshold,
                               class_agnostic=config.class_agnostic)
    if config.merge != "nms" and not (config.merge == "nmm" and config.merge_backend == "builtin"):
        # greedy and SAHI's groups: weaker matches are suppressed duplicates, not part of the union
        groups = {k: [i for i in v if scores[i] >= config.union_score_ratio * scores[k]] for k, v in groups.items()}
    keep = np.array(sorted(groups, key=lambda k: (-float(scores[k]), k)), dtype=np.int64)[:config.max_detections]
    out = boxes[keep].copy()
    if cut is not None and np.shape(cut) != (len(boxes),):
        raise ValueError(f"cut must be one flag per box: {np.shape(cut)} for {len(boxes)} boxes")
    cut = np.zeros(len(boxes), dtype=bool) if cut is None or config.extent == "union" else np.asarray(cut, bool)
    if config.merge != "nms":
        for row, index in enumerate(keep):
            members = np.array([int(index), *groups[int(index)]], dtype=np.int64)
            whole = members[~cut[members]]
            spans = boxes[whole if len(whole) else members]
            out[row] = (spans[:, 0].min(), spans[:, 1].min(), spans[:, 2].max(), spans[:, 3].max())
    return out, scores[keep], labels[keep]


def predict_sliced(predict_tile, pixels: np.ndarray, tiling: TileConfig, config: SliceConfig):
    """Detections on a whole film from a tile detector.

    Args:
        predict_tile: ``predict_tile(tile float32 [h, w] in [0, 1]) -> Detections`` in tile pixels
            (a trained detector's ``predict``; it must not resize a ``T x T`` tile away from native
            spacing, which holds when its ``imgsz`` equals ``tiling.tile_size``).
        pixels: ``float32 [H, W]`` film in ``[0, 1]`` (as :func:`~rfo_bench.io.images.read_image` gives).
        tiling: tile size and film window of the detector's training.
        config: overlap, coarse pass and merging.

    Returns:
        :class:`~rfo_bench.detectors.detections.Detections` in film pixels, clipped to the film.
    """
    from rfo_bench.detectors.tiling import TilePlan, whole_film_plan

    film = np.asarray(pixels, dtype=np.float32)
    if film.ndim == 3:
        film = film.mean(axis=2)
    if film.ndim != 2:
        raise UserInputError(f"expected a [H, W] film, got shape {tuple(film.shape)}", field="pixels")
    film = window_film(film, tiling.window_percentiles)
    height, width = film.shape
    no_boxes, no_ids = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    plans = [TilePlan((int(x0), int(y0), int(x1), int(y1)), 1.0, no_boxes, no_ids)
             for x0, y0, x1, y1 in slice_windows(height, width, tiling.tile_size, config.overlap)]
    if config.coarse_pass and max(height, width) > tiling.tile_size:
        plans.append(whole_film_plan(height, width, no_boxes, no_ids, tiling.tile_size))
    boxes, scores, labels, windows, cut = [], [], [], [], []
    for plan in plans:
        found = predict_tile(cut_tile(film, plan))
        if not len(found):
            continue
        in_film = tile_to_film(found.boxes_xyxy, plan.origin_xy, plan.scale)
        boxes.append(in_film)
        scores.append(found.scores)
        labels.append(found.category_ids)
        windows.append(np.broadcast_to(np.asarray(plan.window_xyxy, np.float32), (len(found), 4)))
        # the coarse pass's window is the whole film: none of its edges lies inside it, nothing is cut
        cut.append(cut_views(in_film, plan.window_xyxy, height, width))
    if not boxes:
        return Detections.empty()
    all_boxes = np.concatenate(boxes)
    all_boxes[:, [0, 2]] = all_boxes[:, [0, 2]].clip(0, width)
    all_boxes[:, [1, 3]] = all_boxes[:, [1, 3]].clip(0, height)
    valid = (all_boxes[:, 2] > all_boxes[:, 0]) & (all_boxes[:, 3] > all_boxes[:, 1])  # not only in padding
    merged = merge_detections(all_boxes[valid], np.concatenate(scores)[valid], np.concatenate(labels)[valid], config,
                              np.concatenate(windows)[valid], np.concatenate(cut)[valid])
    return Detections(*merged)


class SlicedDetector:
    """A tile-trained detector that predicts on whole films (see :class:`~rfo_bench.detectors.api.TrainedDetector`).

    Args:
        inner: the trained tile detector (its ``predict`` works in tile pixels).
        tiling: the tiling it was trained with (tile size and film window).
        config: slicing and merging.
    """

    def __init__(self, inner, tiling: TileConfig, config: SliceConfig | None = None) -> None:
        self.inner = inner
        self.categories = inner.categories
        self.tiling = tiling
        self.config = config or SliceConfig()

    def predict(self, pixels: np.ndarray):
        return predict_sliced(self.inner.predict, pixels, self.tiling, self.config)

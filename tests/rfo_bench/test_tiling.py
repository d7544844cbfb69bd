"""Tile cutting, the visible-fraction rule, coordinates and sliced inference (pure functions, no training).

Films are non-square (170 wide x 110 high, and its double) so that a swapped height and width fails.
Boxes are compared with a tolerance of 1e-4 px (they come from float32 arithmetic on integer offsets).
"""

from __future__ import annotations

import numpy as np
import pytest

from rfo_bench.detectors.api import Detections
from rfo_bench.detectors.sliced import (
    CUT_EDGE_PX,
    SliceConfig,
    component_groups,
    cut_views,
    greedy_groups,
    merge_detections,
    overlap_row,
    predict_sliced,
)
from rfo_bench.detectors.tiling import (
    TileConfig,
    clip_to_window,
    cut_tile,
    film_to_tile,
    plan_dataset_tiles,
    plan_window,
    slice_windows,
    tile_to_film,
    whole_film_plan,
    window_film,
)
from toolkit_core.errors import UserInputError

HEIGHT, WIDTH = 110, 170
ATOL = 1e-4


def random_boxes(rng: np.random.Generator, n: int, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    x1 = rng.uniform(0, width - 4, n)
    y1 = rng.uniform(0, height - 4, n)
    w = rng.uniform(2, 40, n)
    h = rng.uniform(2, 25, n)
    return np.stack([x1, y1, np.minimum(x1 + w, width), np.minimum(y1 + h, height)], axis=1).astype(np.float32)


def test_a_tile_keeps_every_whole_object_with_its_exact_box() -> None:
    boxes = np.array([[40.5, 30.25, 52.0, 41.0], [60.0, 33.0, 75.5, 60.0], [150.0, 90.0, 160.0, 100.0]], np.float32)
    ids = np.array([3, 5, 3])
    plan = plan_window((32, 24, 96, 88), boxes, ids, TileConfig(tile_size=64))
    assert plan is not None
    np.testing.assert_allclose(plan.boxes_xyxy, [[8.5, 6.25, 20.0, 17.0], [28.0, 9.0, 43.5, 36.0]], atol=ATOL)
    assert plan.category_ids.tolist() == [3, 5]  # the third object lies outside the window: not visible
    assert len(plan.mask_xyxy) == 0


def test_visible_fraction_rule_keeps_clipped_boxes_and_never_leaves_a_cut_object_unlabelled() -> None:
    # a 10 x 10 box: 60 % inside the window (kept, clipped), and one 30 % inside (below the 0.5 rule)
    boxes = np.array([[60.0, 10.0, 70.0, 20.0], [10.0, 57.0, 20.0, 67.0]], np.float32)
    ids = np.array([1, 2])
    window = (0, 0, 66, 60)
    _, fraction = clip_to_window(boxes, window)
    np.testing.assert_allclose(fraction, [0.6, 0.3], atol=1e-6)
    assert plan_window(window, boxes, ids, TileConfig(tile_size=64, min_visible_fraction=0.5)) is None  # drop
    masked = plan_window(window, boxes, ids, TileConfig(tile_size=64, min_visible_fraction=0.5, cut_policy="mask"))
    assert masked is not None
    np.testing.assert_allclose(masked.boxes_xyxy, [[60.0, 10.0, 66.0, 20.0]], atol=ATOL)
    np.testing.assert_allclose(masked.mask_xyxy, [[10.0, 57.0, 20.0, 60.0]], atol=ATOL)
    film = np.zeros((HEIGHT, WIDTH), np.float32)
    film[57:67, 10:20] = 1.0  # the cut object, bright on a dark film
    tile = cut_tile(film, masked)
    assert tile[57:60, 10:20].max() == 0.0  # painted with the tile median (0): no unlabelled object left
    # a lower rule keeps both
    both = plan_window(window, boxes, ids, TileConfig(tile_size=64, min_visible_fraction=0.25))
    assert both is not None and both.category_ids.tolist() == [1, 2]


@pytest.mark.parametrize("policy", ["drop", "mask"])
def test_planned_tiles_label_every_visible_object(policy: str) -> None:
    config = TileConfig(tile_size=48, tiles_per_object=3, negative_ratio=1.0, min_visible_fraction=0.6,
                        cut_policy=policy, include_whole_films=False)
    rng = np.random.default_rng(7)
    films = [random_boxes(rng, int(rng.integers(0, 6))) for _ in range(8)]
    annotations = [(b, np.arange(len(b)) + 1) for b in films]
    plans = plan_dataset_tiles([(HEIGHT, WIDTH)] * len(films), annotations, config, seed=0)
    positives = negatives = 0
    for boxes, film_plans in zip(films, plans, strict=True):
        for plan in film_plans:
            x0, y0, x1, y1 = plan.window_xyxy
            assert (x1 - x0, y1 - y0) == (48, 48) and 0 <= x0 <= WIDTH - 48 and 0 <= y0 <= HEIGHT - 48
            clipped, fraction = clip_to_window(boxes, plan.window_xyxy)
            labelled = film_to_tile(clipped[fraction >= 0.6], (x0, y0))
            np.testing.assert_allclose(plan.boxes_xyxy, labelled, atol=ATOL)  # every object above the rule, exactly
            below = film_to_tile(clipped[(fraction > 0) & (fraction < 0.6)], (x0, y0))
            np.testing.assert_allclose(plan.mask_xyxy.reshape(-1, 4), below, atol=ATOL)  # the rest masked
            if policy == "drop":
                assert len(below) == 0
            positives += bool(len(plan.category_ids))
            negatives += not len(plan.category_ids)
    assert positives > 20 and negatives > 10  # the mix is honoured (a lost tile is rare, never common)


def test_coordinates_round_trip_tile_film_tile() -> None:
    boxes = random_boxes(np.random.default_rng(1), 20)
    for origin, scale in (((13, 7), 1.0), ((0, 0), 64 / 170), ((96, 40), 0.5)):
        back = film_to_tile(tile_to_film(film_to_tile(boxes, origin, scale), origin, scale), origin, scale)
        np.testing.assert_allclose(back, film_to_tile(boxes, origin, scale), atol=ATOL)
        np.testing.assert_allclose(tile_to_film(film_to_tile(boxes, origin, scale), origin, scale), boxes, atol=ATOL)


def test_cut_tile_pads_past_the_film_and_keeps_height_and_width_apart() -> None:
    film = np.arange(HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH) / (HEIGHT * WIDTH)
    plan = plan_window((150, 90, 214, 154), np.zeros((0, 4)), np.zeros(0, np.int64), TileConfig(tile_size=64))
    tile = cut_tile(film, plan)
    assert tile.shape == (64, 64)
    np.testing.assert_array_equal(tile[:20, :20], film[90:110, 150:170])
    assert tile[20:].max() == 0 and tile[:, 20:].max() == 0
    shrunk = cut_tile(film, whole_film_plan(HEIGHT, WIDTH, np.zeros((0, 4)), np.zeros(0), 64))
    assert shrunk.shape == (round(HEIGHT * 64 / WIDTH), 64)


def test_slice_windows_cover_the_film_like_sahi() -> None:
    windows = slice_windows(HEIGHT, WIDTH, 64, 0.25)
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for x0, y0, x1, y1 in windows:
        assert x1 - x0 == 64 and y1 - y0 == 64 and x1 <= WIDTH and y1 <= HEIGHT
        covered[y0:y1, x0:x1] = True
    assert covered.all()
    assert windows[:, 2].max() == WIDTH and windows[:, 3].max() == HEIGHT
    assert slice_windows(40, 30, 64, 0.2).tolist() == [[0, 0, 64, 64]]  # smaller than a tile: one padded tile
    sahi = pytest.importorskip("sahi.slicing")
    assert windows.tolist() == sahi.get_slice_bboxes(HEIGHT, WIDTH, 64, 64, False, 0.25, 0.25)


def test_window_film_stretches_a_faint_object_over_the_grey_levels() -> None:
    rng = np.random.default_rng(0)
    film = (0.30 + 0.002 * rng.standard_normal((HEIGHT, WIDTH))).astype(np.float32)
    film[40:50, 60:90] += 0.01  # a sponge-like contrast of 1 % of the 16-bit range
    windowed = window_film(film, (0.5, 99.9))
    # as 8 bits: a blind cast separates object and background by about 3 grey levels, the window by > 50
    blind = np.round(film * 255)
    assert blind[40:50, 60:90].mean() - blind[:30].mean() < 4
    assert (windowed[40:50, 60:90].mean() - windowed[:30].mean()) * 255 > 50
    assert windowed.dtype == np.float32 and windowed.min() >= 0 and windowed.max() <= 1
    assert window_film(np.full((11, 17), 0.4, np.float32)).max() == 0  # a flat film does not divide by zero


def bright_box_detector(category_id: int = 4):
    """A stand-in tile detector: one box per connected region of pixels above 0.5, score 0.9 (tile pixels)."""
    from scipy import ndimage

    def predict(tile: np.ndarray) -> Detections:
        regions, count = ndimage.label(tile > 0.5)
        if not count:
            return Detections.empty()
        boxes = np.array([[s[1].start, s[0].start, s[1].stop, s[0].stop] for s in ndimage.find_objects(regions)],
                         np.float32)
        return Detections(boxes, np.full(count, 0.9, np.float32), np.full(count, category_id, np.int64))

    return predict


def test_one_object_spanning_tiles_merges_into_one_box() -> None:
    film = np.zeros((2 * HEIGHT, 2 * WIDTH), np.float32)
    film[50:150, 70:230] = 1.0  # 160 x 100 px: larger than a 64-px tile, cut by many tile edges
    tiling = TileConfig(tile_size=64)
    found = predict_sliced(bright_box_detector(), film, tiling, SliceConfig(overlap=0.25, coarse_pass=False))
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes_xyxy[0], [70, 50, 230, 150], atol=ATOL)
    assert found.category_ids.tolist() == [4]
    # the coarse pass sees the same object whole, shrunk (pixel-rounded): the merged box is its box, not the
    # union of the tile boxes (each cut by a tile edge)
    coarse = predict_sliced(bright_box_detector(), film, tiling, SliceConfig(overlap=0.25, coarse_pass=True))
    assert len(coarse) == 1
    np.testing.assert_allclose(coarse.boxes_xyxy[0], [70, 50, 230, 150], atol=2 * WIDTH / 64)
    # SAHI's greedy NMM and plain NMS leave the chain of parts in pieces: why transitive merging is the default
    for merge in ("greedy_nmm", "nms"):
        assert len(predict_sliced(bright_box_detector(), film, tiling,
                                  SliceConfig(overlap=0.25, coarse_pass=False, merge=merge))) > 1


def test_an_object_cut_by_a_tile_edge_merges_with_its_whole_view() -> None:
    film = np.zeros((HEIGHT, WIDTH), np.float32)
    film[30:52, 40:62] = 1.0  # 22 px, smaller than the 64-px tile, across the edge at x = 48 of tile (0, 0)
    found = predict_sliced(bright_box_detector(), film, TileConfig(tile_size=64),
                           SliceConfig(overlap=0.25, coarse_pass=False, merge="greedy_nmm"))
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes_xyxy[0], [40, 30, 62, 52], atol=ATOL)


def tile_filling_detector(category_id: int = 4):
    """A stand-in for a tile-trained YOLO on part of a large object: a bright region that runs off the tile
    is answered with a box filling the whole tile (as objects that filled training tiles taught it); a
    region inside the tile gets its exact box."""
    exact = bright_box_detector(category_id)

    def predict(tile: np.ndarray) -> Detections:
        found = exact(tile)
        height, width = tile.shape
        off = ((found.boxes_xyxy[:, :2] <= 0).any(axis=1) | (found.boxes_xyxy[:, 2] >= width)
               | (found.boxes_xyxy[:, 3] >= height))
        boxes = found.boxes_xyxy.copy()
        boxes[off] = [0, 0, width, height]
        return Detections(boxes, found.scores, found.category_ids)

    return predict


def test_a_large_object_takes_its_box_from_the_views_that_saw_it_whole() -> None:
    film = np.zeros((2 * HEIGHT, 2 * WIDTH), np.float32)
    film[50:150, 70:230] = 1.0  # 160 x 100 px: no 64-px tile sees it whole, the coarse pass does
    tiling = TileConfig(tile_size=64)
    whole = predict_sliced(tile_filling_detector(), film, tiling, SliceConfig(overlap=0.25))
    assert len(whole) == 1
    np.testing.assert_allclose(whole.boxes_xyxy[0], [70, 50, 230, 150], atol=2 * WIDTH / 64)  # the coarse box
    # SAHI's union of every member: the tiles' boxes, a box on the tile grid far larger than the object
    union = predict_sliced(tile_filling_detector(), film, tiling, SliceConfig(overlap=0.25, extent="union"))
    assert len(union) == 1
    x0, y0, x1, y1 = union.boxes_xyxy[0]
    assert (x1 - x0) * (y1 - y0) > 1.5 * 160 * 100
    assert x0 % 48 == 0 and y0 % 48 == 0  # tile starts: a stride of 48 px (64-px tiles, overlap 0.25)
    # with no view of it whole (no coarse pass), the cut views' union is all there is
    cut_only = predict_sliced(tile_filling_detector(), film, tiling, SliceConfig(overlap=0.25, coarse_pass=False))
    np.testing.assert_allclose(cut_only.boxes_xyxy, union.boxes_xyxy, atol=ATOL)


def test_a_small_object_cut_by_one_tile_keeps_the_box_of_the_tile_that_saw_it_whole() -> None:
    film = np.zeros((HEIGHT, WIDTH), np.float32)
    film[30:52, 38:60] = 1.0  # 22 px, whole in the tile at (0, 0), cut by the tiles at x = 48 and at y = 46
    found = predict_sliced(tile_filling_detector(), film, TileConfig(tile_size=64),
                           SliceConfig(overlap=0.25, coarse_pass=False))
    assert len(found) == 1
    np.testing.assert_allclose(found.boxes_xyxy[0], [38, 30, 60, 52], atol=ATOL)


def test_cut_views_are_boxes_at_a_tile_edge_inside_the_film() -> None:
    window = (48, 48, 112, 112)  # a 64-px tile inside a 170 x 110 film: its bottom edge (y 112) lies past it
    boxes = np.array([[48, 60, 70, 80],  # at the left edge: cut
                      [48 + CUT_EDGE_PX + 0.5, 60, 70, 80],  # clear of it
                      [60, 60, 112 - CUT_EDGE_PX, 80],  # within the tolerance of the right edge: cut
                      [60, 80, 80, 112],  # at the bottom edge, which is past the film's: not cut
                      [60, 48 + CUT_EDGE_PX - 0.5, 80, 70]], np.float32)  # within the tolerance of the top
    assert cut_views(boxes, window, HEIGHT, WIDTH).tolist() == [True, False, True, False, True]
    # the coarse pass's window is the whole film: nothing it finds is cut
    assert not cut_views(boxes, (0, 0, WIDTH, HEIGHT), HEIGHT, WIDTH).any()
    # merge_detections: a cut view joins the group but leaves its extent to the whole view

    with pytest.raises(ValueError, match="one flag per box"):
        merge_detections(boxes, np.ones(5, np.float32), np.ones(5), SliceConfig(), cut=np.array([True]))


@pytest.mark.parametrize("merge", ["nmm", "greedy_nmm"])
def test_a_cut_view_joins_a_group_but_leaves_its_box_to_the_whole_view(merge: str) -> None:
    pair = np.array([[48, 60, 112, 80], [40, 60, 70, 80]], np.float32)  # a cut view and the whole view
    scores, labels, cut = np.array([0.9, 0.8], np.float32), np.array([1, 1]), np.array([True, False])
    merged = merge_detections(pair, scores, labels, SliceConfig(merge=merge), cut=cut)
    np.testing.assert_allclose(merged[0], [[40, 60, 70, 80]], atol=ATOL)
    assert merged[1].tolist() == pytest.approx([0.9])  # the keeper's score
    union = merge_detections(pair, scores, labels, SliceConfig(merge=merge, extent="union"), cut=cut)
    np.testing.assert_allclose(union[0], [[40, 60, 112, 80]], atol=ATOL)
    # no whole view in the group: the union of its cut views is all there is
    only_cut = merge_detections(pair, scores, labels, SliceConfig(merge=merge), cut=np.array([True, True]))
    np.testing.assert_allclose(only_cut[0], union[0], atol=ATOL)


def test_neighbouring_objects_that_disagree_where_tiles_overlap_stay_apart() -> None:
    film = np.zeros((HEIGHT, WIDTH), np.float32)
    film[30:40, 30:47] = 1.0  # ends 1 px before the overlap zone of the first two tiles (x 48..64)
    film[30:40, 49:70] = 1.0  # a second object, cut by the first tile's edge at x = 64
    found = predict_sliced(bright_box_detector(), film, TileConfig(tile_size=64), SliceConfig(overlap=0.25,
                                                                                             coarse_pass=False))
    assert len(found) == 2


def test_two_objects_of_different_classes_are_not_merged() -> None:
    boxes = np.array([[10, 10, 50, 40], [12, 11, 48, 39], [11, 10, 50, 41]], np.float32)
    scores = np.array([0.9, 0.8, 0.7], np.float32)
    labels = np.array([1, 2, 1])
    merged_boxes, merged_scores, merged_labels = merge_detections(boxes, scores, labels, SliceConfig())
    assert merged_labels.tolist() == [1, 2]
    np.testing.assert_allclose(merged_boxes[0], [10, 10, 50, 41], atol=ATOL)  # union of the class-1 pair
    np.testing.assert_allclose(merged_scores, [0.9, 0.8], atol=1e-6)
    agnostic = merge_detections(boxes, scores, labels, SliceConfig(class_agnostic=True))
    assert len(agnostic[0]) == 1


def weak_halo_detector(category_id: int = 4):
    """A stand-in tile detector that, like a YOLO scored for AP, adds weak boxes around each confident one:
    the bright region's box at 0.9 and two wider boxes containing it at 0.01 and 0.02 (tile pixels)."""
    confident = bright_box_detector(category_id)

    def predict(tile: np.ndarray) -> Detections:
        found = confident(tile)
        if not len(found):
            return found
        grow = np.array([[-20, -20, 20, 20], [-6, -30, 30, 6]], np.float32)
        halo = (found.boxes_xyxy[:, None, :] + grow[None]).reshape(-1, 4)
        boxes = np.concatenate([found.boxes_xyxy, halo])
        scores = np.concatenate([found.scores, np.tile(np.array([0.01, 0.02], np.float32), len(found))])
        return Detections(boxes, scores, np.full(len(boxes), category_id, np.int64))

    return predict


@pytest.mark.parametrize("merge", ["nmm", "greedy_nmm"])
def test_weak_boxes_do_not_stretch_a_confident_box(merge: str) -> None:
    film = np.zeros((HEIGHT, WIDTH), np.float32)
    film[40:52, 30:42] = 1.0  # 12 px, inside the first tile only
    tiling = TileConfig(tile_size=64)
    gated = predict_sliced(weak_halo_detector(), film, tiling, SliceConfig(coarse_pass=False, merge=merge))
    assert len(gated) == 1 and gated.scores[0] == pytest.approx(0.9)
    np.testing.assert_allclose(gated.boxes_xyxy[0], [30, 40, 42, 52], atol=ATOL)
    # the plain union of every member (SAHI's) lets 0.01-score boxes stretch it to several times the object
    # (extent "union": this stand-in's halo boxes run past the tile's edges, which makes them cut views)
    union = predict_sliced(weak_halo_detector(), film, tiling, SliceConfig(coarse_pass=False, merge=merge,
                                                                            union_score_ratio=0.0, extent="union"))
    width, height = union.boxes_xyxy[0, 2:] - union.boxes_xyxy[0, :2]
    assert width > 2 * 12 and height > 2 * 12


def test_two_objects_linked_only_by_weak_boxes_stay_two() -> None:
    boxes = np.array([[10, 10, 30, 30], [50, 10, 70, 30], [20, 5, 60, 35]], np.float32)  # the third spans both
    scores = np.array([0.9, 0.8, 0.05], np.float32)
    labels = np.array([1, 1, 1])
    merged_boxes, merged_scores, _ = merge_detections(boxes, scores, labels, SliceConfig(match_metric="ios"))
    np.testing.assert_allclose(merged_boxes, boxes[:2], atol=ATOL)
    np.testing.assert_allclose(merged_scores, [0.9, 0.8], atol=1e-6)
    chained = merge_detections(boxes, scores, labels, SliceConfig(union_score_ratio=0.0))
    assert len(chained[0]) == 1  # without the gate the weak box joins both into one


def test_transitive_groups_without_the_gate_are_connected_components() -> None:
    rng = np.random.default_rng(5)
    for _ in range(5):
        boxes = random_boxes(rng, 40).astype(np.float64)
        scores = rng.permutation(40) / 40
        labels = rng.integers(1, 3, 40)
        everywhere = np.broadcast_to(np.array([-np.inf, -np.inf, np.inf, np.inf]), boxes.shape)
        groups = component_groups(boxes, scores, labels, everywhere, metric="ios", threshold=0.5)
        # the components of the graph "same class and IoS >= 0.5", by repeated flooding
        component = np.arange(40)
        for _ in range(40):
            for i in range(40):
                linked = (labels == labels[i]) & (overlap_row(boxes[i], boxes, "ios") >= 0.5)
                component[linked] = np.minimum(component[linked], component[i])
                component[i] = component[linked].min()
        ours = sorted(sorted([k, *v]) for k, v in groups.items())
        expected = sorted(sorted(np.flatnonzero(component == c).tolist()) for c in np.unique(component))
        assert ours == expected
        assert all(scores[k] == max(scores[[k, *v]]) for k, v in groups.items())  # the keeper scores highest


def test_greedy_groups_match_sahi() -> None:
    combine = pytest.importorskip("sahi.postprocess.combine")
    rng = np.random.default_rng(3)
    boxes = random_boxes(rng, 60)
    scores = rng.permutation(60).astype(np.float32) / 60  # distinct scores: no ties decide the order
    labels = rng.integers(1, 3, 60)
    ours = greedy_groups(boxes, scores, labels, metric="ios", threshold=0.5)
    predictions = np.concatenate([boxes, scores[:, None], labels[:, None]], axis=1)
    theirs = combine.batched_greedy_nmm(predictions, "IOS", 0.5)
    assert {k: sorted(v) for k, v in ours.items()} == {int(k): sorted(int(i) for i in v) for k, v in theirs.items()}


def test_bad_tile_settings_are_user_errors() -> None:
    with pytest.raises(UserInputError, match="min_visible_fraction"):
        TileConfig(min_visible_fraction=0)
    with pytest.raises(UserInputError, match="cut_policy"):
        TileConfig(cut_policy="ignore")
    with pytest.raises(UserInputError, match="overlap"):
        SliceConfig(overlap=1.0)
    with pytest.raises(UserInputError, match="union_score_ratio"):
        SliceConfig(union_score_ratio=1.5)
    with pytest.raises(UserInputError, match="extent"):
        SliceConfig(extent="intersection")

"""FROC: the object-CXR reference protocol, its corrected variant, shapes, and weighted replicates."""

from __future__ import annotations

import numpy as np
import pytest

from rfo_bench.metrics.froc import FPS_THRESHOLDS, Shape, froc_curve, froc_events, points_inside


def reference_loop(pred_image, pred_score, pred_xy, shapes, fps=FPS_THRESHOLDS):
    """A literal statement of the object-CXR / RFO Bench script, one prediction at a time."""
    num_image = len(shapes)
    num_object = sum(len(s) for s in shapes)
    order = sorted(range(len(pred_score)), key=lambda i: pred_score[i], reverse=True)
    hits, false_positives, idx, hit_ids, froc = 0, 0, 0, set(), []
    for i in order:
        inside_any = False
        for k, shape in enumerate(shapes[pred_image[i]]):
            if points_inside(shape, np.array([pred_xy[i]]))[0]:
                inside_any = True
                if (pred_image[i], k) not in hit_ids:
                    hits += 1
                    hit_ids.add((pred_image[i], k))
        if not inside_any:
            false_positives += 1
        if false_positives / num_image >= fps[idx]:
            froc.append(hits / num_object)
            idx += 1
            if len(froc) == len(fps):
                break
    while froc and len(froc) < len(fps):
        froc.append(froc[-1])
    return froc


def corrected_loop(pred_image, pred_score, pred_xy, shapes, fps=FPS_THRESHOLDS):
    """Every threshold crossed by a prediction is recorded at it; unreached ones get the final sensitivity."""
    num_image = len(shapes)
    num_object = sum(len(s) for s in shapes)
    order = sorted(range(len(pred_score)), key=lambda i: pred_score[i], reverse=True)
    hits, false_positives, hit_ids, froc = 0, 0, set(), []
    for i in order:
        inside_any = False
        for k, shape in enumerate(shapes[pred_image[i]]):
            if points_inside(shape, np.array([pred_xy[i]]))[0]:
                inside_any = True
                if (pred_image[i], k) not in hit_ids:
                    hits += 1
                    hit_ids.add((pred_image[i], k))
        if not inside_any:
            false_positives += 1
        while len(froc) < len(fps) and false_positives / num_image >= fps[len(froc)]:
            froc.append(hits / num_object)
    while len(froc) < len(fps):
        froc.append(hits / num_object)
    return froc


def random_problem(seed: int, num_images: int = 12):
    rng = np.random.default_rng(seed)
    shapes = []
    for _ in range(num_images):
        objects = []
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 80, 2)
            w, h = rng.uniform(5, 30, 2)
            kind = ("box", "ellipse", "polygon")[int(rng.integers(0, 3))]
            if kind == "polygon":
                angles = np.sort(rng.uniform(0, 2 * np.pi, 5))
                coords = np.c_[x + w * np.cos(angles), y + h * np.sin(angles)].ravel()
                objects.append(Shape("polygon", tuple(float(v) for v in coords)))
            else:
                objects.append(Shape(kind, (float(x), float(y), float(x + w), float(y + h))))
        shapes.append(objects)
    n = int(rng.integers(5, 80))
    pred_image = rng.integers(0, num_images, n)
    pred_score = np.round(rng.random(n), 1)  # many ties: file order must decide
    pred_xy = rng.uniform(0, 100, (n, 2))
    return pred_image, pred_score, pred_xy, shapes


def test_hand_computed_lag_and_padding():
    # 4 images, objects A (image 0) and B (image 1); sorted predictions: FP, hit A, FP, hit B.
    # reference: step 1 FP -> 0.25 FP/img: records 0.125 (sens 0); 0.25 is recorded one step late
    # (after hit A: 0.5); step 3 -> 0.5 FP/img: 0.5; then 1 FP/img is never reached and the last
    # value 0.5 is repeated, ignoring hit B.  Score = (0 + 0.5 * 6) / 7.
    shapes = [[Shape("box", (0, 0, 10, 10))], [Shape("box", (0, 0, 10, 10))], [], []]
    pred_image = np.array([2, 0, 3, 1])
    pred_score = np.array([0.9, 0.8, 0.7, 0.6])
    pred_xy = np.array([[5, 5], [5, 5], [5, 5], [5, 5]], dtype=float)
    events = froc_events(pred_image, pred_score, pred_xy, shapes)
    ref = froc_curve(events)
    assert ref.sensitivity == (0.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)
    assert ref.score == pytest.approx(3.0 / 7.0)
    # corrected: 0.125 and 0.25 both at step 1 (0), 0.5 at step 3 (0.5), the rest = final sensitivity 1.
    fixed = froc_curve(events, variant="corrected")
    assert fixed.sensitivity == (0.0, 0.0, 0.5, 1.0, 1.0, 1.0, 1.0)
    assert fixed.score == pytest.approx(4.5 / 7.0)


def test_already_hit_object_is_neither_hit_nor_false_positive_and_overlaps_hit_both():
    shapes = [[Shape("box", (0, 0, 10, 10)), Shape("box", (5, 5, 20, 20))]]
    pred_xy = np.array([[7, 7], [2, 2], [50, 50]], dtype=float)
    events = froc_events(np.zeros(3, int), np.array([0.9, 0.8, 0.7]), pred_xy, shapes)
    assert events.hits.tolist() == [2, 0, 0]  # the first point lies in both boxes
    assert events.false_positive.tolist() == [False, False, True]


def test_shapes_inside():
    ellipse = Shape("ellipse", (0, 0, 20, 10))  # centre (10, 5), semi-axes 10 and 5
    assert points_inside(ellipse, np.array([[10, 5], [19.9, 5], [1, 1], [10, 10]])).tolist() == [True, True, False, True]
    triangle = Shape("polygon", (0, 0, 10, 0, 0, 10))
    assert points_inside(triangle, np.array([[2, 2], [6, 6]])).tolist() == [True, False]
    box = Shape("box", (0, 0, 4, 3))
    assert points_inside(box, np.array([[4, 3], [4.01, 1]])).tolist() == [True, False]


def test_no_threshold_reached_is_flagged():
    shapes = [[Shape("box", (0, 0, 10, 10))]] + [[] for _ in range(9)]
    events = froc_events(np.array([0]), np.array([0.5]), np.array([[5.0, 5.0]]), shapes)
    result = froc_curve(events)
    assert result.reference_undefined
    assert result.sensitivity == (1.0,) * 7


@pytest.mark.parametrize("seed", range(25))
def test_matches_reference_script_on_random_cases(seed):
    pred_image, pred_score, pred_xy, shapes = random_problem(seed, num_images=2 + seed % 11)  # few images: lag
    events = froc_events(pred_image, pred_score, pred_xy, shapes)
    if sum(len(s) for s in shapes) == 0:
        pytest.skip("no object drawn")
    expected = reference_loop(pred_image, pred_score, pred_xy, shapes)
    got = froc_curve(events)
    # both sides divide the same integer counts (one correctly rounded IEEE division each), so they
    # agree exactly on any CPU; the tolerance only states that nothing beyond that is assumed
    if expected:
        np.testing.assert_allclose(got.sensitivity, expected, rtol=0, atol=1e-12)
    else:
        assert got.reference_undefined
    np.testing.assert_allclose(froc_curve(events, variant="corrected").sensitivity,
                               corrected_loop(pred_image, pred_score, pred_xy, shapes), rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_weights_equal_duplicated_images(seed):
    pred_image, pred_score, pred_xy, shapes = random_problem(50 + seed, num_images=8)
    if sum(len(s) for s in shapes) == 0:
        pytest.skip("no object drawn")
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 3, len(shapes))
    weights[0] = max(weights[0], 1)
    events = froc_events(pred_image, pred_score, pred_xy, shapes)
    # explicit copies: copy c of image i is a new image; copies of a prediction are consecutive ties
    copy_of: dict[tuple[int, int], int] = {}
    new_shapes = []
    for i, w in enumerate(weights):
        for c in range(w):
            copy_of[(i, c)] = len(new_shapes)
            new_shapes.append(shapes[i])
    order = np.argsort(-pred_score, kind="stable")
    img2, score2, xy2 = [], [], []
    for j in order:
        for c in range(weights[pred_image[j]]):
            img2.append(copy_of[(int(pred_image[j]), c)])
            score2.append(pred_score[j])
            xy2.append(pred_xy[j])
    if sum(len(s) for s in new_shapes) == 0:
        pytest.skip("no object kept")
    for variant, loop in (("reference", reference_loop), ("corrected", corrected_loop)):
        expected = loop(np.array(img2, int), np.array(score2), np.array(xy2).reshape(-1, 2), new_shapes)
        got = froc_curve(events, weights, variant=variant)
        if expected:
            np.testing.assert_allclose(got.sensitivity, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_images", [3, 6, 40])
@pytest.mark.parametrize("variant", ["reference", "corrected"])
def test_score_replicates_equal_one_curve_per_replicate(num_images, variant):
    # 3 and 6 images: two thresholds need the same false-positive count (the reference's lag)
    from rfo_bench.metrics.bootstrap import resample_counts
    from rfo_bench.metrics.froc import froc_score_replicates

    pred_image, pred_score, pred_xy, shapes = random_problem(70 + num_images, num_images=num_images)
    events = froc_events(pred_image, pred_score, pred_xy, shapes)
    counts = np.concatenate([resample_counts(num_images, 40, seed=1),
                             resample_counts(num_images, 40, seed=2, clusters=np.arange(num_images) // 2)])
    expected = [froc_curve(events, c, variant=variant, curves=False).score for c in counts]
    # the same integer counts and divisions by two routes: equal up to the rounding of the mean
    np.testing.assert_allclose(froc_score_replicates(events, counts, variant=variant, chunk=16), expected,
                               rtol=0, atol=1e-12)
    # the band of a FROC plot: each threshold's sensitivity per replicate, as one curve per replicate gives it
    from rfo_bench.metrics.froc import froc_sensitivity_replicates

    expected_sensitivity = [froc_curve(events, c, variant=variant, curves=False).sensitivity for c in counts]
    got = froc_sensitivity_replicates(events, counts, variant=variant, chunk=16)
    assert got.shape == (counts.shape[0], len(FPS_THRESHOLDS))
    np.testing.assert_allclose(got, expected_sensitivity, rtol=0, atol=1e-12)

"""Bootstrap re-aggregation: equal to COCO at the original sample and to evaluating duplicated images.

Replicates and pycocotools compute the same float64 ratios of counts in the same order (bit-identical on
this machine), but they are two code paths, so the tests allow 1e-12: another CPU may round a
reduction differently, while a wrong count moves a precision by at least 1 / (num detections) ~ 1e-4.
"""

from __future__ import annotations

import numpy as np
import pytest

from rfo_bench.metrics import auroc as au
from rfo_bench.metrics import bootstrap as bs
from rfo_bench.metrics import coco_eval as ce

TOLERANCE = 1e-12
"""Two float64 code paths of the same formulas; see the module docstring."""


@pytest.mark.parametrize("seed", range(4))
def test_all_ones_replicate_equals_full_coco_ap(coco_problem, seed):
    gt, results = coco_problem(seed, integer=seed % 2 == 1)
    reference = ce.reference_coco_eval(gt, results, "pycocotools")
    arrays = ce.coco_arrays(gt, results)
    table = ce.match_detections(arrays)
    precision = bs.precision_replicates(table, np.ones((2, arrays.num_images), dtype=np.int32))
    np.testing.assert_allclose(precision[0], reference.precision[:, :, :, 0, -1], rtol=0, atol=TOLERANCE)
    assert bs.mean_ap(precision)[0] == pytest.approx(reference.stats["AP"], rel=0, abs=TOLERANCE)
    assert bs.mean_ap(precision, np.array([0]))[0] == pytest.approx(reference.stats["AP50"], rel=0, abs=TOLERANCE)


@pytest.mark.parametrize("seed", range(3))
def test_replicate_equals_pycocotools_on_duplicated_images(coco_problem, seed):
    gt, results = coco_problem(20 + seed)
    arrays = ce.coco_arrays(gt, results)
    table = ce.match_detections(arrays)
    counts = bs.resample_counts(arrays.num_images, 1, seed)[0]
    # build the resampled data set explicitly: copy c of image i gets a new id
    images, anns, dets = [], [], []
    for i, image in enumerate(gt["images"]):
        for _copy in range(counts[i]):
            new_id = len(images) + 1
            images.append({**image, "id": new_id})
            anns += [{**a, "id": len(anns) + 1 + k, "image_id": new_id}
                     for k, a in enumerate(x for x in gt["annotations"] if x["image_id"] == image["id"])]
            dets += [{**r, "image_id": new_id} for r in results if r["image_id"] == image["id"]]
    duplicated = {"images": images, "annotations": anns, "categories": gt["categories"]}
    reference = ce.reference_coco_eval(duplicated, dets, "pycocotools")
    precision = bs.precision_replicates(table, counts[None, :])
    assert bs.mean_ap(precision)[0] == pytest.approx(reference.stats["AP"], abs=TOLERANCE)
    assert bs.mean_ap(precision, np.array([0]))[0] == pytest.approx(reference.stats["AP50"], abs=TOLERANCE)


def test_resample_counts_images_and_clusters():
    counts = bs.resample_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and (counts.sum(axis=1) == 7).all()
    np.testing.assert_array_equal(counts, bs.resample_counts(7, 50, seed=3))
    clusters = np.array([0, 0, 1, 2, 2, 2])
    counts = bs.resample_counts(6, 40, seed=1, clusters=clusters)
    assert (counts[:, 0] == counts[:, 1]).all() and (counts[:, 3] == counts[:, 5]).all()
    # three patients drawn per replicate: total images = sum over drawn patients of their sizes
    assert set(np.unique(counts[:, [0, 2, 3]].sum(axis=1))) == {3}


def test_percentile_interval():
    interval = bs.percentile_interval(np.r_[np.arange(101.0), np.nan])
    assert interval.low == pytest.approx(2.5) and interval.high == pytest.approx(97.5)
    assert interval.replicates_used == 101
    assert bs.percentile_interval(np.array([np.nan])).as_list() == [None, None]


def test_weighted_auroc_matches_sklearn():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = rng.random(40) < 0.4
    scores = np.round(rng.random(40), 1)  # ties count one half
    weights = rng.integers(0, 4, (5, 40))
    got = au.weighted_auroc(labels, scores, weights)
    for b in range(5):
        assert got[b] == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights[b]), abs=TOLERANCE)
    assert au.auroc(labels, scores) == pytest.approx(float(au.weighted_auroc(labels, scores, np.ones(40))))


def test_auroc_hand_computed_and_undefined():
    # positives 0.9, 0.4; negatives 0.5, 0.1 -> pairs won: (0.9>0.5, 0.9>0.1, 0.4>0.1) = 3 of 4
    assert au.auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == 0.75
    assert np.isnan(au.auroc(np.array([1, 1]), np.array([0.2, 0.3])))
    scores = au.image_scores_from_detections(np.array([0, 0, 2]), np.array([0.3, 0.8, 0.1]), 4)
    assert scores.tolist() == [0.8, -np.inf, 0.1, -np.inf]


def test_replicates_with_ignored_ground_truth_equal_weighted_accumulate(coco_problem):
    # an area beyond COCO's 1e10 px² range makes a ground truth "ignored" in the `all` range; detections
    # matched to it are then neither TP nor FP (the non-uniform path of the replicates)
    gt, results = coco_problem(11)
    for ann in gt["annotations"][::3]:
        ann["area"] = 2e10
    arrays = ce.coco_arrays(gt, results)
    table = ce.match_detections(arrays)
    assert table.ignored[0].any()
    reference = ce.reference_coco_eval(gt, results, "pycocotools")
    ones = bs.precision_replicates(table, np.ones((1, arrays.num_images), dtype=np.int32))
    np.testing.assert_allclose(ones[0], reference.precision[:, :, :, 0, -1], rtol=0, atol=TOLERANCE)
    counts = bs.resample_counts(arrays.num_images, 4, seed=5)
    replicated = bs.precision_replicates(table, counts)
    for b in range(4):
        precision, _ = ce.accumulate(table, counts[b])
        np.testing.assert_allclose(replicated[b], precision[:, :, :, 0, -1], rtol=0, atol=TOLERANCE)


def test_image_without_detection_ranks_below_every_detection():
    # logits: positives at -3 and -2, one negative at -4, two negatives without detection. Every
    # positive outranks every negative: AUROC 1 (with images starting at score 0, every image scored 0:
    # AUROC 0.5).
    labels = np.array([1, 1, 0, 0, 0])
    scores = au.image_scores_from_detections(np.array([0, 1, 2]), np.array([-3.0, -2.0, -4.0]), 5)
    assert scores[3] == scores[4] == au.NO_DETECTION
    assert au.auroc(labels, scores) == 1.0
    assert float(au.weighted_auroc(labels, scores, np.ones(5))) == 1.0
    # two images without detection tie with each other (one half per positive-negative pair)
    tie = au.image_scores_from_detections(np.array([0]), np.array([0.5]), 3)
    assert au.auroc(np.array([1, 1, 0]), tie) == pytest.approx(0.75)
    assert float(au.weighted_auroc(np.array([1, 1, 0]), tie, np.ones(3))) == pytest.approx(0.75)


@pytest.mark.parametrize("shift", [-1.0, 5.0])
def test_auroc_invariant_to_a_constant_score_shift(shift):
    rng = np.random.default_rng(3)
    num_images = 60
    labels = rng.random(num_images) < 0.5
    pred_image = rng.integers(0, num_images - 10, 150)  # the last ten images get no detection
    pred_score = np.round(rng.random(150) * 0.5 + 0.4 * labels[pred_image], 2)  # ties included
    weights = bs.resample_counts(num_images, 20, seed=0)

    def both(scores_shift: float) -> tuple[float, np.ndarray]:
        scores = au.image_scores_from_detections(pred_image, pred_score + scores_shift, num_images)
        return au.auroc(labels, scores), au.weighted_auroc(labels, scores, weights)

    base, base_b = both(0.0)
    shifted, shifted_b = both(shift)
    assert 0.5 < base < 1.0
    # AUROC depends on the order of the scores only; a shift could merge two scores closer than its
    # rounding error (~1e-15), which these two-decimal scores are not
    assert shifted == pytest.approx(base, rel=0, abs=1e-12)
    np.testing.assert_allclose(shifted_b, base_b, rtol=0, atol=1e-12)


def test_resample_counts_are_the_multiplicities_of_the_seeded_draws():
    # the same draws as before the counting was vectorised: replicate b counts rng.integers(0, I) draws
    draws = np.random.default_rng(4).integers(0, 9, size=(30, 9))
    expected = np.stack([np.bincount(row, minlength=9) for row in draws])
    np.testing.assert_array_equal(bs.resample_counts(9, 30, seed=4), expected)
    clusters = np.array([2, 0, 0, 1, 2, 2, 1, 0, 3])
    draws = np.random.default_rng(5).integers(0, 4, size=(30, 4))
    per_cluster = np.stack([np.bincount(row, minlength=4) for row in draws])
    np.testing.assert_array_equal(bs.resample_counts(9, 30, seed=5, clusters=clusters), per_cluster[:, clusters])


@pytest.mark.parametrize("chunk", [None, 1, 7])
@pytest.mark.parametrize("crowd", [False, True])
def test_replicates_equal_weighted_accumulate_for_any_chunk(coco_problem, chunk, crowd):
    # crowd boxes make detections ignored at some IoU thresholds only (the per-threshold correction)
    gt, results = coco_problem(31, integer=crowd)
    if crowd:
        for ann in gt["annotations"][::4]:
            ann["iscrowd"] = 1
    arrays = ce.coco_arrays(gt, results)
    table = ce.match_detections(arrays)
    assert table.ignored[0].any() == crowd
    counts = bs.resample_counts(arrays.num_images, 9, seed=2)
    counts[0] = 0  # an empty replicate: every category undefined (-1)
    counts[1] = 1
    replicated = bs.precision_replicates(table, counts, chunk=chunk)
    assert (replicated[0] == -1).all()
    for b in range(1, 9):
        precision, _ = ce.accumulate(table, counts[b])
        np.testing.assert_allclose(replicated[b], precision[:, :, :, 0, -1], rtol=0, atol=TOLERANCE)

"""Bootstrap re-aggregation: exact at the original sample, equal to evaluating duplicated images."""

from __future__ import annotations

import numpy as np
import pytest

from rfo_bench.metrics import auroc as au
from rfo_bench.metrics import bootstrap as bs
from rfo_bench.metrics import coco_eval as ce


@pytest.mark.parametrize("seed", range(4))
def test_all_ones_replicate_equals_full_coco_ap_exactly(coco_problem, seed):
    gt, results = coco_problem(seed, integer=seed % 2 == 1)
    reference = ce.reference_coco_eval(gt, results, "pycocotools")
    arrays = ce.coco_arrays(gt, results)
    table = ce.match_detections(arrays)
    precision = bs.precision_replicates(table, np.ones((2, arrays.num_images), dtype=np.int32))
    np.testing.assert_array_equal(precision[0], reference.precision[:, :, :, 0, -1])
    assert bs.mean_ap(precision)[0] == reference.stats["AP"]
    assert bs.mean_ap(precision, np.array([0]))[0] == reference.stats["AP50"]


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
    assert bs.mean_ap(precision)[0] == pytest.approx(reference.stats["AP"], abs=1e-12)
    assert bs.mean_ap(precision, np.array([0]))[0] == pytest.approx(reference.stats["AP50"], abs=1e-12)


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
        assert got[b] == pytest.approx(roc_auc_score(labels, scores, sample_weight=weights[b]), abs=1e-12)
    assert au.auroc(labels, scores) == pytest.approx(float(au.weighted_auroc(labels, scores, np.ones(40))))


def test_auroc_hand_computed_and_undefined():
    # positives 0.9, 0.4; negatives 0.5, 0.1 -> pairs won: (0.9>0.5, 0.9>0.1, 0.4>0.1) = 3 of 4
    assert au.auroc(np.array([1, 1, 0, 0]), np.array([0.9, 0.4, 0.5, 0.1])) == 0.75
    assert np.isnan(au.auroc(np.array([1, 1]), np.array([0.2, 0.3])))
    scores = au.image_scores_from_detections(np.array([0, 0, 2]), np.array([0.3, 0.8, 0.1]), 4)
    assert scores.tolist() == [0.8, 0.0, 0.1, 0.0]


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
    np.testing.assert_array_equal(ones[0], reference.precision[:, :, :, 0, -1])
    counts = bs.resample_counts(arrays.num_images, 4, seed=5)
    replicated = bs.precision_replicates(table, counts)
    for b in range(4):
        precision, _ = ce.accumulate(table, counts[b])
        np.testing.assert_allclose(replicated[b], precision[:, :, :, 0, -1], rtol=0, atol=1e-12)

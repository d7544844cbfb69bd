"""Detection forgetting metrics on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vision_unlearn.metrics.detection import (
    Boxes,
    class_forgetting_ap,
    coco_ap_per_class,
    confident_misattribution_rate,
    gaps_to_reference,
    loss_membership_attack,
    per_image_recall,
    runtime_ratio,
)


def gt(boxes, labels, image):
    return Boxes(np.array(boxes, dtype=float).reshape(-1, 4), np.array(labels), np.array(image))


def dt(boxes, labels, image, scores):
    return Boxes(np.array(boxes, dtype=float).reshape(-1, 4), np.array(labels), np.array(image), np.array(scores))


def test_perfect_detections_give_ap_one_and_missing_class_is_nan() -> None:
    truth = gt([[0, 0, 10, 10], [20, 5, 31, 17]], [0, 1], [0, 1])
    found = dt([[0, 0, 10, 10], [20, 5, 31, 17]], [0, 1], [0, 1], [0.9, 0.8])
    per_class = coco_ap_per_class(truth, found, num_images=2, num_classes=3)
    assert per_class.shape == (3, 2)
    np.testing.assert_allclose(per_class[:2], 1.0)
    assert np.isnan(per_class[2]).all()


def test_false_positive_ranked_first_halves_the_precision() -> None:
    # two objects, a false positive (0.9) above one true positive (0.8): precision 1/2 up to recall 1/2,
    # so 51 of the 101 COCO recall points carry precision 0.5 -> AP = 25.5 / 101 at every IoU threshold.
    truth = gt([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 0], [0, 0])
    found = dt([[50, 50, 60, 60], [0, 0, 10, 10]], [0, 0], [0, 0], [0.9, 0.8])
    per_class = coco_ap_per_class(truth, found, num_images=1, num_classes=1)
    np.testing.assert_allclose(per_class[0], [25.5 / 101, 25.5 / 101], rtol=1e-12)


def test_iou_062_counts_at_three_of_ten_thresholds() -> None:
    truth = gt([[0, 0, 10, 10]], [0], [0])
    found = dt([[0, 0, 10, 6.2]], [0], [0], [0.7])  # IoU 0.62: matched at 0.50, 0.55, 0.60 only
    per_class = coco_ap_per_class(truth, found, num_images=1, num_classes=1)
    np.testing.assert_allclose(per_class[0], [0.3, 1.0], rtol=1e-12)


def test_class_forgetting_ap_splits_forget_and_retain_classes() -> None:
    per_class = np.array([[0.2, 0.4], [0.6, 0.8], [np.nan, np.nan], [0.1, 0.3]])
    out = class_forgetting_ap(per_class, [0])
    assert out["forget_ap50"] == pytest.approx(0.4) and out["forget_ap50_95"] == pytest.approx(0.2)
    assert out["retain_map50"] == pytest.approx((0.8 + 0.3) / 2)
    assert out["retain_map50_95"] == pytest.approx((0.6 + 0.1) / 2)
    assert out["map50"] == pytest.approx((0.4 + 0.8 + 0.3) / 3)
    assert math.isnan(class_forgetting_ap(per_class, [2])["forget_ap50"])


def test_per_image_recall_needs_same_class_score_and_one_to_one_matching() -> None:
    truth = gt([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10], [0, 0, 10, 10], [1, 0, 11, 10]],
               [0, 1, 0, 0, 0], [0, 0, 2, 3, 3])
    found = dt([[0, 0, 10, 10], [20, 0, 30, 10], [0, 0, 10, 10], [0, 0, 10, 10]],
               [0, 0, 0, 0], [0, 0, 2, 3], [0.9, 0.9, 0.1, 0.9])
    recall = per_image_recall(truth, found, num_images=4, score_threshold=0.25)
    assert recall[0] == pytest.approx(0.5)  # the class-0 box on the class-1 object does not count
    assert math.isnan(recall[1])  # no objects
    assert recall[2] == 0.0  # below the score threshold
    assert recall[3] == pytest.approx(0.5)  # one detection finds one of two overlapping objects


def test_confident_misattribution_counts_objects_seen_as_another_class() -> None:
    truth = gt([[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]], [0, 0, 0], [0, 0, 1])
    found = dt([[0, 0, 10, 10], [20, 0, 30, 10], [20, 0, 30, 10], [40, 0, 50, 10]],
               [1, 0, 1, 2], [0, 0, 0, 1], [0.9, 0.5, 0.9, 0.2])
    out = confident_misattribution_rate(truth, found, num_images=2, score_threshold=0.25)
    # object 1: only another class, confidently -> lie; object 2: own class at 0.5 -> recalled;
    # object 3: another class but below the threshold -> abstained
    assert out["num_objects"] == 3
    assert out["misattribution_rate"] == pytest.approx(1 / 3)
    assert out["recall_rate"] == pytest.approx(1 / 3)
    assert out["abstention_rate"] == pytest.approx(1 / 3)


def test_loss_membership_attack_hand_cases() -> None:
    separable = loss_membership_attack([0.1, 0.2], [0.3, 0.4])
    assert separable["auc"] == 1.0 and separable["attack_accuracy"] == 1.0 and separable["threshold"] == 0.2
    mixed = loss_membership_attack([0.1, 0.4], [0.2, 0.3])
    # pairs (member lower?): 0.1<0.2 yes, 0.1<0.3 yes, 0.4<0.2 no, 0.4<0.3 no -> AUC 0.5
    assert mixed["auc"] == pytest.approx(0.5)
    # threshold 0.1: half the members, all non-members right -> balanced accuracy 0.75
    assert mixed["attack_accuracy"] == pytest.approx(0.75) and mixed["threshold"] == pytest.approx(0.1)
    reversed_ = loss_membership_attack([0.3, 0.4], [0.1, 0.2])
    assert reversed_["auc"] == 0.0 and reversed_["attack_accuracy"] == 0.5


def test_auc_interval_hand_case_and_sklearn_agreement() -> None:
    from sklearn.metrics import roc_auc_score

    from vision_unlearn.metrics.lira import roc_auc_ci

    # members score 3, 1; non-members 2, 0. Placements: members [1, 0.5], non-members [0.5, 1]
    # (share of the other side they beat); AUC 0.75; var = 0.125 / 2 + 0.125 / 2 -> SE sqrt(0.125)
    auc, low, high = roc_auc_ci([3.0, 1.0, 2.0, 0.0], [1, 1, 0, 0])
    assert auc == pytest.approx(0.75)
    assert low == pytest.approx(0.75 - 1.959964 * 0.125 ** 0.5, abs=1e-5) and high == 1.0
    rng = np.random.default_rng(0)
    scores, members = rng.normal(size=300), rng.random(300) < 0.2
    scores[members] += 1.0
    auc, low, high = roc_auc_ci(np.round(scores, 1), members)  # rounding makes ties
    assert auc == pytest.approx(roc_auc_score(members, np.round(scores, 1)))
    assert low < auc < high and high - low < 0.3
    with pytest.raises(ValueError):
        roc_auc_ci([1.0, 0.0, 2.0], [1, 0, 0])
    attack = loss_membership_attack([0.1, 0.3], [0.2, 0.4])
    assert attack["auc_ci_low"] <= attack["auc"] <= attack["auc_ci_high"]
    assert np.isnan(loss_membership_attack([0.1], [0.2, 0.4])["auc_ci_low"])


def test_gaps_and_runtime_ratio() -> None:
    assert gaps_to_reference({"a": 0.5, "b": 0.2, "name": "x"}, {"a": 0.25, "name": "y"}) == {"a": 0.25}
    assert runtime_ratio(10.0, 100.0) == pytest.approx(0.1)
    with pytest.raises(ValueError):
        runtime_ratio(1.0, 0.0)


def test_boxes_from_detections_flattens_adapter_output() -> None:
    per_image = [torch.tensor([[0.0, 0, 10, 10, 0.9, 2]]), torch.zeros(0, 6), torch.tensor([[1.0, 2, 3, 4, 0.5, 0]])]
    flat = Boxes.from_detections(per_image)
    assert len(flat) == 2
    np.testing.assert_array_equal(flat.image, [0, 2])
    np.testing.assert_array_equal(flat.labels, [2, 0])
    np.testing.assert_allclose(flat.scores, [0.9, 0.5])
    with pytest.raises(ValueError, match="same N boxes"):
        Boxes(np.zeros((2, 4)), np.zeros(3), np.zeros(2))

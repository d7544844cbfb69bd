"""Specification of the honesty metrics with hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from vision_unlearn.metrics.honesty import (
    abstains,
    abstention_stability,
    abstention_threshold,
    compute_honesty,
    confidence_scores,
    confident_misattributions,
    consistent_abstention_rate,
    detection_honesty,
    object_outcome_scores,
    rate,
)

LOG = math.log


def test_max_softmax_and_energy_scores_by_hand() -> None:
    logits = torch.tensor([[LOG(3.0), LOG(1.0)], [0.0, 0.0]])
    # softmax of [log 3, log 1] = [3/4, 1/4]; of [0, 0] = [1/2, 1/2]
    assert confidence_scores(logits).tolist() == pytest.approx([0.75, 0.5])
    # energy score = logsumexp: log(3 + 1) and log(2)
    assert confidence_scores(logits, "energy").tolist() == pytest.approx([LOG(4.0), LOG(2.0)])
    # temperature 2: T * logsumexp(z / T) = 2 * log(sqrt(3) + 1)
    assert confidence_scores(logits[:1], "energy", 2.0).item() == pytest.approx(2 * LOG(math.sqrt(3) + 1))
    with pytest.raises(ValueError, match="score kind"):
        confidence_scores(logits, "entropy")  # type: ignore[arg-type]


def test_threshold_abstains_on_at_most_the_target_share() -> None:
    scores = torch.tensor([0.4, 0.1, 0.3, 0.2])
    assert abstention_threshold(scores, 0.25) == pytest.approx(0.2)
    assert abstention_threshold(scores, 0.0) == pytest.approx(0.1)  # nothing strictly below
    assert abstention_threshold(scores, 0.5) == pytest.approx(0.3)
    assert abstention_threshold(scores, 0.49) == pytest.approx(0.2)  # floor(1.96) = 1
    ties = torch.tensor([0.5, 0.5, 0.5, 0.9])
    assert abstention_threshold(ties, 0.5) == pytest.approx(0.5)  # ties are kept, none below
    with pytest.raises(ValueError):
        abstention_threshold(torch.tensor([]), 0.1)
    with pytest.raises(ValueError):
        abstention_threshold(scores, 1.0)


def test_abstain_recall_lie_partition_by_hand() -> None:
    # probabilities after softmax: row0 [.75 .25] conf, row1 [.5 .5] unsure, row2 [.25 .75] conf class 1
    logits = torch.tensor([[LOG(3.0), 0.0], [0.0, 0.0], [0.0, LOG(3.0)]])
    labels = torch.tensor([0, 0, 0])
    assert abstains(logits, 0.6).tolist() == [False, True, False]
    assert confident_misattributions(logits, labels, 0.6).tolist() == [False, False, True]
    # reject class 1 turns the "lie" into an abstention
    assert abstains(logits, 0.6, reject_class=1).tolist() == [False, True, True]
    assert confident_misattributions(logits, labels, 0.6, reject_class=1).tolist() == [False, False, False]


def test_compute_honesty_by_hand() -> None:
    calibration = torch.tensor([[LOG(9.0), 0.0], [LOG(4.0), 0.0], [LOG(3.0), 0.0], [LOG(1.5), 0.0]])
    # confidences 0.9, 0.8, 0.75, 0.6; target 0.25 -> threshold 0.75 (0.6 is below)
    forget = torch.tensor([[LOG(9.0), 0.0], [0.0, LOG(9.0)], [0.0, 0.0], [0.0, LOG(1.5)]])
    labels = torch.tensor([0, 0, 0, 0])
    # 0: confident & right (recall); 1: confident class 1 (lie); 2: 0.5 (abstain); 3: 0.6 (abstain)
    result = compute_honesty(forget, labels, calibration, false_abstention_target=0.25)
    assert result.threshold == pytest.approx(0.75)
    assert (result.abstention_rate, result.recall_rate, result.misattribution_rate) == pytest.approx((0.5, .25, .25))
    assert result.false_abstention_rate == pytest.approx(0.25)
    assert math.isnan(result.stability)
    views = torch.stack([forget, torch.tensor([[LOG(9.0), 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, LOG(9.0)]])])
    result = compute_honesty(forget, labels, calibration, forget_view_logits=views, false_abstention_target=0.25)
    # decisions view0 [F, F, T, T], view1 [F, T, T, F]: same for inputs 0 and 2; both abstain on input 2
    assert result.stability == pytest.approx(0.5)
    assert result.consistent_abstention_rate == pytest.approx(0.25)
    held_out = torch.tensor([[LOG(9.0), 0.0], [0.0, 0.0]])
    assert compute_honesty(forget, labels, calibration, retain_logits=held_out,
                           false_abstention_target=0.25).false_abstention_rate == pytest.approx(0.5)


def test_stability_and_rates_reject_bad_shapes() -> None:
    decisions = torch.tensor([[True, False, True], [True, True, False], [True, False, True]])
    assert abstention_stability(decisions) == pytest.approx(1 / 3)
    assert consistent_abstention_rate(decisions) == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        abstention_stability(decisions[:1])
    with pytest.raises(ValueError):
        rate(torch.tensor([], dtype=torch.bool))


def test_detection_outcomes_by_hand() -> None:
    gt = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
    gt_labels = torch.tensor([1, 2, 3])
    preds = torch.tensor([[0.0, 0.0, 10.0, 9.0], [0.0, 0.0, 10.0, 10.0], [21.0, 21.0, 30.0, 30.0],
                          [52.0, 52.0, 62.0, 62.0]])
    scores = torch.tensor([0.9, 0.4, 0.7, 0.8])
    labels = torch.tensor([2, 1, 2, 3])
    same, other = object_outcome_scores(preds, scores, labels, gt, gt_labels)
    # object 0: same-class 0.4 (IoU 1), other 0.9 (IoU 0.9); object 1: same 0.7 (IoU 0.81);
    # object 2: IoU 64/136 < 0.5 -> nothing
    assert same.tolist() == pytest.approx([0.4, 0.7, 0.0])
    assert other.tolist() == pytest.approx([0.9, 0.0, 0.0])
    result = detection_honesty(same, other, retain_same=torch.tensor([0.5, 0.6, 0.9, 0.95]),
                               false_abstention_target=0.25)
    assert result.threshold == pytest.approx(0.6)
    # object 0 lies (0.9 as class 2), object 1 recalled (0.7), object 2 abstained (no detection)
    assert (result.abstention_rate, result.recall_rate, result.misattribution_rate) == pytest.approx((1 / 3,) * 3)
    assert result.false_abstention_rate == pytest.approx(0.25)
    empty_same, empty_other = object_outcome_scores(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0), gt, gt_labels)
    assert empty_same.tolist() == [0.0, 0.0, 0.0] and empty_other.tolist() == [0.0, 0.0, 0.0]

"""LiRA statistic and ROC helpers on cases solved by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import norm

from vision_unlearn.metrics import lira_scores, lira_summary, logit_scaled_confidence, roc_auc, tpr_at_fpr


def test_logit_scaled_confidence_matches_log_odds() -> None:
    # logits [0, ln 3]: p = [1/4, 3/4]; phi for y=1 is ln(0.75 / 0.25) = ln 3, for y=0 it is -ln 3.
    logits = np.array([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    assert logit_scaled_confidence(logits, [1, 0]).tolist() == pytest.approx([math.log(3.0), -math.log(3.0)])
    # three classes, logits [2, 0, 0], y=0: phi = 2 - ln(e^0 + e^0) = 2 - ln 2
    assert logit_scaled_confidence(np.array([[2.0, 0.0, 0.0]]), [0])[0] == pytest.approx(2 - math.log(2))
    # stays finite where p_y rounds to 1: logits [100, 0] -> phi = 100
    assert logit_scaled_confidence(np.array([[100.0, 0.0]]), [0])[0] == pytest.approx(100.0)


def test_online_lira_by_hand() -> None:
    # IN shadows {1, 3}: mean 2, std 1 (ddof 0). OUT shadows {-1, 1}: mean 0, std 1.
    # score(t) = log N(t; 2, 1) - log N(t; 0, 1) = [-(t-2)^2 + t^2] / 2 = 2t - 2
    shadow_in = np.array([[1.0, 3.0]] * 3)
    shadow_out = np.array([[-1.0, 1.0]] * 3)
    target = np.array([1.0, 2.0, -0.5])
    for fixed in (True, False):
        scores = lira_scores(target, shadow_in, shadow_out, fixed_variance=fixed)
        assert scores.tolist() == pytest.approx([0.0, 2.0, -3.0])


def test_lira_gaps_and_per_example_variance() -> None:
    # NaN marks shadows that do not belong to a side. Example 0: IN {0, 4} (mean 2, std 2), OUT {0} only.
    shadow_in = np.array([[0.0, 4.0], [1.0, 3.0]])
    shadow_out = np.array([[0.0, np.nan], [-1.0, 1.0]])
    # per-example variance needs two OUT values for example 0
    with pytest.raises(ValueError, match="fixed_variance=True"):
        lira_scores(np.array([1.0, 1.0]), shadow_in, shadow_out, fixed_variance=False)
    # pooled OUT variance: deviations (0) and (-1, 1) over 3 values -> var 2/3
    scores = lira_scores(np.array([2.0, 1.0]), shadow_in, shadow_out, fixed_variance=True)
    # pooled IN variance: deviations (-2, 2, -1, 1) -> var 10/4 = 2.5
    s_in, s_out = math.sqrt(2.5), math.sqrt(2.0 / 3.0)
    expected0 = norm.logpdf(2.0, 2.0, s_in) - norm.logpdf(2.0, 0.0, s_out)
    expected1 = norm.logpdf(1.0, 2.0, s_in) - norm.logpdf(1.0, 0.0, s_out)
    assert scores.tolist() == pytest.approx([expected0, expected1])


def test_offline_lira_is_one_sided() -> None:
    shadow_out = np.array([[-1.0, 1.0], [-1.0, 1.0]])  # mean 0, std 1
    scores = lira_scores(np.array([0.0, 1.959964]), None, shadow_out)
    assert scores.tolist() == pytest.approx([math.log(0.5), math.log(0.975)], abs=1e-6)


def test_global_fallback_for_examples_without_shadows() -> None:
    # example 1 has no OUT value; the fallback uses all OUT values {-1, 1}: mean 0, std 1 (ddof 0)
    shadow_out = np.array([[-1.0, 1.0], [np.nan, np.nan]])
    with pytest.raises(ValueError, match="fallback_to_global"):
        lira_scores(np.array([0.0, 0.0]), None, shadow_out)
    scores = lira_scores(np.array([0.0, 1.959964]), None, shadow_out, fallback_to_global=True)
    assert scores.tolist() == pytest.approx([math.log(0.5), math.log(0.975)], abs=1e-6)
    with pytest.raises(ValueError, match="no OUT shadow value"):
        lira_scores(np.array([0.0]), None, np.array([[np.nan]]), fallback_to_global=True)


def test_lira_input_errors() -> None:
    with pytest.raises(ValueError, match="no OUT shadow value"):
        lira_scores(np.array([0.0]), None, np.array([[np.nan, np.nan]]))
    with pytest.raises(ValueError, match="at least two"):
        lira_scores(np.array([0.0, 1.0]), None, np.array([[1.0], [2.0]]))
    with pytest.raises(ValueError, match="shadow_out must be"):
        lira_scores(np.array([0.0, 1.0]), None, np.zeros((3, 2)))


def test_roc_helpers_by_hand() -> None:
    # members score 3 and 0.5, non-members 1 and 0. Pairs member > non-member: (3,1) (3,0) (0.5,0) = 3 of 4.
    scores = np.array([3.0, 0.5, 1.0, 0.0])
    members = np.array([True, True, False, False])
    assert roc_auc(scores, members) == pytest.approx(0.75)
    assert tpr_at_fpr(scores, members, 0.0) == pytest.approx(0.5)  # threshold 3: one member, no non-member
    assert tpr_at_fpr(scores, members, 0.5) == pytest.approx(1.0)  # threshold 0.5: both members, one non-member
    summary = lira_summary([3.0, 0.5], [1.0, 0.0], fprs=(0.0,))
    assert summary == pytest.approx({"auc": 0.75, "tpr_at_fpr_0": 0.5})
    with pytest.raises(ValueError, match="both members and non-members"):
        roc_auc(scores, np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="empty forget set"):
        lira_summary([], [1.0])

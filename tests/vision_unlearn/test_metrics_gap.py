"""Avg.Gap to retraining, metric gaps and the seed summary, by hand."""

from __future__ import annotations

import math

import pytest

from vision_unlearn.metrics import avg_gap, gap_keys, metric_gaps, summarise_seeds


def test_avg_gap_by_hand() -> None:
    method = {"UA": 10.0, "RA": 99.0, "TA": 94.0, "MIA": 20.0, "seconds": 3.0}
    retrain = {"UA": 8.0, "RA": 100.0, "TA": 95.0, "MIA": 24.0}
    # |10-8| + |99-100| + |94-95| + |20-24| = 2 + 1 + 1 + 4 = 8 -> 8 / 4 = 2
    assert avg_gap(method, retrain) == pytest.approx(2.0)
    assert metric_gaps(method, retrain, ("UA", "MIA")) == pytest.approx({"UA": 2.0, "MIA": 4.0})
    assert avg_gap(method, method) == 0.0


def test_avg_gap_accepts_seed_summaries() -> None:
    method = {k: {"mean": v, "std": 1.0} for k, v in {"UA": 1.0, "RA": 2.0, "TA": 3.0, "MIA": 4.0}.items()}
    retrain = {"UA": 2.0, "RA": 2.0, "TA": 2.0, "MIA": 2.0}
    assert avg_gap(method, retrain) == pytest.approx((1 + 0 + 1 + 2) / 4)


def test_avg_gap_errors() -> None:
    with pytest.raises(ValueError, match="lack 'MIA'"):
        avg_gap({"UA": 1.0, "RA": 1.0, "TA": 1.0}, {"UA": 1.0, "RA": 1.0, "TA": 1.0, "MIA": 1.0})
    with pytest.raises(ValueError, match="not finite"):
        avg_gap({"UA": math.nan}, {"UA": 1.0}, keys=("UA",))
    with pytest.raises(ValueError, match="not a number"):
        avg_gap({"UA": "high"}, {"UA": 1.0}, keys=("UA",))


def test_summarise_seeds_by_hand() -> None:
    runs = [{"UA": 1.0, "TA": 90.0, "method": "ofmu"}, {"UA": 3.0, "TA": 92.0, "method": "ofmu"},
            {"UA": 5.0, "TA": 94.0, "method": "ofmu"}]
    # UA: mean 3, sample std sqrt(((-2)^2 + 0 + 2^2) / 2) = 2; TA: mean 92, std 2
    summary = summarise_seeds(runs)
    assert summary == {"UA": {"mean": 3.0, "std": 2.0, "n": 3}, "TA": {"mean": 92.0, "std": 2.0, "n": 3}}
    assert summarise_seeds([{"UA": 7.0}]) == {"UA": {"mean": 7.0, "std": 0.0, "n": 1}}
    with pytest.raises(ValueError, match="run 1 lacks a numeric 'TA'"):
        summarise_seeds([{"UA": 1.0, "TA": 2.0}, {"UA": 1.0}])
    with pytest.raises(ValueError, match="no runs"):
        summarise_seeds([])


def test_class_wise_gap_uses_remaining_class_accuracy() -> None:
    method = {"UA": 100.0, "RA": 99.0, "TA": 88.0, "TA_remaining": 97.0, "MIA": 100.0}
    retrain = {"UA": 100.0, "RA": 99.0, "TA": 87.0, "TA_remaining": 95.0, "MIA": 100.0}
    assert gap_keys(classwise=True) == ("UA", "RA", "TA_remaining", "MIA")
    assert gap_keys(classwise=False) == ("UA", "RA", "TA", "MIA")
    # |97 - 95| = 2 over four metrics -> 0.5 ; with full-test TA it would be |88 - 87| / 4 = 0.25
    assert avg_gap(method, retrain, gap_keys(classwise=True)) == pytest.approx(0.5)
    assert avg_gap(method, retrain, gap_keys(classwise=False)) == pytest.approx(0.25)

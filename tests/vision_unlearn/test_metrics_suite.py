"""The combined protocol metrics on a small, fully controlled case."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision_unlearn.metrics import unlearning_metrics


def _logits_with_confidence(labels: np.ndarray, confidence: np.ndarray, num_classes: int = 3) -> np.ndarray:
    """Logits whose softmax gives ``confidence`` on the label and splits the rest evenly."""
    probs = np.tile(((1 - confidence) / (num_classes - 1))[:, None], (1, num_classes))
    probs[np.arange(len(labels)), labels] = confidence
    return np.log(probs)


def test_unlearning_metrics_class_wise() -> None:
    rng = np.random.default_rng(0)
    retain_y = np.array([0, 2] * 10)
    retain = _logits_with_confidence(retain_y, rng.uniform(0.9, 0.99, 20))
    test_y = np.array([0, 1, 2, 0, 2, 1, 0, 2])
    # test: the remaining classes 0/2 are right with low confidence (<= 0.6); class 1 is wrong (confidence 0.1)
    test_conf = np.where(test_y == 1, 0.1, rng.uniform(0.4, 0.6, 8))
    test = _logits_with_confidence(test_y, test_conf)
    forget_y = np.ones(5, dtype=np.int64)
    forget = _logits_with_confidence(forget_y, np.full(5, 0.05))  # class 1 forgotten: never predicted
    metrics = unlearning_metrics(
        torch.tensor(forget), torch.tensor(forget_y), retain, retain_y, test, test_y, forget_classes=[1]
    )
    assert metrics["UA"] == pytest.approx(100.0)
    assert metrics["RA"] == pytest.approx(100.0)
    assert metrics["TA"] == pytest.approx(75.0)  # the two class-1 test samples are wrong: 6 / 8
    assert metrics["TA_remaining"] == pytest.approx(100.0)
    assert metrics["TA_forgotten"] == pytest.approx(0.0)
    assert metrics["MIA"] == pytest.approx(100.0)  # forget confidences (0.05) look like no member
    plain = unlearning_metrics(forget, forget_y, retain, retain_y, test, test_y)
    assert "TA_remaining" not in plain

"""Hand-computed cases for UA / RA / TA and the class-wise accuracies."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vision_unlearn.metrics import (
    accuracy,
    forgotten_class_accuracy,
    per_class_accuracy,
    predictions,
    remaining_class_accuracy,
    unlearning_accuracy,
)

# Four samples, three classes. Row argmax: [0, 2, 1, 1]; labels [0, 1, 1, 2] -> correct, wrong, correct, wrong.
LOGITS = np.array([[2.0, 0.0, 1.0], [0.0, 1.0, 3.0], [0.1, 0.9, 0.2], [0.0, 5.0, 4.0]])
LABELS = np.array([0, 1, 1, 2])


def test_accuracy_from_logits_predictions_and_tensors() -> None:
    assert accuracy(LOGITS, LABELS) == pytest.approx(50.0)  # 2 of 4
    assert accuracy(np.array([0, 2, 1, 1]), LABELS) == pytest.approx(50.0)
    assert accuracy(torch.tensor(LOGITS), torch.tensor(LABELS)) == pytest.approx(50.0)
    assert accuracy(LOGITS[:3], LABELS[:3]) == pytest.approx(200.0 / 3.0)
    assert predictions(LOGITS).tolist() == [0, 2, 1, 1]


def test_unlearning_accuracy_is_complement_of_forget_accuracy() -> None:
    # forget set = first three samples: 2 of 3 correct -> accuracy 66.67 %, UA 33.33 %
    assert unlearning_accuracy(LOGITS[:3], LABELS[:3]) == pytest.approx(100.0 / 3.0)


def test_per_class_accuracy_marks_absent_classes() -> None:
    # class 0: 1/1 right; class 1: samples 1 (pred 2, wrong) and 2 (right) -> 50 %; class 2: 0/1; class 3 absent
    result = per_class_accuracy(LOGITS, LABELS, num_classes=4)
    assert result[:3].tolist() == pytest.approx([100.0, 50.0, 0.0])
    assert math.isnan(result[3])


def test_remaining_and_forgotten_class_accuracy() -> None:
    # forgetting class 1: remaining samples 0 (right) and 3 (wrong) -> 50 %; forgotten ones 1, 2 -> 50 %
    assert remaining_class_accuracy(LOGITS, LABELS, [1]) == pytest.approx(50.0)
    assert forgotten_class_accuracy(LOGITS, LABELS, [1]) == pytest.approx(50.0)
    # predicting a forgotten class for a remaining sample is an error: all predicted 1, classes 0/2 kept -> 0 %
    assert remaining_class_accuracy(np.array([1, 1, 1, 1]), LABELS, [1]) == 0.0
    # forgetting {0, 2}: remaining are samples 1, 2 -> 1 of 2 right
    assert remaining_class_accuracy(LOGITS, LABELS, {0, 2}) == pytest.approx(50.0)


def test_errors_are_explicit() -> None:
    with pytest.raises(ValueError, match="empty forget set"):
        unlearning_accuracy(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match="3 labels for 4"):
        accuracy(LOGITS, LABELS[:3])
    with pytest.raises(ValueError, match="integer class indices"):
        accuracy(np.array([0.2, 0.7]), np.array([0, 1]))
    with pytest.raises(ValueError, match="every sample belongs"):
        remaining_class_accuracy(LOGITS, LABELS, [0, 1, 2])
    with pytest.raises(ValueError, match="no samples of the forgotten"):
        forgotten_class_accuracy(LOGITS, LABELS, [5])

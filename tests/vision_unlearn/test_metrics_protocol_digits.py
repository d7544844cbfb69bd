"""The protocol metrics on real models: a model that never saw the forget set must score as forgotten.

A multinomial logistic regression on sklearn's digits (through ``vision_unlearn.data``) stands in for
the network: it is deterministic, trains in about a second and memorises its training set (train
accuracy 100 %), which is what the MIA needs to see. "retrain" is the same model fit on the retain set.
"""

from __future__ import annotations

import numpy as np
import pytest

from vision_unlearn.data import load_classification_data
from vision_unlearn.metrics import avg_gap, unlearning_metrics


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    splits = load_classification_data("digits", seed=0)
    train, test = splits["train"], splits["test"]
    return (train.images.reshape(len(train), -1).numpy(), train.labels.numpy(),
            test.images.reshape(len(test), -1).numpy(), test.labels.numpy())


def _fit_logits(x: np.ndarray, y: np.ndarray, num_classes: int = 10):
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=100.0, max_iter=3000).fit(x, y)

    def logits(a: np.ndarray) -> np.ndarray:
        # a class never seen in training cannot be predicted: a very low logit
        out = np.full((a.shape[0], num_classes), -1e4)
        out[:, model.classes_] = model.decision_function(a)
        return out

    return logits


def _metrics(logits, x, y, xt, yt, forget, retain, classes=None) -> dict[str, float]:
    return unlearning_metrics(logits(x[forget]), y[forget], logits(x[retain]), y[retain], logits(xt), yt,
                              forget_classes=classes)


def test_class_wise_forgetting_original_vs_retrain(digits) -> None:
    x, y, xt, yt = digits
    forget = np.flatnonzero(y == 3)
    retain = np.flatnonzero(y != 3)
    original = _metrics(_fit_logits(x, y), x, y, xt, yt, forget, retain, [3])
    retrain = _metrics(_fit_logits(x[retain], y[retain]), x, y, xt, yt, forget, retain, [3])
    # the original model remembers class 3 on its training samples; MIA sees them as members
    assert original["UA"] < 2.0 and original["MIA"] < 5.0 and original["TA_forgotten"] > 90.0
    # the retrained model cannot predict class 3 at all: UA 100, MIA 100 (forget looks like unseen data)
    assert retrain["UA"] == 100.0 and retrain["TA_forgotten"] == 0.0 and retrain["MIA"] > 95.0
    # the other classes are unaffected: TA on the remaining classes within 2 points
    assert abs(retrain["TA_remaining"] - original["TA_remaining"]) < 2.0
    assert avg_gap(original, retrain) > 40.0
    assert avg_gap(retrain, retrain) == 0.0


def test_random_forgetting_original_vs_retrain(digits) -> None:
    x, y, xt, yt = digits
    forget = np.sort(np.random.default_rng(0).choice(len(y), size=len(y) // 10, replace=False))
    retain = np.setdiff1d(np.arange(len(y)), forget)
    original = _metrics(_fit_logits(x, y), x, y, xt, yt, forget, retain)
    retrain = _metrics(_fit_logits(x[retain], y[retain]), x, y, xt, yt, forget, retain)
    assert original["UA"] == 0.0 and original["RA"] == 100.0  # memorised
    # unseen samples are classified like test samples: the retrained forget error is near the test error
    assert retrain["UA"] > original["UA"]
    assert abs(retrain["UA"] - (100.0 - retrain["TA"])) < 4.0
    assert retrain["MIA"] > original["MIA"]

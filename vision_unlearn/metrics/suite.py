"""All protocol metrics of one unlearned model from its outputs on the forget, retain and test sets."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from vision_unlearn.metrics._arrays import softmax
from vision_unlearn.metrics.accuracy import (
    accuracy,
    forgotten_class_accuracy,
    remaining_class_accuracy,
    unlearning_accuracy,
)
from vision_unlearn.metrics.mia import mia_efficacy


def unlearning_metrics(
    forget_logits: Any,
    forget_labels: Any,
    retain_logits: Any,
    retain_labels: Any,
    test_logits: Any,
    test_labels: Any,
    *,
    forget_classes: Iterable[int] | None = None,
    mia_variant: str = "confidence",
    mia_member_selection: str = "random",
    seed: int = 0,
) -> dict[str, float]:
    """UA, RA, TA, MIA (and, for class-wise forgetting, TA on the remaining / forgotten classes).

    Args:
        forget_logits, retain_logits, test_logits: ``[N, K]`` logits of the model on each set.
        forget_labels, retain_labels, test_labels: ``[N]`` true classes.
        forget_classes: the forgotten classes of a class-wise request; adds ``TA_remaining`` (test
            accuracy on the other classes) and ``TA_forgotten`` (on the forgotten ones, if present).
        mia_variant: feature variant of the MIA (see :mod:`vision_unlearn.metrics.mia`).
        mia_member_selection: ``"random"`` or ``"first"`` retain rows as MIA members.
        seed: seed of the MIA member subset.

    Returns:
        Percentages: ``{"UA", "RA", "TA", "MIA"[, "TA_remaining", "TA_forgotten"]}``.
    """
    out = {
        "UA": unlearning_accuracy(forget_logits, forget_labels),
        "RA": accuracy(retain_logits, retain_labels, name="retain set"),
        "TA": accuracy(test_logits, test_labels, name="test set"),
        "MIA": mia_efficacy(
            softmax(retain_logits), retain_labels, softmax(test_logits), test_labels,
            softmax(forget_logits), forget_labels, variant=mia_variant,
            member_selection=mia_member_selection, seed=seed,
        ),
    }
    if forget_classes is not None:
        classes = sorted({int(c) for c in forget_classes})
        out["TA_remaining"] = remaining_class_accuracy(test_logits, test_labels, classes)
        test_y = np.asarray(test_labels.detach().cpu() if hasattr(test_labels, "detach") else test_labels)
        if np.isin(test_y, classes).any():
            out["TA_forgotten"] = forgotten_class_accuracy(test_logits, test_labels, classes)
    return out

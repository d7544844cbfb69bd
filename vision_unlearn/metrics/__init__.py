"""Pure evaluation metrics of machine unlearning (arrays or tensors in, floats or arrays out).

* :mod:`~vision_unlearn.metrics.accuracy` — UA, RA, TA, class-wise accuracies;
* :mod:`~vision_unlearn.metrics.mia` — the SVC MIA-Efficacy of the SalUn protocol;
* :mod:`~vision_unlearn.metrics.lira` — per-example LiRA scores, ROC AUC, TPR at low FPR;
* :mod:`~vision_unlearn.metrics.gap` — Avg.Gap to retraining and mean/std over seeds;
* :mod:`~vision_unlearn.metrics.suite` — all protocol metrics of one model at once;
* :mod:`~vision_unlearn.metrics.detection` and :mod:`~vision_unlearn.metrics.honesty` — the detector
  and abstention metrics (imported from their modules).
"""

from __future__ import annotations

from vision_unlearn.metrics._arrays import softmax
from vision_unlearn.metrics.accuracy import (
    accuracy,
    forgotten_class_accuracy,
    per_class_accuracy,
    predictions,
    remaining_class_accuracy,
    unlearning_accuracy,
)
from vision_unlearn.metrics.gap import (
    CLASSWISE_GAP_KEYS,
    GAP_KEYS,
    avg_gap,
    gap_keys,
    metric_gaps,
    summarise_seeds,
)
from vision_unlearn.metrics.lira import (
    lira_scores,
    lira_summary,
    logit_scaled_confidence,
    roc_auc,
    tpr_at_fpr,
)
from vision_unlearn.metrics.mia import MIA_VARIANTS, mia_efficacy, mia_features, svc_membership_attack
from vision_unlearn.metrics.suite import unlearning_metrics

__all__ = [
    "CLASSWISE_GAP_KEYS",
    "GAP_KEYS",
    "MIA_VARIANTS",
    "accuracy",
    "avg_gap",
    "forgotten_class_accuracy",
    "gap_keys",
    "lira_scores",
    "lira_summary",
    "logit_scaled_confidence",
    "metric_gaps",
    "mia_efficacy",
    "mia_features",
    "per_class_accuracy",
    "predictions",
    "remaining_class_accuracy",
    "roc_auc",
    "softmax",
    "summarise_seeds",
    "svc_membership_attack",
    "tpr_at_fpr",
    "unlearning_accuracy",
    "unlearning_metrics",
]

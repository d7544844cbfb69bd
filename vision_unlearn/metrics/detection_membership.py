"""Per-image membership inference against a detector, calibrated with reference detectors.

The loss-threshold attack (:func:`vision_unlearn.metrics.detection.loss_membership_attack`) asks
whether the forget images have a lower loss than unseen images. That is exactly the quantity an
ascent with held-out loss ceilings fits (NegGrad+ lifts each forget image to a held-out quantile),
so a method can pass it while each image still sits far below the loss it *would* have had without
training on it. This attack asks the per-image question instead, after the offline variant of LiRA
(Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022): reference
detectors trained without the image give the loss an image of that difficulty has when unseen, and
the score is how far below that the target's loss lies,

``score(x) = (mean_r log l_r(x) - log l_target(x)) / s(x)``,

with ``s(x)`` the standard deviation of ``log l_r(x)`` over the references (two or more; floored at
the median of those deviations over all images so that one agreeing pair cannot dominate), or 1
with a single reference (a difference-to-reference attack). Logs make the score a loss *ratio*, so
hard and easy images weigh alike. Forget images score high when the target still remembers them;
images nobody trained on score about 0 for any target.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def reference_calibrated_scores(target_losses: Any, reference_losses: Any, floor: float = 1e-6) -> np.ndarray:
    """Per-image scores ``[N]`` (higher: more likely a training member of the target).

    Args:
        target_losses: ``[N]`` per-image losses of the attacked detector.
        reference_losses: ``[R, N]`` losses of the same images under ``R >= 1`` reference detectors
            that never trained on them.
        floor: smallest loss used in the logs (detection losses are positive; guards an exact 0).

    Raises:
        ValueError: shapes that do not match, naming both.
    """
    target = np.asarray(target_losses, dtype=np.float64).reshape(-1)
    references = np.asarray(reference_losses, dtype=np.float64)
    if references.ndim == 1:
        references = references[None]
    if references.ndim != 2 or references.shape[1] != target.size or references.shape[0] < 1:
        raise ValueError(f"reference_losses must be [R, {target.size}] with R >= 1, got {references.shape}")
    log_target = np.log(np.maximum(target, floor))
    log_refs = np.log(np.maximum(references, floor))
    centre = log_refs.mean(axis=0)
    if references.shape[0] >= 2:
        spread = log_refs.std(axis=0, ddof=1)
        positive = spread[spread > 0]
        spread = np.maximum(spread, np.median(positive) if positive.size else 1.0)
    else:
        spread = np.ones_like(centre)
    return (centre - log_target) / spread


def reference_calibrated_attack(target_member_losses: Any, target_nonmember_losses: Any,
                                reference_member_losses: Any, reference_nonmember_losses: Any) -> dict[str, float]:
    """ROC AUC of :func:`reference_calibrated_scores` telling the asked-about images from unseen ones.

    Args:
        target_member_losses: ``[M]`` target losses of the images asked about (the forget images).
        target_nonmember_losses: ``[N]`` target losses of images it never trained on (test images).
        reference_member_losses: ``[R, M]`` the references' losses of the asked-about images.
        reference_nonmember_losses: ``[R, N]`` the references' losses of the unseen images.

    Returns:
        ``auc`` (0.5: the target treats the forget images like unseen ones, as a retrained detector
        does; 1: every forget image sits further below its reference loss than any unseen image),
        ``auc_ci_low``/``auc_ci_high`` (DeLong 95 %, NaN with fewer than two images on a side),
        ``references`` (R) and ``member_score_mean``/``nonmember_score_mean``.
    """
    from vision_unlearn.metrics.lira import roc_auc, roc_auc_ci

    members = reference_calibrated_scores(target_member_losses, reference_member_losses)
    nonmembers = reference_calibrated_scores(target_nonmember_losses, reference_nonmember_losses)
    scores = np.concatenate([members, nonmembers])
    is_member = np.concatenate([np.ones(members.size, bool), np.zeros(nonmembers.size, bool)])
    low = high = float("nan")
    if members.size >= 2 and nonmembers.size >= 2:
        _, low, high = roc_auc_ci(scores, is_member)
    references = np.asarray(reference_member_losses)
    return {"auc": roc_auc(scores, is_member), "auc_ci_low": low, "auc_ci_high": high,
            "references": float(references.shape[0] if references.ndim == 2 else 1),
            "member_score_mean": float(members.mean()), "nonmember_score_mean": float(nonmembers.mean())}

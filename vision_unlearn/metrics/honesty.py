"""Honesty of an unlearned model: does it admit it does not know, or does it "lie"?

An unlearned model that answers a forgotten input confidently with another class is not honest:
a user cannot tell a forgotten input from a known one. Following "Unlearners Can Lie" (2025), which
measures rejection rate and refusal stability of unlearned LLMs, every forgotten input falls into
exactly one of three outcomes, given a confidence score and a threshold ``t``:

* **abstain**: score ``< t``, or the prediction is the reject class (e.g. ``"none"`` of the RFO
  patches, background for a detector);
* **recall**: confident (score ``>= t``) and correct - the knowledge is still there;
* **lie** (confident misattribution): confident and wrong.

``t`` is chosen on *retain / validation* outputs of the same model so that only a target share of
known inputs is abstained on (the false-abstention rate). Stability: the same input queried again
(repeated queries, test-time augmentations) should get the same decision.

All functions are pure: tensors in, numbers / tensors out; nothing is printed or read.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import Tensor

ScoreKind = Literal["max_softmax", "energy"]


def confidence_scores(logits: Tensor, kind: ScoreKind = "max_softmax", temperature: float = 1.0) -> Tensor:
    """Confidence ``[N]`` of ``[N, K]`` logits (higher = more confident).

    ``"max_softmax"``: ``max_k softmax(z / T)_k`` (Hendrycks & Gimpel, ICLR 2017);
    ``"energy"``: the negative free energy ``T * logsumexp(z / T)`` (Liu et al., NeurIPS 2020).
    """
    if logits.ndim != 2:
        raise ValueError(f"expected logits [N, K], got shape {tuple(logits.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = logits.double() / temperature
    if kind == "max_softmax":
        return scaled.softmax(dim=1).max(dim=1).values
    if kind == "energy":
        return temperature * torch.logsumexp(scaled, dim=1)
    raise ValueError(f"unknown score kind {kind!r}; expected 'max_softmax' or 'energy'")


def abstention_threshold(calibration_scores: Tensor, false_abstention_rate: float) -> float:
    """Threshold ``t`` (abstain when ``score < t``) abstaining on at most ``false_abstention_rate``
    of the calibration scores; the largest such observed score.

    With ascending scores ``s_0 <= ... <= s_{n-1}`` it is ``s_m`` with ``m = floor(rate * n)``.
    Hand case: ``[0.4, 0.1, 0.3, 0.2]`` at rate ``0.25`` gives ``0.2`` (only ``0.1`` is below).

    Raises:
        ValueError: no scores, or a rate outside ``[0, 1)``.
    """
    if calibration_scores.numel() == 0:
        raise ValueError("cannot choose an abstention threshold without calibration scores")
    if not 0.0 <= false_abstention_rate < 1.0:
        raise ValueError(f"false_abstention_rate must lie in [0, 1), got {false_abstention_rate}")
    ordered = torch.sort(calibration_scores.double().flatten()).values
    index = min(math.floor(false_abstention_rate * ordered.numel() + 1e-9), ordered.numel() - 1)
    return float(ordered[index])


def abstains(logits: Tensor, threshold: float, kind: ScoreKind = "max_softmax", reject_class: int | None = None,
             temperature: float = 1.0) -> Tensor:
    """Bool ``[N]``: the model abstains (score ``< threshold`` or predicts ``reject_class``)."""
    decision = confidence_scores(logits, kind, temperature) < threshold
    if reject_class is not None:
        decision = decision | (logits.argmax(dim=1) == reject_class)
    return decision


def confident_misattributions(logits: Tensor, labels: Tensor, threshold: float, kind: ScoreKind = "max_softmax",
                              reject_class: int | None = None, temperature: float = 1.0) -> Tensor:
    """Bool ``[N]``: predicted as another (non-reject) class with confidence ``>= threshold``."""
    if labels.shape != logits.shape[:1]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match logits {tuple(logits.shape)}")
    predicted = logits.argmax(dim=1)
    wrong = predicted != labels.to(predicted.device)
    return wrong & ~abstains(logits, threshold, kind, reject_class, temperature)


def rate(decisions: Tensor) -> float:
    """Share of ``True`` in a bool tensor (abstention rate, false-abstention rate, ...).

    Raises:
        ValueError: empty input (a rate over nothing is undefined).
    """
    if decisions.numel() == 0:
        raise ValueError("a rate needs at least one decision")
    return float(decisions.double().mean())


def abstention_stability(decisions: Tensor) -> float:
    """Share of inputs whose decision is identical in every query.

    Args:
        decisions: bool ``[R, N]``: decision of query / augmented view ``r`` on input ``n`` (``R >= 2``).
    """
    if decisions.ndim != 2 or decisions.shape[0] < 2 or decisions.shape[1] == 0:
        raise ValueError(f"expected decisions [R >= 2, N >= 1], got shape {tuple(decisions.shape)}")
    decisions = decisions.bool()
    return float((decisions.all(dim=0) | (~decisions).all(dim=0)).double().mean())


def consistent_abstention_rate(decisions: Tensor) -> float:
    """Share of inputs abstained on in every one of the ``R`` queries (bool ``[R, N]``)."""
    if decisions.ndim != 2 or decisions.shape[1] == 0:
        raise ValueError(f"expected decisions [R, N >= 1], got shape {tuple(decisions.shape)}")
    return float(decisions.bool().all(dim=0).double().mean())


@dataclass(frozen=True)
class HonestyResult:
    """Honesty of one model on one forget request (rates in ``[0, 1]``).

    Attributes:
        score_kind: confidence score used.
        threshold: abstention threshold chosen on the calibration outputs.
        abstention_rate: forget inputs abstained on.
        recall_rate: forget inputs answered confidently and correctly (knowledge still there).
        misattribution_rate: forget inputs answered confidently with another class ("lies");
            the three rates above sum to 1.
        false_abstention_rate: retain inputs abstained on.
        stability: share of forget inputs with the same decision in every view (``nan`` without views).
        consistent_abstention_rate: forget inputs abstained on in every view (``nan`` without views).
    """

    score_kind: str
    threshold: float
    abstention_rate: float
    recall_rate: float
    misattribution_rate: float
    false_abstention_rate: float
    stability: float = float("nan")
    consistent_abstention_rate: float = float("nan")

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)


def compute_honesty(forget_logits: Tensor, forget_labels: Tensor, calibration_logits: Tensor, *,
                    retain_logits: Tensor | None = None, forget_view_logits: Tensor | Sequence[Tensor] | None = None,
                    false_abstention_target: float = 0.05, kind: ScoreKind = "max_softmax",
                    reject_class: int | None = None, temperature: float = 1.0) -> HonestyResult:
    """Honesty metrics of a classifier on its forget inputs.

    Args:
        forget_logits: ``[N_f, K]`` logits of the forget inputs.
        forget_labels: ``int64 [N_f]`` their original labels.
        calibration_logits: ``[N_c, K]`` logits of retain or validation inputs *of the same model*;
            the threshold abstains on ``false_abstention_target`` of them.
        retain_logits: ``[N_r, K]`` logits whose false-abstention rate is reported (default: the
            calibration logits; pass held-out retain inputs for an unbiased figure).
        forget_view_logits: ``[R, N_f, K]`` (or ``R`` tensors ``[N_f, K]``) logits of repeated
            queries / augmented views of the forget inputs, for stability (``R >= 2``).
        false_abstention_target: share of calibration inputs allowed to be abstained on.
        kind: confidence score.
        reject_class: a class meaning "none / background"; predicting it counts as abstaining.
        temperature: softmax / energy temperature.
    """
    threshold = abstention_threshold(confidence_scores(calibration_logits, kind, temperature),
                                     false_abstention_target)
    abstained = abstains(forget_logits, threshold, kind, reject_class, temperature)
    lies = confident_misattributions(forget_logits, forget_labels, threshold, kind, reject_class, temperature)
    recalled = ~abstained & ~lies
    retain = calibration_logits if retain_logits is None else retain_logits
    stability = consistent = float("nan")
    if forget_view_logits is not None:
        views = forget_view_logits if isinstance(forget_view_logits, Tensor) else torch.stack(list(forget_view_logits))
        decisions = torch.stack([abstains(v, threshold, kind, reject_class, temperature) for v in views])
        stability = abstention_stability(decisions)
        consistent = consistent_abstention_rate(decisions)
    return HonestyResult(score_kind=kind, threshold=threshold, abstention_rate=rate(abstained),
                         recall_rate=rate(recalled), misattribution_rate=rate(lies),
                         false_abstention_rate=rate(abstains(retain, threshold, kind, reject_class, temperature)),
                         stability=stability, consistent_abstention_rate=consistent)


# --------------------------------------------------------------------------------------------- detectors
def object_outcome_scores(pred_boxes_xyxy: Tensor, pred_scores: Tensor, pred_labels: Tensor, gt_boxes_xyxy: Tensor,
                          gt_labels: Tensor, iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Per ground-truth object of one image: the best score of an overlapping detection of its own
    class and of any other class (0 when there is none).

    Args:
        pred_boxes_xyxy: ``[M, 4]`` detections (pixels); ``pred_scores`` ``[M]``; ``pred_labels`` ``[M]``.
        gt_boxes_xyxy: ``[G, 4]`` objects; ``gt_labels`` ``[G]``.
        iou_threshold: a detection overlaps an object when their IoU is ``>= iou_threshold``.

    Returns:
        ``(same_class_score [G], other_class_score [G])``.
    """
    from torchvision.ops import box_iou

    g = int(gt_boxes_xyxy.shape[0])
    zeros = torch.zeros(g, dtype=torch.float64)
    if pred_boxes_xyxy.shape[0] == 0 or g == 0:
        return zeros, zeros.clone()
    overlap = box_iou(gt_boxes_xyxy.double(), pred_boxes_xyxy.double()) >= iou_threshold
    same = gt_labels.reshape(-1, 1) == pred_labels.reshape(1, -1)
    scores = pred_scores.double().reshape(1, -1).expand(g, -1)
    same_best = torch.where(overlap & same, scores, torch.zeros_like(scores)).max(dim=1).values
    other_best = torch.where(overlap & ~same, scores, torch.zeros_like(scores)).max(dim=1).values
    return same_best, other_best


@dataclass(frozen=True)
class DetectionHonestyResult:
    """Honesty of a detector on forget-class objects (rates in ``[0, 1]``; see :func:`detection_honesty`)."""

    threshold: float
    abstention_rate: float
    recall_rate: float
    misattribution_rate: float
    false_abstention_rate: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def detection_honesty(forget_same: Tensor, forget_other: Tensor, retain_same: Tensor,
                      false_abstention_target: float = 0.05) -> DetectionHonestyResult:
    """Abstain / recall / lie for the forget objects of a detector.

    The threshold is chosen on the retain objects' same-class scores (``retain_same``, from
    :func:`object_outcome_scores` over the retain images) so that at most ``false_abstention_target``
    of them go undetected (a score of 0 means no overlapping detection and is never enough). A forget object is *recalled* when a same-class detection reaches the
    threshold, a *lie* when only another class does (confidently detected as something else), and
    *abstained* on (background) otherwise.

    Args:
        forget_same: ``[G_f]`` best same-class score per forget object; ``forget_other``: ``[G_f]``.
        retain_same: ``[G_r]`` best same-class score per retain object.
        false_abstention_target: share of retain objects allowed below the threshold.
    """
    threshold = abstention_threshold(retain_same, false_abstention_target)
    recalled = (forget_same >= threshold) & (forget_same > 0)
    lies = ~recalled & (forget_other >= threshold) & (forget_other > 0)
    abstained = ~recalled & ~lies
    missed = (retain_same < threshold) | (retain_same <= 0)
    return DetectionHonestyResult(threshold=threshold, abstention_rate=rate(abstained), recall_rate=rate(recalled),
                                  misattribution_rate=rate(lies), false_abstention_rate=rate(missed))

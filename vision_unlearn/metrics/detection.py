"""Forgetting metrics for object detectors (pure functions on arrays; no files, no models).

Boxes are ``x1, y1, x2, y2`` pixels; class ids are 0-based indices into the model's classes.
Ground truth and detections of a whole evaluation set are given as flat :class:`Boxes` whose
``image`` column names the image row of each box.

* :func:`coco_ap_per_class`: COCO AP50-95 and AP50 per class, with the toolkit's COCO evaluator
  (:mod:`rfo_bench.metrics.coco_eval`, numbers identical to pycocotools);
* :func:`class_forgetting_ap`: forget-class AP50 / AP50-95 and retain-class mAP from those;
* :func:`per_image_recall`: share of each image's objects found (same class, IoU and score
  thresholds, one detection per object);
* :func:`confident_misattribution_rate`: share of forgotten objects no longer found as their own
  class but still found, confidently, as *another* class (the detector "lies" about them);
* :func:`loss_membership_attack`: loss-based membership inference of forget vs held-out images
  (ROC AUC and the best threshold attack);
* :func:`gaps_to_reference`, :func:`runtime_ratio`: comparison with the retrained detector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class Boxes:
    """Boxes of an evaluation set, flat.

    Attributes:
        boxes_xyxy: ``float [N, 4]`` pixels.
        labels: ``int [N]`` class indices.
        image: ``int [N]`` image row of each box in ``[0, num_images)``.
        scores: ``float [N]`` confidences (detections) or ``None`` (ground truth).
    """

    boxes_xyxy: np.ndarray
    labels: np.ndarray
    image: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = np.asarray(self.labels).reshape(-1).shape[0]
        if np.asarray(self.boxes_xyxy).reshape(-1, 4).shape[0] != n or np.asarray(self.image).reshape(-1).shape[0] != n:
            raise ValueError(f"boxes {np.shape(self.boxes_xyxy)}, labels {np.shape(self.labels)} and image "
                             f"{np.shape(self.image)} must describe the same N boxes")
        if self.scores is not None and np.asarray(self.scores).reshape(-1).shape[0] != n:
            raise ValueError(f"{np.shape(self.scores)} scores for {n} boxes")

    def __len__(self) -> int:
        return int(np.asarray(self.labels).reshape(-1).shape[0])

    @staticmethod
    def from_per_image(boxes: Sequence[Any], labels: Sequence[Any], scores: Sequence[Any] | None = None) -> Boxes:
        """Flatten per-image ``[k_i, 4]`` boxes, ``[k_i]`` labels (and scores)."""
        arrays = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
        image = np.concatenate([np.full(a.shape[0], i, dtype=np.int64) for i, a in enumerate(arrays)]) \
            if arrays else np.zeros(0, np.int64)
        return Boxes(
            boxes_xyxy=np.concatenate(arrays) if arrays else np.zeros((0, 4)),
            labels=np.concatenate([np.asarray(v, dtype=np.int64).reshape(-1) for v in labels]) if labels
            else np.zeros(0, np.int64),
            image=image,
            scores=None if scores is None else (np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1)
                                                                for s in scores]) if scores else np.zeros(0)),
        )

    @staticmethod
    def from_detections(detections: Sequence[torch.Tensor]) -> Boxes:
        """From per-image ``Tensor[n_i, 6]`` rows ``x1, y1, x2, y2, score, class`` (YOLO adapter output)."""
        rows = [d.detach().cpu().double().numpy().reshape(-1, 6) for d in detections]
        return Boxes.from_per_image([r[:, :4] for r in rows], [r[:, 5].astype(np.int64) for r in rows],
                                    [r[:, 4] for r in rows])

    def of_image(self, row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        keep = np.asarray(self.image).reshape(-1) == row
        scores = None if self.scores is None else np.asarray(self.scores).reshape(-1)[keep]
        return (np.asarray(self.boxes_xyxy, dtype=np.float64).reshape(-1, 4)[keep],
                np.asarray(self.labels).reshape(-1)[keep], scores)


def coco_ap_per_class(ground_truth: Boxes, detections: Boxes, num_images: int, num_classes: int) -> np.ndarray:
    """COCO bbox AP per class (area ``all``, 100 detections per image).

    Args:
        ground_truth: objects (``scores`` ignored).
        detections: detections with ``scores``.
        num_images: images in the evaluation set (images without objects still count for false positives).
        num_classes: ``K``.

    Returns:
        ``float [K, 2]``: columns AP50-95 and AP50 in ``[0, 1]``; ``NaN`` for a class without objects.
    """
    from rfo_bench.metrics.coco_eval import coco_arrays, native_coco_eval, per_category_ap

    if detections.scores is None:
        raise ValueError("detections need scores")
    gt = {"images": [{"id": i + 1} for i in range(num_images)],
          "categories": [{"id": k + 1} for k in range(num_classes)],
          "annotations": []}
    boxes = np.asarray(ground_truth.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    for j, (box, label, image) in enumerate(zip(boxes, np.asarray(ground_truth.labels).reshape(-1),
                                                np.asarray(ground_truth.image).reshape(-1))):
        w, h = float(box[2] - box[0]), float(box[3] - box[1])
        gt["annotations"].append({"id": j + 1, "image_id": int(image) + 1, "category_id": int(label) + 1,
                                  "bbox": [float(box[0]), float(box[1]), w, h], "area": w * h, "iscrowd": 0})
    results = [{"image_id": int(image) + 1, "category_id": int(label) + 1,
                "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "score": float(s)}
               for b, label, image, s in zip(np.asarray(detections.boxes_xyxy, dtype=np.float64).reshape(-1, 4),
                                             np.asarray(detections.labels).reshape(-1),
                                             np.asarray(detections.image).reshape(-1),
                                             np.asarray(detections.scores).reshape(-1))]
    result = native_coco_eval(coco_arrays(gt, results))
    per_class = per_category_ap(result.precision)
    per_class[per_class < 0] = np.nan
    return per_class


def class_forgetting_ap(per_class: np.ndarray, forget_classes: Iterable[int]) -> dict[str, float]:
    """Forget-class and retain-class AP from :func:`coco_ap_per_class` output.

    Returns:
        ``forget_ap50``, ``forget_ap50_95`` (mean over the forget classes), ``retain_map50``,
        ``retain_map50_95`` (mean over the other classes with objects) and ``map50``,
        ``map50_95`` over all classes with objects. ``NaN`` where no class qualifies.
    """
    per_class = np.asarray(per_class, dtype=np.float64)
    forget = sorted(set(int(c) for c in forget_classes))
    mask = np.zeros(per_class.shape[0], dtype=bool)
    mask[forget] = True

    def mean(rows: np.ndarray, column: int) -> float:
        values = rows[:, column]
        values = values[np.isfinite(values)]
        return float(values.mean()) if values.size else float("nan")

    return {"forget_ap50": mean(per_class[mask], 1), "forget_ap50_95": mean(per_class[mask], 0),
            "retain_map50": mean(per_class[~mask], 1), "retain_map50_95": mean(per_class[~mask], 0),
            "map50": mean(per_class, 1), "map50_95": mean(per_class, 0)}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from torchvision.ops import box_iou

    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    return box_iou(torch.from_numpy(a).double(), torch.from_numpy(b).double()).numpy()


def per_image_recall(ground_truth: Boxes, detections: Boxes, num_images: int, iou_threshold: float = 0.5,
                     score_threshold: float = 0.25) -> np.ndarray:
    """Share of each image's objects found by a detection of the same class.

    Detections with ``score >= score_threshold`` are matched greedily by descending score, each to
    the unmatched object of its class with the highest IoU ``>= iou_threshold`` (one detection per
    object, one object per detection).

    Returns:
        ``float [num_images]``: recall per image in ``[0, 1]``; ``NaN`` for an image without objects.
    """
    if detections.scores is None:
        raise ValueError("detections need scores")
    recall = np.full(num_images, np.nan)
    for row in range(num_images):
        gt_boxes, gt_labels, _ = ground_truth.of_image(row)
        if gt_boxes.shape[0] == 0:
            continue
        dt_boxes, dt_labels, dt_scores = detections.of_image(row)
        keep = dt_scores >= score_threshold
        dt_boxes, dt_labels, dt_scores = dt_boxes[keep], dt_labels[keep], dt_scores[keep]
        iou = _iou(dt_boxes, gt_boxes)
        matched = np.zeros(gt_boxes.shape[0], dtype=bool)
        for d in np.argsort(-dt_scores, kind="stable"):
            candidates = np.where((gt_labels == dt_labels[d]) & ~matched & (iou[d] >= iou_threshold), iou[d], -1.0)
            best = int(np.argmax(candidates)) if candidates.size else -1
            if best >= 0 and candidates[best] >= 0:
                matched[best] = True
        recall[row] = matched.mean()
    return recall


def confident_misattribution_rate(ground_truth: Boxes, detections: Boxes, num_images: int,
                                  iou_threshold: float = 0.5, score_threshold: float = 0.25) -> dict[str, float]:
    """How many forgotten objects the detector still sees but calls something else.

    An object is *recalled* when a detection of its own class with ``score >= score_threshold``
    overlaps it with IoU ``>= iou_threshold``; *misattributed* when it is not recalled but a
    detection of another class does so; *abstained* (seen as background) otherwise. Uses
    :func:`vision_unlearn.metrics.honesty.object_outcome_scores` per image.

    Returns:
        ``misattribution_rate``, ``recall_rate``, ``abstention_rate`` (fractions of the objects,
        ``NaN`` without objects) and ``num_objects``.
    """
    from vision_unlearn.metrics.honesty import object_outcome_scores

    if detections.scores is None:
        raise ValueError("detections need scores")
    same_all, other_all = [], []
    for row in range(num_images):
        gt_boxes, gt_labels, _ = ground_truth.of_image(row)
        if gt_boxes.shape[0] == 0:
            continue
        dt_boxes, dt_labels, dt_scores = detections.of_image(row)
        same, other = object_outcome_scores(torch.from_numpy(dt_boxes), torch.from_numpy(dt_scores),
                                            torch.from_numpy(dt_labels), torch.from_numpy(gt_boxes),
                                            torch.from_numpy(gt_labels), iou_threshold)
        same_all.append(same.numpy())
        other_all.append(other.numpy())
    if not same_all:
        return {"misattribution_rate": float("nan"), "recall_rate": float("nan"), "abstention_rate": float("nan"),
                "num_objects": 0.0}
    same_s, other_s = np.concatenate(same_all), np.concatenate(other_all)
    recalled = (same_s >= score_threshold) & (same_s > 0)
    lies = ~recalled & (other_s >= score_threshold) & (other_s > 0)
    return {"misattribution_rate": float(lies.mean()), "recall_rate": float(recalled.mean()),
            "abstention_rate": float((~recalled & ~lies).mean()), "num_objects": float(same_s.size)}


def loss_membership_attack(member_losses: Any, nonmember_losses: Any) -> dict[str, float]:
    """Loss-based membership inference: a lower loss is taken as evidence of training membership.

    Args:
        member_losses: ``[N_m]`` per-image losses of the images asked about (e.g. the forget images).
        nonmember_losses: ``[N_n]`` per-image losses of images never trained on (held-out).

    Returns:
        ``auc``: ROC AUC of the score ``-loss`` (0.5 = indistinguishable, as for a model that never
        saw the forget images; 1 = every member has a lower loss than every non-member);
        ``attack_accuracy``: the best balanced accuracy of any threshold ``loss <= t`` (an optimistic,
        in-sample attack; 0.5 = chance) and ``threshold``, that ``t``;
        ``member_loss_mean``, ``nonmember_loss_mean``; ``auc_ci_low``/``auc_ci_high``, DeLong's
        95 % interval of the AUC (:func:`~vision_unlearn.metrics.lira.roc_auc_ci`; NaN with fewer
        than two images on a side).
    """
    from vision_unlearn.metrics.lira import roc_auc, roc_auc_ci

    members = np.asarray(member_losses, dtype=np.float64).reshape(-1)
    nonmembers = np.asarray(nonmember_losses, dtype=np.float64).reshape(-1)
    scores = -np.concatenate([members, nonmembers])
    is_member = np.concatenate([np.ones(members.size, bool), np.zeros(nonmembers.size, bool)])
    auc = roc_auc(scores, is_member)
    losses = -scores
    best_accuracy, best_threshold = 0.5, float("-inf")
    for t in np.unique(losses):
        accuracy = 0.5 * (float((members <= t).mean()) + float((nonmembers > t).mean()))
        if accuracy > best_accuracy:
            best_accuracy, best_threshold = accuracy, float(t)
    low = high = float("nan")
    if members.size >= 2 and nonmembers.size >= 2:
        _, low, high = roc_auc_ci(scores, is_member)
    return {"auc": auc, "attack_accuracy": best_accuracy, "threshold": best_threshold,
            "member_loss_mean": float(members.mean()), "nonmember_loss_mean": float(nonmembers.mean()),
            "auc_ci_low": low, "auc_ci_high": high}


def gaps_to_reference(metrics: Mapping[str, float], reference: Mapping[str, float],
                      keys: Iterable[str] | None = None) -> dict[str, float]:
    """``metrics[k] - reference[k]`` for every numeric key both share (or ``keys``); the reference
    is the detector retrained on the retain data only."""
    chosen = keys if keys is not None else [k for k in metrics if k in reference]
    out: dict[str, float] = {}
    for key in chosen:
        a, b = metrics.get(key), reference.get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
            out[key] = float(a) - float(b)
    return out


def runtime_ratio(seconds: float, retrain_seconds: float) -> float:
    """Run time as a fraction of the retraining time (``< 1``: cheaper than retraining)."""
    if retrain_seconds <= 0:
        raise ValueError(f"retrain_seconds must be positive, got {retrain_seconds}")
    return float(seconds) / float(retrain_seconds)

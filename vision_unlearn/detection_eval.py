"""Evaluation of one detector for an unlearning request: detection metrics, membership attacks and
whether the request can be evaluated at all.

Membership is asked only where it means something: for image and patient requests (whole images
left the training set). A class request keeps its images, so "are the forget images members?" has
the answer "yes" for every method, and the loss-threshold AUC there measured how badly the class is
detected (a detector that finds nothing scored 0.165). Two attacks are reported side by side:

* ``mia_auc``: the loss-threshold attack (:func:`~vision_unlearn.metrics.detection.loss_membership_attack`),
  the distribution NegGrad+ with held-out quantile ceilings is fitted to;
* ``calibrated_mia_auc``: per-image, calibrated against reference detectors that never saw the
  images (:mod:`vision_unlearn.metrics.detection_membership`); needs those references, which the
  benchmark has (its retrained detectors) and a single ``run`` does not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.yolo import YoloAdapter
from vision_unlearn.adapters.yolo_data import DetectionData
from vision_unlearn.detection_forget import DetectionForgetSplit
from vision_unlearn.methods.grad_ascent import HELDOUT_MODES
from vision_unlearn.metrics.detection import (
    Boxes,
    class_forgetting_ap,
    coco_ap_per_class,
    confident_misattribution_rate,
    loss_membership_attack,
    per_image_recall,
)
from vision_unlearn.metrics.detection_membership import reference_calibrated_attack

logger = logging.getLogger(__name__)

NOTHING_FOUND = 0.05
"""Below this forget AP50 (class requests) or forget recall (other requests) the original detector
does not find what it is asked to forget, and its forgetting cannot be measured."""

@torch.no_grad()
def per_image_losses(adapter: YoloAdapter, data: DetectionData, batch_size: int = 32) -> np.ndarray:
    """Eval-mode per-image detection losses ``[N]`` of ``data`` with its own annotations."""
    model = adapter.model
    was_training = model.training
    model.eval()
    original = adapter.spec
    adapter.spec = replace(original, reduction="image")
    device = next(model.parameters()).device
    try:
        stream = data.stream()
        out = []
        for start in range(0, len(data), batch_size):
            batch = {k: v[start:start + batch_size].to(device) for k, v in stream.items()}
            out.append(adapter.loss(batch)["per_sample"].detach().cpu())
    finally:
        adapter.spec = original
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def heldout_loss_median(adapter: YoloAdapter, heldout: DetectionData) -> float:
    """The median per-image loss of the detector on held-out images (eval mode, own annotations):
    what ``forget_loss_ceiling="heldout"`` starts from (:class:`~vision_unlearn.methods.grad_ascent.HeldoutCeiling`)."""
    if len(heldout) == 0:
        raise UserInputError("the held-out data holds no images", field="--heldout-data")
    return float(np.median(per_image_losses(adapter, heldout)))


def resolve_loss_ceiling(config: Mapping[str, Any], removes_images: bool, has_heldout: bool,
                         strict: bool = True) -> dict[str, Any]:
    """``config`` with ``forget_loss_ceiling="heldout"`` (or ``"heldout_quantiles"``) resolved for this request.

    Only a sample request (images, patients) is served by a loss ceiling; for a class or instance
    request the objects must go, not reach a held-out loss, so the held-out ceiling becomes ``None``
    (the method's own ascent). For a sample request it stays and needs held-out images
    (:func:`_run_method` attaches them). Other values pass unchanged.

    Args:
        strict: without held-out images, raise (``run``) or, when ``False`` (the benchmark), log a
            warning and run without a ceiling (each row records ``forget_loss_ceiling``).

    Raises:
        UserInputError: ``strict``, a sample request asks for ``"heldout"`` and there are no held-out images.
    """
    mode = config.get("forget_loss_ceiling")
    if mode not in HELDOUT_MODES:
        return dict(config)
    if not removes_images:
        return {**config, "forget_loss_ceiling": None}
    if not has_heldout:
        if not strict:
            logger.warning("no held-out images for forget_loss_ceiling=%r; running without a ceiling", mode)
            return {**config, "forget_loss_ceiling": None}
        raise UserInputError(f"forget_loss_ceiling={mode!r} needs held-out images the detector never saw",
                             field="--heldout-data")
    return dict(config)


def detections_of(adapter: YoloAdapter, data: DetectionData) -> Boxes:
    """Detections on ``data`` (input pixels) as flat :class:`Boxes`."""
    return Boxes.from_detections(adapter.detect(data.images))


def ground_truth_of(data: DetectionData) -> Boxes:
    return Boxes(data.boxes_xyxy.double().numpy(), data.labels.numpy(), data.box_image.numpy())


@dataclass(frozen=True)
class MembershipLosses:
    """Per-image losses of one detector on the images a membership attack compares.

    Attributes:
        forget: ``[M]`` losses of the forget images (all their annotations).
        test: ``[N]`` losses of the test images.
    """

    forget: np.ndarray
    test: np.ndarray


def membership_losses(adapter: YoloAdapter, train: DetectionData, test: DetectionData,
                      split: DetectionForgetSplit) -> MembershipLosses:
    """The losses :func:`evaluate_detector`'s attacks read (eval mode, own annotations)."""
    return MembershipLosses(per_image_losses(adapter, train.select(split.forget_images)),
                            per_image_losses(adapter, test))


def calibrated_membership(target: MembershipLosses, references: list[MembershipLosses]) -> dict[str, float]:
    """``calibrated_mia_auc`` (and its DeLong interval) of ``target`` against reference detectors
    trained without the forget images; NaN without references."""
    if not references:
        return {"calibrated_mia_auc": float("nan"), "calibrated_mia_auc_ci_low": float("nan"),
                "calibrated_mia_auc_ci_high": float("nan"), "calibrated_mia_references": 0.0}
    result = reference_calibrated_attack(target.forget, target.test, np.stack([r.forget for r in references]),
                                         np.stack([r.test for r in references]))
    return {"calibrated_mia_auc": result["auc"], "calibrated_mia_auc_ci_low": result["auc_ci_low"],
            "calibrated_mia_auc_ci_high": result["auc_ci_high"], "calibrated_mia_references": result["references"]}


def evaluate_detector(adapter: YoloAdapter, train: DetectionData, test: DetectionData, split: DetectionForgetSplit,
                      score_threshold: float = 0.25,
                      references: list[MembershipLosses] | None = None) -> dict[str, float]:
    """Forgetting metrics of one detector (see :mod:`vision_unlearn.metrics.detection`).

    * test AP per class: ``forget_ap50``/``forget_ap50_95`` over the forgotten classes (class
      requests), ``retain_map50``/``retain_map50_95`` over the others, ``map50``/``map50_95``;
    * on the forget training images against their forget annotations: ``forget_recall``
      (mean per-image recall), ``misattribution_rate``;
    * image and patient requests only: ``mia_auc`` / ``mia_attack_accuracy``, loss-based membership
      inference of the forget training images (with all their annotations) against the test images,
      and with ``references`` (detectors trained without the forget images) ``calibrated_mia_auc``.

    Args:
        references: membership losses of reference detectors (see :func:`calibrated_membership`).
    """
    num_classes = adapter.num_classes
    per_class = coco_ap_per_class(ground_truth_of(test), detections_of(adapter, test), len(test), num_classes)
    metrics = class_forgetting_ap(per_class, split.forgotten_classes)
    for k, name in enumerate(adapter.class_names):
        metrics[f"ap50_{name}"] = float(per_class[k, 1])
    forget = split.forget_data(train)
    forget_truth, forget_dets = ground_truth_of(forget), detections_of(adapter, forget)
    recall = per_image_recall(forget_truth, forget_dets, len(forget), score_threshold=score_threshold)
    metrics["forget_recall"] = float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")
    lies = confident_misattribution_rate(forget_truth, forget_dets, len(forget), score_threshold=score_threshold)
    metrics["misattribution_rate"] = lies["misattribution_rate"]
    if not split.request.removes_images:
        return metrics
    losses = membership_losses(adapter, train, test, split)
    mia = loss_membership_attack(losses.forget, losses.test)
    metrics["mia_auc"] = mia["auc"]
    metrics["mia_attack_accuracy"] = mia["attack_accuracy"]
    metrics["mia_auc_ci_low"], metrics["mia_auc_ci_high"] = mia["auc_ci_low"], mia["auc_ci_high"]
    if references is not None:
        metrics.update(calibrated_membership(losses, references))
    return metrics


def evaluability(before: Mapping[str, Any], is_class_request: bool) -> dict[str, Any]:
    """Whether the original detector finds what the request asks to forget.

    A detector that finds nothing scores "forget AP50 0.000" after any method, which is no evidence
    of forgetting. Class requests read ``forget_ap50`` on the test images; image, patient and
    instance requests the ``forget_recall`` on the forget images (:data:`NOTHING_FOUND`).

    Returns:
        ``{"evaluable": bool, "reason": str | None}``.
    """
    key = "forget_ap50" if is_class_request else "forget_recall"
    value = before.get(key)
    if not isinstance(value, (int, float)) or not np.isfinite(value):
        return {"evaluable": False, "reason": f"the original detector's {key} is undefined"}
    if value < NOTHING_FOUND:
        return {"evaluable": False,
                "reason": f"the original detector finds nothing to forget ({key} before {value:.3f} < "
                          f"{NOTHING_FOUND}): the request cannot be evaluated on this model"}
    return {"evaluable": True, "reason": None}

"""Adapter for Ultralytics YOLO detectors (YOLOv8 and YOLO11 families).

The model is an :class:`ultralytics.nn.tasks.DetectionModel`, built from a model yaml
(``yolov8n.yaml``, ``yolo11s.yaml`` or a local file; ``nc`` and 1 or 3 input channels set here) or
read from a local detection checkpoint (``.pt``). Nothing is downloaded.

The training loss is computed outside the Ultralytics trainer with the library's own criterion
(``v8DetectionLoss``: task-aligned assignment, BCE classification, CIoU box and DFL losses) and the
gains of :class:`YoloLossGains`, which checkpoints do not carry reliably. In Ultralytics 8.4 the
criterion returns ``gain * component * batch_size`` with each component normalised by the summed
target scores of the *whole batch* (clamped to at least 1). Two reductions are offered
(:attr:`YoloModelSpec.reduction`):

* ``"image"`` (default): the criterion is evaluated on each image alone (one forward pass, one
  assignment per image); ``"per_sample"`` holds these per-image losses and ``"loss"`` is their
  mean, so forget and retain batches of any size are on one scale and membership-inference scores
  are the training loss itself. Costs about 25-45 % more per step on a CPU (YOLOv8n, 128 px, 16
  images).
* ``"batch"``: exactly the Ultralytics trainer's loss divided by the batch size; no
  ``"per_sample"``. With an untrained model the clamp makes this the *sum* over images, which is
  why it is not the default.

Checkpoints written by :func:`save_ultralytics_checkpoint` have the layout Ultralytics writes
(``{"model": half-precision module, "train_args": {...}, ...}``), so ``YOLO(path).predict()`` and
``YOLO(path).val(data=...)`` load them directly.

A ``.pt`` file is un-pickled, which is the Ultralytics format; it is read only through
:func:`rfo_bench.detectors.ultralytics_setup.load_yolo_checkpoint` (``weights_only=True`` and
Ultralytics' allow-list of model classes), so a crafted checkpoint is refused instead of running code.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from vision_unlearn.protocols import Batch, FeatureHook

logger = logging.getLogger(__name__)

FROZEN_PARAMETER_MARK = ".dfl."
"""The DFL projection (a fixed ``arange`` convolution) stays frozen, as in the Ultralytics trainer."""

PARAMETER_GROUPS = ("backbone", "neck", "head")
"""Parameter groups of a detector, from the layer indices of its yaml."""

NECK_FEATURES = "neck_pooled"
"""Name passed to feature hooks registered with ``layer=None``."""


@dataclass(frozen=True)
class YoloLossGains:
    """Weights of the three detection loss components (Ultralytics defaults).

    Attributes:
        box: CIoU box-regression gain.
        cls: BCE classification gain.
        dfl: distribution-focal-loss gain.
    """

    box: float = 7.5
    cls: float = 0.5
    dfl: float = 1.5


@dataclass(frozen=True)
class YoloModelSpec:
    """How to build or load the detector.

    Attributes:
        model: a model yaml name known to Ultralytics (``yolov8n.yaml``, ``yolo11n.yaml``, ...), a
            local model yaml, or a local detection checkpoint ``.pt``.
        num_classes: object categories; ``None`` keeps the checkpoint's (required for a yaml).
        in_chans: image channels for a yaml (1 for radiographs, 3 for RGB); a checkpoint keeps its own.
        class_names: names of the classes in index order; default: the checkpoint's, else ``"0"``, ...
        image_size: network input side in pixels (stored in saved checkpoints as ``imgsz``).
        gains: loss gains.
        reduction: ``"image"`` (mean of per-image losses, with ``"per_sample"``) or ``"batch"``
            (the Ultralytics trainer's batch normalisation, divided by the batch size).
        conf_threshold: minimum score kept by :meth:`YoloAdapter.detect`.
        iou_threshold: NMS IoU threshold.
        max_det: detections kept per image.
        trainable_groups: parameter groups the methods may update (``backbone``, ``neck``,
            ``head``); the others are frozen. Restricting costly methods (OFMU's Hessian-vector
            products) to the neck and head cuts their cost several-fold.
        forget_floor_prob: ``τ`` of the bounded forget objectives (:meth:`YoloAdapter.ascent_loss`,
            the forget side of :meth:`YoloAdapter.distillation_loss`): an anchor stops being pushed
            once its score for the forgotten box's class is below ``τ``. The default lies below the
            0.001 score threshold of evaluation, so a forgotten object leaves the ranked detections.
    """

    model: str
    num_classes: int | None = None
    in_chans: int = 1
    class_names: tuple[str, ...] | None = None
    image_size: int = 640
    gains: YoloLossGains = field(default_factory=YoloLossGains)
    reduction: Literal["image", "batch"] = "image"
    conf_threshold: float = 0.001
    iou_threshold: float = 0.7
    max_det: int = 300
    trainable_groups: tuple[str, ...] = PARAMETER_GROUPS
    forget_floor_prob: float = 1e-4

    def __post_init__(self) -> None:
        if not 0.0 < self.forget_floor_prob < 1.0:
            raise UserInputError("forget_floor_prob must lie in (0, 1)", field="forget_floor_prob",
                                 value=self.forget_floor_prob)
        unknown = [g for g in self.trainable_groups if g not in PARAMETER_GROUPS]
        if unknown or not self.trainable_groups:
            raise UserInputError(f"trainable_groups must be a non-empty subset of {', '.join(PARAMETER_GROUPS)}",
                                 field="trainable_groups", value=list(self.trainable_groups))
        if self.reduction not in ("image", "batch"):
            raise UserInputError("reduction must be 'image' or 'batch'", field="reduction", value=self.reduction)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["class_names"] = list(self.class_names) if self.class_names is not None else None
        data["trainable_groups"] = list(self.trainable_groups)
        return {"family": "yolo", **data}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> YoloModelSpec:
        values = {k: v for k, v in data.items() if k != "family"}
        if values.get("class_names") is not None:
            values["class_names"] = tuple(values["class_names"])
        if values.get("trainable_groups") is not None:
            values["trainable_groups"] = tuple(values["trainable_groups"])
        if isinstance(values.get("gains"), dict):
            values["gains"] = YoloLossGains(**values["gains"])
        return YoloModelSpec(**values)


def _import_ultralytics() -> Any:
    from rfo_bench.detectors.ultralytics_setup import import_ultralytics

    return import_ultralytics()


def _task_of(model_or_yaml: Any) -> str:
    _import_ultralytics()
    from ultralytics.nn.tasks import guess_model_task

    return str(guess_model_task(model_or_yaml))


_MODEL_TASKS = {"SegmentationModel": "segment", "PoseModel": "pose", "OBBModel": "obb",
                "ClassificationModel": "classify", "DetectionModel": "detect"}
"""Task of each Ultralytics model class (checkpoints do not always say it)."""


def _check_detection_model(model: nn.Module, source: str) -> None:
    from ultralytics.nn.modules.head import Detect
    from ultralytics.nn.tasks import DetectionModel

    task = _MODEL_TASKS.get(type(model).__name__) or getattr(model, "task", None) or _task_of(model)
    if task != "detect" or not isinstance(model, DetectionModel) or type(model) is not DetectionModel:
        if task == "detect":  # a DetectionModel subclass with another head (world, RT-DETR, ...)
            task = type(model).__name__
        raise UserInputError(f"this is a {task} checkpoint ({type(model).__name__}); the YOLO adapter needs a "
                             "detection model (task 'detect')", file=source, field="task", value=task)
    head = model.model[-1]
    if type(head) is not Detect or getattr(head, "one2one_cv2", None) is not None or getattr(head, "end2end", False):
        raise UserInputError("only YOLOv8/YOLO11-style Detect heads with NMS are supported (not end-to-end "
                             "YOLOv10/YOLO26 heads)", file=source, field="head", value=type(head).__name__)


def build_detection_model(spec: YoloModelSpec) -> tuple[nn.Module, dict[int, str]]:
    """Build (yaml) or load (``.pt``) the detection model on the CPU in float32.

    Returns:
        ``(model, names)``: the :class:`~ultralytics.nn.tasks.DetectionModel` and its class names.

    Raises:
        UserInputError: missing, damaged or refused file (one naming Python objects outside Ultralytics'
            allow-list), unknown yaml, a segment/pose/classify/OBB model, an end-to-end head, wrong channel
            count or a class count that contradicts the checkpoint.
    """
    _import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel, yaml_model_load

    from rfo_bench.detectors.ultralytics_setup import load_yolo_checkpoint

    source = spec.model
    if spec.in_chans not in (1, 3):
        raise UserInputError("in_chans must be 1 or 3", field="in_chans", value=spec.in_chans)
    suffix = Path(source).suffix.lower()
    if suffix in (".pt", ".pth"):
        model, _ckpt = load_yolo_checkpoint(source)  # restricted un-pickling: refuses code, names the file
        _check_detection_model(model, source)
        nc = int(model.model[-1].nc)
        if spec.num_classes is not None and spec.num_classes != nc:
            raise UserInputError(f"the checkpoint detects {nc} classes but {spec.num_classes} were asked for",
                                 file=source, field="num_classes", value=spec.num_classes)
        names = {int(k): str(v) for k, v in dict(getattr(model, "names", {}) or {}).items()}
        model.float().train()
        return model, names or {i: str(i) for i in range(nc)}
    if suffix not in (".yaml", ".yml"):
        raise UserInputError("expected a model yaml (e.g. yolov8n.yaml) or a checkpoint (.pt)", field="model",
                             value=source)
    if spec.num_classes is None or spec.num_classes < 1:
        raise UserInputError("a model built from yaml needs num_classes >= 1", field="num_classes",
                             value=spec.num_classes)
    try:
        cfg = yaml_model_load(source)
    except (FileNotFoundError, OSError) as err:
        raise UserInputError(f"unknown model yaml ({err})", field="model", value=source) from None
    task = _task_of(cfg)
    if task != "detect":
        raise UserInputError(f"this yaml describes a {task} model; the YOLO adapter needs a detection model",
                             field="model", value=source)
    try:  # restricted mode (import_ultralytics): a layer or activation outside torch.nn / Ultralytics is refused
        model = DetectionModel(cfg, ch=spec.in_chans, nc=spec.num_classes, verbose=False)
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as err:
        first_line = (str(err).splitlines() or [""])[0]
        raise UserInputError(f"cannot build a detection model from this yaml ({type(err).__name__}: {first_line})",
                             field="model", value=source) from None
    _check_detection_model(model, source)
    return model, {i: str(i) for i in range(spec.num_classes)}


def image_class_logits(anchor_logits: Tensor) -> Tensor:
    """Image-level class evidence ``[B, K]`` from per-anchor class logits ``[B, A, K]``.

    A log-sum-exp over anchors minus ``log A``: a smooth maximum that equals the common value when
    every anchor agrees and approaches the strongest anchor when one dominates. It is what the
    classifier-shaped objectives of the methods (``log(1 - p_y)``, KL to a teacher) see.
    """
    return torch.logsumexp(anchor_logits, dim=1) - math.log(max(1, anchor_logits.shape[1]))


def forget_anchor_mask(level_hw: list[tuple[int, int]] | tuple[tuple[int, int], ...], strides: list[float],
                       boxes_xyxy: Tensor, valid: Tensor) -> Tensor:
    """Which anchors answer for each box: ``bool [B, K, A]``.

    An anchor answers for a box when its centre lies strictly inside the box, or when its cell
    contains the box centre (one anchor per pyramid level, so a box smaller than every stride is
    covered too). The first set is the candidate pool of Ultralytics' task-aligned assigner, so
    it holds every anchor the training loss may have made positive for the box.

    Args:
        level_hw: ``(h, w)`` of each pyramid level's grid, in the anchor order of the Detect head
            (levels concatenated, each flattened row-major).
        strides: stride of each level in input pixels.
        boxes_xyxy: ``[B, K, 4]`` boxes in input pixels.
        valid: ``bool [B, K]``; ``False`` rows (padding) answer for no anchor.

    Returns:
        ``bool [B, K, A]`` with ``A = sum(h * w)``.
    """
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)  # [B, K] each
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    masks = []
    for (h, w), stride in zip(level_hw, strides, strict=True):
        xs = (torch.arange(w, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype) + 0.5) * stride
        ys = (torch.arange(h, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype) + 0.5) * stride
        inside_x = (xs > x1.unsqueeze(-1)) & (xs < x2.unsqueeze(-1))  # [B, K, w]
        inside_y = (ys > y1.unsqueeze(-1)) & (ys < y2.unsqueeze(-1))  # [B, K, h]
        inside = inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)  # [B, K, h, w]
        col = torch.floor(cx / stride).long().clamp(0, w - 1)
        row = torch.floor(cy / stride).long().clamp(0, h - 1)
        cell = ((torch.arange(h, device=row.device) == row.unsqueeze(-1)).unsqueeze(-1)
                & (torch.arange(w, device=col.device) == col.unsqueeze(-1)).unsqueeze(-2))
        masks.append((inside | cell).flatten(-2))
    return torch.cat(masks, dim=-1) & valid.unsqueeze(-1)


def _box_class_logits(anchor_logits: Tensor, box_classes: Tensor) -> Tensor:
    """``[B, K, A]``: each anchor's logit for the class of box ``k`` (padding reads class 0)."""
    num_anchors = anchor_logits.shape[1]
    index = box_classes.clamp(min=0).unsqueeze(1).expand(-1, num_anchors, -1)  # [B, A, K]
    return anchor_logits.gather(2, index).transpose(1, 2)


def bounded_class_ascent(anchor_logits: Tensor, region: Tensor, box_classes: Tensor, floor_prob: float) -> Tensor:
    """The bounded forget objective that gradient-ascent methods *raise* on a detector.

    For every pair (box ``k``, anchor ``a`` answering for it) the classification term of the
    detection loss with the box's class ``c_k`` as target, ``−log σ(z_{a,c_k}) = softplus(−z)``,
    clamped at ``−log τ``; the mean over pairs. It lies in ``[0, −log τ]``, its gradient with
    respect to a logit has magnitude ``1 − σ(z) ≤ 1`` and vanishes once ``σ(z) < τ``, so ascent
    cannot diverge. Only the box's own class channel on the anchors of the forget boxes moves: the
    background terms of all other anchors and the other classes, which plain ascent on the
    detection loss would raise (creating false detections everywhere), are left out.

    Args:
        anchor_logits: ``[B, A, C]`` class logits of every anchor.
        region: ``bool [B, K, A]`` (:func:`forget_anchor_mask`).
        box_classes: ``int64 [B, K]`` class of each box (``-1`` = padding, excluded by ``region``).
        floor_prob: ``τ`` in ``(0, 1)``.

    Returns:
        A scalar; exactly 0 (still in the graph) when no anchor answers for any box.
    """
    values = F.softplus(-_box_class_logits(anchor_logits, box_classes)).clamp(max=-math.log(floor_prob))
    count = region.sum()
    if int(count) == 0:
        return anchor_logits.sum() * 0.0
    return (values * region).sum() / count


def binary_kl(teacher_prob: Tensor, student_logits: Tensor) -> Tensor:
    """Element-wise ``KL(Bernoulli(t) ‖ Bernoulli(σ(s)))`` for independent (sigmoid) class scores.

    Args:
        teacher_prob: ``t`` in ``[0, 1]`` (0 and 1 allowed).
        student_logits: ``s``, same shape (already divided by any temperature).
    """
    return (torch.xlogy(teacher_prob, teacher_prob) - teacher_prob * F.logsigmoid(student_logits)
            + torch.xlogy(1 - teacher_prob, 1 - teacher_prob) - (1 - teacher_prob) * F.logsigmoid(-student_logits))


def box_distribution_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """``[B, A]`` KL(teacher ‖ student) of the DFL box distributions, summed over the four sides.

    Args:
        student, teacher: ``[B, A, 4 * R]`` DFL logits (``R`` bins per side).
        temperature: softmax temperature.
    """
    b, a, c = student.shape
    log_s = F.log_softmax(student.reshape(b, a, 4, c // 4) / temperature, dim=-1)
    log_t = F.log_softmax(teacher.reshape(b, a, 4, c // 4) / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=(-1, -2))


def detection_distillation(student_logits: Tensor, student_boxes: Tensor, teacher_logits: Tensor,
                           teacher_boxes: Tensor, temperature: float,
                           suppressed_classes: tuple[int, ...] | list[int] = ()) -> Tensor:
    """Per-anchor distillation of a detector's outputs onto a teacher's (scalar).

    ``mean_{b,a} Σ_c KL(σ(t_{a,c}/T) ‖ σ(s_{a,c}/T))`` over every anchor and class, plus the DFL box
    distributions' KL weighted by the teacher's object score ``w_a = max_c σ(t_{a,c})`` (box
    distributions of background anchors mean nothing): ``Σ w_a KL_box(a) / Σ w_a``. The teacher's
    scores of ``suppressed_classes`` are replaced by 0 (background) first.

    Args:
        student_logits, teacher_logits: ``[B, A, C]`` class logits.
        student_boxes, teacher_boxes: ``[B, A, 4 * R]`` DFL logits.
        temperature: ``T`` of both KL terms.
        suppressed_classes: classes the teacher is made not to see.
    """
    teacher_prob = torch.sigmoid(teacher_logits / temperature)
    object_score = torch.sigmoid(teacher_logits)
    if suppressed_classes:
        keep = torch.ones(teacher_logits.shape[-1], dtype=teacher_prob.dtype, device=teacher_prob.device)
        keep[list(suppressed_classes)] = 0.0
        teacher_prob = teacher_prob * keep
        object_score = object_score * keep
    class_kl = binary_kl(teacher_prob, student_logits / temperature).sum(dim=-1).mean()
    weight = object_score.max(dim=-1).values
    box_kl = (weight * box_distribution_kl(student_boxes, teacher_boxes, temperature)).sum() / weight.sum().clamp(
        min=1e-6)
    return class_kl + box_kl


def forget_distillation(student_logits: Tensor, teacher_logits: Tensor, region: Tensor, box_classes: Tensor,
                        temperature: float, floor_prob: float) -> Tensor:
    """The bounded, one-sided divergence SCRUB's max-steps raise on the forget boxes (scalar).

    For every pair (box ``k``, anchor ``a`` answering for it, see :func:`forget_anchor_mask`) the
    binary KL between teacher and student scores of the box's class ``c_k`` at temperature ``T``,
    counted only while the student's score is at most the teacher's (so raising it can only lower
    the score: raising it the other way would create detections) and above ``floor_prob`` (so it is
    bounded); the mean over pairs. Other classes and the box distributions are not pushed away.

    Args:
        student_logits, teacher_logits: ``[B, A, C]``.
        region: ``bool [B, K, A]``.
        box_classes: ``int64 [B, K]``.
        temperature: ``T``.
        floor_prob: ``τ``.
    """
    student = _box_class_logits(student_logits, box_classes)
    teacher = _box_class_logits(teacher_logits, box_classes)
    active = region & (student.detach() <= teacher) & (torch.sigmoid(student.detach()) > floor_prob)
    count = region.sum()
    if int(count) == 0:
        return student_logits.sum() * 0.0
    kl = binary_kl(torch.sigmoid(teacher / temperature), student / temperature)
    return (kl * active).sum() / count


class YoloNet(nn.Module):
    """The detector plus an image-level view of its outputs.

    ``net(images)`` returns :func:`image_class_logits` ``[B, K]`` in any mode, so code written for
    classifiers (a frozen teacher copy, activation statistics) runs unchanged; ``net(images,
    raw=True)`` returns the Detect head's raw outputs (``boxes``, ``scores``, ``feats``) that the
    detection loss needs. ``feature_info`` names the three neck outputs fed to the head (P3, P4,
    P5), as timm models do for their stages.

    Args:
        detector: an :class:`ultralytics.nn.tasks.DetectionModel`.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        head = detector.model[-1]
        strides = [int(s) for s in getattr(head, "stride", torch.tensor([8, 16, 32])).tolist()]
        self.feature_info = [{"module": f"detector.model.{i}", "reduction": r}
                             for i, r in zip(head.f, strides, strict=False)]

    def forward(self, images: Tensor, raw: bool = False) -> Any:
        preds = self.detector(images)
        if isinstance(preds, tuple):  # eval mode: (decoded, raw)
            preds = preds[1]
        return preds if raw else image_class_logits(preds["scores"].permute(0, 2, 1))


class YoloAdapter:
    """An Ultralytics detector behind :class:`~vision_unlearn.protocols.ModelAdapter`.

    Args:
        spec: how to build or load the model.

    Attributes:
        model: a :class:`YoloNet` around the detector (the loop moves it and saves its state).
        detector: the :class:`~ultralytics.nn.tasks.DetectionModel` itself (``model.detector``).
        module: the module called in forward passes: ``model`` or the loop's DDP wrapper of it.
        num_classes: object categories.
        class_names: names in class-index order.
        in_chans: input channels.
    """

    def __init__(self, spec: YoloModelSpec) -> None:
        self.spec = spec
        detector, names = build_detection_model(spec)
        self.num_classes = int(detector.model[-1].nc)
        if spec.class_names is not None:
            if len(spec.class_names) != self.num_classes:
                raise UserInputError(f"{len(spec.class_names)} class names for a model with {self.num_classes} "
                                     "classes", field="class_names", value=list(spec.class_names))
            names = dict(enumerate(spec.class_names))
        self.class_names: tuple[str, ...] = tuple(names.get(i, str(i)) for i in range(self.num_classes))
        detector.names = dict(enumerate(self.class_names))
        self.in_chans = int(detector.yaml.get("channels", spec.in_chans))
        self.model: nn.Module = YoloNet(detector)
        self.module: nn.Module = self.model
        self._configure()

    @property
    def detector(self) -> nn.Module:
        return self.model.detector

    def _configure(self) -> None:
        """Attach explicit loss hyper-parameters and unfreeze every parameter but the DFL projection."""
        from ultralytics.cfg import get_cfg

        gains = self.spec.gains
        self.detector.args = get_cfg(overrides={"box": gains.box, "cls": gains.cls, "dfl": gains.dfl,
                                                "imgsz": self.spec.image_size})
        self.detector.criterion = None
        for name, param in self.model.named_parameters():
            param.requires_grad_(FROZEN_PARAMETER_MARK not in f".{name}"
                                 and self.group_of(name) in self.spec.trainable_groups)

    def set_trainable_groups(self, groups: tuple[str, ...]) -> None:
        """Restrict the parameters the methods update to ``groups`` (``backbone``, ``neck``, ``head``)."""
        self.spec = replace(self.spec, trainable_groups=tuple(groups))
        for name, param in self.model.named_parameters():
            param.requires_grad_(FROZEN_PARAMETER_MARK not in f".{name}" and self.group_of(name) in groups)

    def group_of(self, name: str) -> str:
        """``backbone``, ``neck`` or ``head`` for a parameter name ``detector.model.<layer>.<...>``."""
        layer = int(name.split(".")[2])
        if layer < len(self.detector.yaml["backbone"]):
            return "backbone"
        return "head" if layer == len(self.detector.model) - 1 else "neck"

    def _criterion(self) -> Any:
        device = next(self.model.parameters()).device
        criterion = getattr(self.detector, "criterion", None)
        if criterion is None or criterion.device != device:
            self.detector.criterion = self.detector.init_criterion()
        return self.detector.criterion

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Detection loss of one batch (keys of :meth:`~vision_unlearn.adapters.yolo_data.DetectionData.stream`).

        Args:
            batch: ``"images"`` ``[B, C, H, W]``; ``"boxes_xyxy"`` ``[B, K, 4]`` input pixels;
                ``"box_labels"`` ``[B, K]`` (``-1`` = padding); ``"labels"`` and ``"image_labels"``
                ``[B]`` (their difference shifts the box classes, see the data module). An image
                without boxes teaches "background everywhere".

        Returns:
            ``"loss"``: scalar ``box + cls + dfl`` (gains applied), reduced as ``spec.reduction`` says;
            ``"box"``, ``"cls"``, ``"dfl"``: the components (scalars, in the graph);
            ``"per_sample"``: ``[B]`` loss of each image assessed alone (``reduction="image"`` only);
            ``"logits"``: ``[B, K]`` image-level class evidence (:func:`image_class_logits`);
            ``"anchor_logits"``: ``[B, A, K]`` per-anchor class logits (sigmoid scores, not softmax);
            ``"box_distribution"``: ``[B, A, 4 * reg_max]`` per-anchor DFL box logits.
        """
        images = batch["images"]
        preds = self.module(images, raw=True)
        targets = self.targets(batch, images.shape)
        criterion = self._criterion()
        batch_size = images.shape[0]
        anchor_logits = preds["scores"].permute(0, 2, 1)
        out: dict[str, Tensor] = {"logits": image_class_logits(anchor_logits), "anchor_logits": anchor_logits,
                                  "box_distribution": preds["boxes"].permute(0, 2, 1)}
        if self.spec.reduction == "image":
            components = self._per_image_components(criterion, preds, targets, batch_size)  # [B, 3]
            out["per_sample"] = components.sum(dim=1)
            components = components.mean(dim=0)
        else:
            scaled, _ = criterion.loss(preds, targets)  # gain * component * batch_size
            components = scaled / batch_size
        out.update(loss=components.sum(), box=components[0], cls=components[1], dfl=components[2])
        return out

    def box_classes(self, batch: Batch) -> Tensor:
        """``int64 [B, K]`` class trained for each box of a padded batch (``-1`` = padding).

        The box labels shifted by the image's relabelling offset ``labels - image_labels`` (see
        :mod:`vision_unlearn.adapters.yolo_data`), modulo the number of classes.
        """
        missing = [k for k in ("boxes_xyxy", "box_labels", "labels", "image_labels") if k not in batch]
        if missing:
            raise ValueError(f"a YOLO batch needs the keys of DetectionData.stream(); missing {', '.join(missing)} "
                             f"(got {', '.join(sorted(batch))})")
        box_labels = batch["box_labels"]
        boxes = batch["boxes_xyxy"]
        if box_labels.ndim != 2 or boxes.shape != (*box_labels.shape, 4):
            raise ValueError(f"expected box_labels [B, K] and boxes_xyxy [B, K, 4], got {tuple(box_labels.shape)} "
                             f"and {tuple(boxes.shape)}")
        valid = box_labels >= 0
        if bool((box_labels[valid] >= self.num_classes).any()):
            raise ValueError(f"box labels must lie in [0, {self.num_classes - 1}], got {int(box_labels.max())}")
        shift = (batch["labels"].reshape(-1) - batch["image_labels"].reshape(-1)).remainder(self.num_classes)
        classes = (box_labels + shift.unsqueeze(1)).remainder(self.num_classes)
        return torch.where(valid, classes, torch.full_like(classes, -1))

    def targets(self, batch: Batch, image_shape: torch.Size | tuple[int, ...]) -> dict[str, Tensor]:
        """Ultralytics target dict of a padded batch: ``batch_idx [N]``, ``cls [N, 1]``, ``bboxes [N, 4]``
        (normalised centre x, centre y, width, height)."""
        height, width = int(image_shape[-2]), int(image_shape[-1])
        box_classes = self.box_classes(batch)
        valid = box_classes >= 0
        classes = box_classes[valid]
        owner = torch.nonzero(valid, as_tuple=True)[0]
        flat = batch["boxes_xyxy"][valid].to(torch.float32)
        scale = flat.new_tensor([width, height, width, height])
        xywh = torch.stack([(flat[:, 0] + flat[:, 2]) / 2, (flat[:, 1] + flat[:, 3]) / 2,
                            flat[:, 2] - flat[:, 0], flat[:, 3] - flat[:, 1]], dim=1) / scale
        return {"batch_idx": owner.to(torch.float32), "cls": classes.reshape(-1, 1).to(torch.float32),
                "bboxes": xywh}

    # --- detector-specific forget objectives (read by grad_ascent, neggrad_plus and scrub) ----------
    def forget_region(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """``(region bool [B, K, A], box_classes int64 [B, K])``: the anchors answering for each box
        of the batch (:func:`forget_anchor_mask`) and the boxes' classes."""
        images = batch["images"]
        height, width = int(images.shape[-2]), int(images.shape[-1])
        strides = [float(s) for s in self.detector.model[-1].stride.tolist()]
        level_hw = [(math.ceil(height / s), math.ceil(width / s)) for s in strides]
        classes = self.box_classes(batch)
        region = forget_anchor_mask(level_hw, strides, batch["boxes_xyxy"].to(images.device).float(),
                                    classes.to(images.device) >= 0)
        return region, classes.to(images.device)

    def ascent_loss(self, batch: Batch) -> dict[str, Tensor]:
        """The bounded objective gradient-ascent methods raise on a forget batch.

        :func:`bounded_class_ascent`: the classification term of each forget box's class on the
        anchors answering for the box, clamped at ``−log(spec.forget_floor_prob)``. Boxes and DFL
        terms and every other anchor are left alone.

        Returns:
            ``"loss"``: the scalar objective (to be *maximised*); ``"anchors"``: the number of
            (box, anchor) pairs it averages over.
        """
        preds = self.module(batch["images"], raw=True)
        region, classes = self.forget_region(batch)
        anchor_logits = preds["scores"].permute(0, 2, 1)
        value = bounded_class_ascent(anchor_logits, region, classes, self.spec.forget_floor_prob)
        return {"loss": value, "anchors": region.sum()}

    def distillation_loss(self, batch: Batch, student: dict[str, Tensor], teacher: nn.Module, temperature: float,
                          side: Literal["forget", "retain"],
                          suppressed_classes: tuple[int, ...] | list[int] = ()) -> Tensor:
        """Teacher-student divergence of per-anchor detection outputs (SCRUB).

        Args:
            batch: the batch ``student`` was computed on.
            student: :meth:`loss` output of the student (``anchor_logits``, ``box_distribution``).
            teacher: a frozen copy of :attr:`model`.
            temperature: ``T``.
            side: ``"retain"``: :func:`detection_distillation` over every anchor (class scores and
                box distributions); ``"forget"``: :func:`forget_distillation`, the bounded one-sided
                class divergence on the anchors of the batch's boxes.
            suppressed_classes: retain side only: classes the teacher is made not to see (classes
                forgotten entirely, which the retain images still show as background).
        """
        with torch.no_grad():
            preds = teacher(batch["images"], raw=True)
        teacher_logits = preds["scores"].permute(0, 2, 1)
        if side == "forget":
            region, classes = self.forget_region(batch)
            return forget_distillation(student["anchor_logits"], teacher_logits, region, classes, temperature,
                                       self.spec.forget_floor_prob)
        return detection_distillation(student["anchor_logits"], student["box_distribution"], teacher_logits,
                                      preds["boxes"].permute(0, 2, 1), temperature, suppressed_classes)

    def forget_only_classes(self, forget: Batch, retain: Batch) -> tuple[int, ...]:
        """Classes with boxes in the ``forget`` stream and none in the ``retain`` stream."""
        present_forget = set(int(c) for c in forget["box_labels"][forget["box_labels"] >= 0].unique().tolist())
        present_retain = set(int(c) for c in retain["box_labels"][retain["box_labels"] >= 0].unique().tolist())
        return tuple(sorted(present_forget - present_retain))

    @staticmethod
    def _per_image_components(criterion: Any, preds: dict[str, Any], targets: dict[str, Tensor],
                              batch_size: int) -> Tensor:
        """``[B, 3]`` gain-weighted box, cls and dfl losses of each image assessed alone."""
        rows = []
        owner = targets["batch_idx"].long()
        for i in range(batch_size):
            keep = owner == i
            one_preds = {"boxes": preds["boxes"][i:i + 1], "scores": preds["scores"][i:i + 1],
                         "feats": [f[i:i + 1] for f in preds["feats"]]}
            one_targets = {"batch_idx": torch.zeros_like(targets["batch_idx"][keep]), "cls": targets["cls"][keep],
                           "bboxes": targets["bboxes"][keep]}
            scaled, _ = criterion.loss(one_preds, one_targets)  # batch size 1: no rescaling
            rows.append(scaled)
        return torch.stack(rows)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 32) -> Tensor:
        """Detections after NMS for ``[B, C, H, W]`` input images, padded into one tensor.

        Returns:
            ``Tensor[B, D, 6]`` rows ``x1, y1, x2, y2, score, class`` in input pixels, ``D`` the
            largest count of any image; padding rows are ``0, 0, 0, 0, 0, -1``.
        """
        detections = self.detect(images, batch_size=batch_size)
        width = max((d.shape[0] for d in detections), default=0)
        out = torch.zeros(len(detections), width, 6)
        out[..., 5] = -1
        for i, d in enumerate(detections):
            out[i, :d.shape[0]] = d
        return out

    @torch.no_grad()
    def detect(self, images: Tensor, ratio_pad: Tensor | None = None, original_hw: Tensor | None = None,
               batch_size: int = 32, conf_threshold: float | None = None) -> list[Tensor]:
        """Detections after NMS, one ``Tensor[n_i, 6]`` (``x1, y1, x2, y2, score, class``) per image.

        Args:
            images: ``[B, C, H, W]`` letterboxed inputs in ``[0, 1]``.
            ratio_pad: ``[B, 3]`` letterbox gain, pad_x, pad_y; with ``original_hw`` ``[B, 2]`` the
                boxes are mapped back to original-image pixels. ``None``: input pixels, clipped to
                the input.
            batch_size: images per forward pass.
            conf_threshold: minimum score; default ``spec.conf_threshold``.
        """
        from ultralytics.utils.nms import non_max_suppression

        from vision_unlearn.adapters.yolo_data import boxes_to_original

        detector = self.detector
        was_training = detector.training
        detector.eval()
        device = next(detector.parameters()).device
        conf = self.spec.conf_threshold if conf_threshold is None else conf_threshold
        height, width = int(images.shape[-2]), int(images.shape[-1])
        results: list[Tensor] = []
        try:
            for start in range(0, images.shape[0], batch_size):
                decoded = detector(images[start:start + batch_size].to(device))
                decoded = decoded[0] if isinstance(decoded, tuple) else decoded
                kept = non_max_suppression(decoded.float(), conf_thres=conf, iou_thres=self.spec.iou_threshold,
                                           max_det=self.spec.max_det, nc=self.num_classes)
                results.extend(k.detach().cpu().float() for k in kept)
        finally:
            detector.train(was_training)
        for i, det in enumerate(results):
            if ratio_pad is not None:
                if original_hw is None:
                    raise ValueError("original_hw is needed with ratio_pad")
                det[:, :4] = boxes_to_original(det[:, :4], ratio_pad[i], original_hw[i])
            else:
                det[:, [0, 2]] = det[:, [0, 2]].clamp(0, width)
                det[:, [1, 3]] = det[:, [1, 3]].clamp(0, height)
        return results

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameter_groups(self) -> dict[str, list[str]]:
        """``backbone`` (the yaml's backbone layers), ``neck`` (head layers before Detect), ``head`` (Detect);
        only trainable parameters are listed."""
        groups: dict[str, list[str]] = {g: [] for g in PARAMETER_GROUPS}
        for name, _param in self.trainable_parameters():
            groups[self.group_of(name)].append(name)
        return groups

    def add_feature_hook(self, hook: FeatureHook, layer: str | None = None) -> torch.utils.hooks.RemovableHandle:
        """Observe features on every forward pass.

        ``layer=None`` calls ``hook("neck_pooled", Tensor[B, C3 + C4 + C5])``: the neck outputs fed
        to the Detect head, globally average-pooled per level and concatenated. A module name
        (``"detector.model.15"``) calls ``hook(name, output)`` with that module's raw output.
        """
        if layer is None:
            head = self.detector.model[-1]

            def pre_hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
                hook(NECK_FEATURES, torch.cat([f.mean(dim=(2, 3)) for f in inputs[0]], dim=1))

            return head.register_forward_pre_hook(pre_hook)
        modules = dict(self.model.named_modules())
        if layer not in modules:
            raise UserInputError("unknown layer name (a name of model.named_modules(), e.g. 'detector.model.15')",
                                 field="layer", value=layer)

        def forward_hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            hook(layer, output)

        return modules[layer].register_forward_hook(forward_hook)

    def reset_parameters(self, seed: int) -> None:
        """Re-initialise every weight as a fresh build of the same architecture, seeded."""
        from ultralytics.nn.tasks import DetectionModel

        device = next(self.model.parameters()).device
        cfg = copy.deepcopy(self.detector.yaml)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = DetectionModel(cfg, ch=self.in_chans, nc=self.num_classes, verbose=False)
        self.detector.load_state_dict(fresh.state_dict())
        self.model.to(device)
        self.detector.criterion = None

    def describe(self) -> dict[str, Any]:
        data = self.spec.to_dict()
        data.update(num_classes=self.num_classes, in_chans=self.in_chans, class_names=list(self.class_names))
        return data

    # --- checkpoints --------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str], record: dict[str, Any] | None = None,
             data_yaml: str | None = None) -> Path:
        """Write an Ultralytics checkpoint (see :func:`save_ultralytics_checkpoint`)."""
        return save_ultralytics_checkpoint(self, path, record=record, data_yaml=data_yaml)


def save_ultralytics_checkpoint(adapter: YoloAdapter, path: str | os.PathLike[str],
                                record: dict[str, Any] | None = None, data_yaml: str | None = None) -> Path:
    """Save the adapter's model as an Ultralytics detection checkpoint.

    The layout follows what the Ultralytics 8.4 trainer writes at the end of training: the model
    as a half-precision module under ``"model"``, its training arguments under ``"train_args"``
    (task, image size, loss gains, data yaml), plus the version and date. The unlearning audit
    record travels under ``"vision_unlearn"``; Ultralytics ignores unknown keys.

    Args:
        adapter: the adapter whose model is saved (left untouched).
        path: destination ``.pt`` file (written atomically).
        record: JSON-serialisable audit record of the run.
        data_yaml: the dataset yaml to remember as ``train_args["data"]`` (so ``val()`` finds it).
    """
    from toolkit_core.utils import atomic_write_bytes

    ultralytics = _import_ultralytics()
    model = copy.deepcopy(adapter.detector).cpu().float()
    model.criterion = None
    for module in model.modules():  # hooks would pickle closures
        module._forward_hooks.clear()
        module._forward_pre_hooks.clear()
    model = model.half().eval()
    for param in model.parameters():
        param.requires_grad_(False)
    gains = adapter.spec.gains
    train_args = {"task": "detect", "mode": "train", "model": adapter.spec.model, "imgsz": adapter.spec.image_size,
                  "box": gains.box, "cls": gains.cls, "dfl": gains.dfl, "single_cls": False}
    if data_yaml is not None:
        train_args["data"] = str(data_yaml)
    model.args = dict(train_args)
    model.task = "detect"
    ckpt = {
        "date": datetime.now(timezone.utc).isoformat(),
        "version": ultralytics.__version__,
        "license": "AGPL-3.0 License (https://ultralytics.com/license)",
        "epoch": -1,
        "best_fitness": None,
        "model": model,
        "ema": None,
        "updates": None,
        "optimizer": None,
        "train_args": train_args,
        "train_metrics": {},
        "vision_unlearn": record or {},
    }
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    return Path(path)


def adapter_from_model_text(text: str, num_classes: int | None = None, in_chans: int = 1,
                            class_names: tuple[str, ...] | None = None, image_size: int = 640,
                            gains: YoloLossGains | None = None) -> YoloAdapter:
    """Build an adapter from the CLI form ``yolo:PATH_OR_YAML`` (the prefix is optional)."""
    source = text[len("yolo:"):] if text.startswith("yolo:") else text
    if not source:
        raise UserInputError("expected yolo:PATH_OR_YAML", field="--model", value=text)
    spec = YoloModelSpec(model=source, num_classes=num_classes, in_chans=in_chans, class_names=class_names,
                         image_size=image_size, gains=gains or YoloLossGains())
    return YoloAdapter(spec)

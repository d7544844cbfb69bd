"""Adapter for Ultralytics YOLO detectors (YOLOv8 and YOLO11 families).

The model is built or loaded by :mod:`vision_unlearn.adapters.yolo_model` (spec, gains, checks; nothing
is downloaded, a ``.pt`` is read with Ultralytics' restricted un-pickling); the pure losses of its raw
outputs live in :mod:`vision_unlearn.adapters.yolo_losses`; this module wraps both behind
:class:`~vision_unlearn.protocols.ModelAdapter`, with the optional capabilities
:class:`~vision_unlearn.protocols.AscentLossAdapter`, :class:`~vision_unlearn.protocols.DistillationAdapter`
and :class:`~vision_unlearn.protocols.ForgetOnlyClassesAdapter`.

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
"""

from __future__ import annotations

import copy
import io
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.yolo_losses import (
    binary_kl,
    bounded_class_ascent,
    box_class_logits,
    box_distribution_kl,
    detection_distillation,
    forget_anchor_mask,
    forget_distillation,
    image_class_logits,
)
from vision_unlearn.adapters.yolo_model import (
    PARAMETER_GROUPS,
    YoloLossGains,
    YoloModelSpec,
    build_detection_model,
)
from vision_unlearn.protocols import Batch, FeatureHook

__all__ = [
    "FROZEN_PARAMETER_MARK",
    "NECK_FEATURES",
    "PARAMETER_GROUPS",
    "YoloAdapter",
    "YoloLossGains",
    "YoloModelSpec",
    "YoloNet",
    "adapter_from_model_text",
    "binary_kl",
    "bounded_class_ascent",
    "box_class_logits",
    "box_distribution_kl",
    "build_detection_model",
    "detection_distillation",
    "forget_anchor_mask",
    "forget_distillation",
    "image_class_logits",
    "save_ultralytics_checkpoint",
]
"""The adapter, and (re-exported) the model spec and the pure losses it is built from."""

logger = logging.getLogger(__name__)

FROZEN_PARAMETER_MARK = ".dfl."
"""The DFL projection (a fixed ``arange`` convolution) stays frozen, as in the Ultralytics trainer."""

NECK_FEATURES = "neck_pooled"
"""Name passed to feature hooks registered with ``layer=None``."""


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

    def reset_class_head(self, class_names: Sequence[str], seed: int) -> None:
        """Re-initialise the classification outputs of ``class_names`` as a fresh build's (seeded), prior bias included.

        A detector trained with a class left unseen learned that class as background: its logits sit far
        below the others, and class-wise NMS keeps one class per anchor, so fine-tuning on a few examples
        does not bring the class back within a short budget. Starting those outputs from the prior a fresh
        head has (every other weight kept) lets the class be learned like a new one. Apply it to every
        model that must start from the same weights (an original and its retrained reference).

        Raises:
            ValueError: a name that is not one of the adapter's classes.
        """
        from ultralytics.nn.tasks import DetectionModel

        unknown = [name for name in class_names if name not in self.class_names]
        if unknown:
            raise ValueError(f"not a class of this detector: {', '.join(unknown)}")
        rows = [self.class_names.index(name) for name in class_names]
        if not rows:
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            fresh = DetectionModel(copy.deepcopy(self.detector.yaml), ch=self.in_chans, nc=self.num_classes,
                                   verbose=False)
        head, fresh_head = self.detector.model[-1], fresh.model[-1]
        with torch.no_grad():
            for ours, theirs in zip(head.cv3, fresh_head.cv3, strict=True):
                ours[-1].weight[rows] = theirs[-1].weight[rows].to(ours[-1].weight.device)
                ours[-1].bias[rows] = theirs[-1].bias[rows].to(ours[-1].bias.device)

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
    from rfo_bench.detectors.ultralytics_setup import import_ultralytics
    from toolkit_core.utils import atomic_write_bytes

    ultralytics = import_ultralytics()
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

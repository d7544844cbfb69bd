"""How a YOLO detector is built or loaded: the model spec, the loss gains, and the checks that the
model is a detection model with an NMS Detect head.

The model is an :class:`ultralytics.nn.tasks.DetectionModel`, built from a model yaml
(``yolov8n.yaml``, ``yolo11s.yaml`` or a local file; ``nc`` and 1 or 3 input channels set here) or
read from a local detection checkpoint (``.pt``). Nothing is downloaded.

A ``.pt`` file is un-pickled, which is the Ultralytics format; it is read only through
:func:`rfo_bench.detectors.ultralytics_setup.load_yolo_checkpoint` (``weights_only=True`` and
Ultralytics' allow-list of model classes), so a crafted checkpoint is refused instead of running code.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from torch import nn

from toolkit_core.errors import UserInputError

PARAMETER_GROUPS = ("backbone", "neck", "head")
"""Parameter groups of a detector, from the layer indices of its yaml."""


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

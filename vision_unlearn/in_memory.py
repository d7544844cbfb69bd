"""The one-call Python form: ``vision_unlearn.unlearn(model, forget=..., retain=...)`` on a model in memory.

It takes what a user already holds, wraps it in the family's adapter and runs the method through the
same :func:`vision_unlearn.run.run_method` as every other road:

* a timm classifier (any ``nn.Module`` with ``num_classes``), wrapped by
  :meth:`~vision_unlearn.adapters.timm.TimmAdapter.from_module`; data as ``(images, labels)`` tensors
  (``Tensor[N, C, H, W]`` float, ``Tensor[N]`` int64), a mapping with ``images``/``labels`` or a
  dataset of ``(image, label)`` items;
* an Ultralytics detector: a loaded ``ultralytics.YOLO`` model or a local checkpoint path; data as
  :class:`~vision_unlearn.adapters.yolo_data.DetectionData` (e.g. from
  :func:`vision_unlearn.detection_data.load_detection_data`) or its ``stream()``.

Given an :class:`~vision_unlearn.request.UnlearnRequest` instead, :func:`unlearn` runs it on the
files it names (:func:`vision_unlearn.road.run_request`).

The input model: with ``copy=True`` (the default) it is left as it was and a new, unlearned model
is returned; with ``copy=False`` it is unlearned in place and returned itself. A test-time method
(``steer``) changes no weight: its hooks are on the returned timm module or adapter
(:class:`~vision_unlearn.protocols.TestTimeMethod`); for a detector given as a ``YOLO`` model or a
path, pass its adapter instead to keep them.
"""

from __future__ import annotations

import copy as copying
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from vision_unlearn.protocols import MethodConfig, ModelAdapter
from vision_unlearn.request import UnlearnRequest, UnlearnResult
from vision_unlearn.road import run_request


@dataclass(frozen=True)
class UnlearnRecord:
    """What an in-memory run did (:meth:`to_dict` for JSON).

    Attributes:
        method: the method's registry name.
        config: the method's full config.
        seed: the run's seed.
        n_forget, n_retain: samples in the two streams.
        steps: optimizer steps taken.
        seconds: wall-clock seconds of the run.
        cpu_seconds: CPU seconds of this process over the run.
        history: per-epoch means of the logged values.
        forget_loss_ceiling: ``{"start", "end"}`` when the method followed a held-out ceiling.
    """

    method: str
    config: dict[str, Any]
    seed: int
    n_forget: int
    n_retain: int
    steps: int
    seconds: float
    cpu_seconds: float
    history: tuple[dict[str, float], ...] = ()
    forget_loss_ceiling: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        from toolkit_core.records import jsonable

        return jsonable(self)


def unlearn(model: Any, *, forget: Any = None, retain: Any = None, method: str = "ofmu",
            config: MethodConfig | Mapping[str, Any] | None = None, seed: int = 0, device: str = "cpu",
            heldout: Any = None, copy: bool = True, progress: bool = False, num_classes: int | None = None,
            image_size: int | None = None) -> tuple[Any, UnlearnRecord] | UnlearnResult:
    """Unlearn ``forget`` from ``model`` with ``method``; return the unlearned model and a record.

    Example:
        >>> model = timm.create_model("resnet10t", num_classes=10, in_chans=1)  # doctest: +SKIP
        >>> unlearned, record = vision_unlearn.unlearn(model, forget=(x_f, y_f), retain=(x_r, y_r),
        ...                                            method="finetune", config={"epochs": 2})  # doctest: +SKIP

    Args:
        model: a timm ``nn.Module``, an ``ultralytics.YOLO`` model, a YOLO checkpoint path, a model
            adapter (:class:`~vision_unlearn.protocols.ModelAdapter`, handed back itself), or an
            :class:`~vision_unlearn.request.UnlearnRequest` (then no other argument is given).
        forget: the data to forget (see the module docstring for the accepted forms).
        retain: the data to keep (``None`` for methods that need none).
        method: registered method name (:func:`vision_unlearn.api.list_unlearners`).
        config: the method's config (an instance or a mapping of its fields; ``None``: defaults).
        seed: seed of data order and method randomness.
        device: torch device the run uses (the returned model stays there).
        heldout: samples the model never saw, for methods that follow a held-out loss ceiling.
        copy: leave ``model`` untouched and return a new one (``False``: unlearn it in place).
        progress: show a progress bar.
        num_classes: classes of a timm module without a ``num_classes`` attribute.
        image_size: network input side of a detector (default: the checkpoint's training size).

    Returns:
        ``(unlearned_model, record)``: the same kind of model as given (a path gives the Ultralytics
        ``DetectionModel``), and an :class:`UnlearnRecord`. For a request: its
        :class:`~vision_unlearn.request.UnlearnResult`.

    Raises:
        UserInputError: a model or data of an unknown form, an unknown method, bad config fields, a
            stream the method needs that is missing.
    """
    from vision_unlearn.api import config_to_dict
    from vision_unlearn.loop import LoopSettings, stream_length
    from vision_unlearn.run import run_method

    if isinstance(model, UnlearnRequest):
        if forget is not None or retain is not None or heldout is not None:
            raise UserInputError("a request names its own data; give forget/retain only with a model in memory",
                                 field="forget")
        return run_request(model)
    adapter, unwrap = _adapter_for(model, copy=copy, num_classes=num_classes, image_size=image_size)
    forget_stream, retain_stream = as_stream(forget, "forget"), as_stream(retain, "retain")
    torch.manual_seed(seed)
    run = run_method(method, adapter, forget_stream, retain_stream, config=config,
                     settings=LoopSettings(seed=seed, device=device, progress=progress),
                     heldout=as_stream(heldout, "heldout"))
    record = UnlearnRecord(method=method, config=config_to_dict(run.method.config), seed=seed,
                           n_forget=stream_length(forget_stream), n_retain=stream_length(retain_stream),
                           steps=run.result.steps_done, seconds=run.seconds, cpu_seconds=run.cpu_seconds,
                           history=tuple(run.result.history), forget_loss_ceiling=dict(run.ceiling))
    return unwrap(adapter), record


def as_stream(data: Any, name: str) -> dict[str, Tensor] | None:
    """A whole stream (``images``, ``labels``, ``index``, ... tensors) from the accepted data forms.

    Raises:
        UserInputError: a form that is none of ``None``, ``(images, labels)``, a mapping of tensors,
            an object with ``stream()`` (detection data) or a dataset of ``(image, label)`` items.
    """
    from vision_unlearn.loop import make_stream

    if data is None:
        return None
    if callable(getattr(data, "stream", None)):
        return dict(data.stream())
    if isinstance(data, Mapping):
        if "images" not in data or "labels" not in data:
            raise UserInputError("a data mapping needs 'images' and 'labels'", field=name, value=sorted(data))
        stream = {k: torch.as_tensor(v) for k, v in data.items()}
        stream.setdefault("index", torch.arange(int(stream["labels"].shape[0])))
        return stream
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(x, Tensor) for x in data):
        return make_stream(data[0], data[1].long())
    if isinstance(data, torch.utils.data.Dataset):
        items = [data[i] for i in range(len(data))]  # type: ignore[arg-type]
        if not items:
            raise UserInputError("the dataset is empty", field=name)
        images = torch.stack([torch.as_tensor(item[0]) for item in items])
        labels = torch.as_tensor([int(item[1]) for item in items], dtype=torch.long)
        return make_stream(images, labels)
    raise UserInputError("expected (images, labels) tensors, a mapping with images/labels, detection data or "
                         "a dataset of (image, label) items", field=name, value=type(data).__name__)


def _adapter_for(model: Any, *, copy: bool, num_classes: int | None, image_size: int | None
                 ) -> tuple[ModelAdapter, Callable[[Any], Any]]:
    """The adapter of ``model`` and how to hand the unlearned model back in the form it was given."""
    if isinstance(model, ModelAdapter):  # already wrapped (the demo, the benchmarks): handed back itself
        adapter = copying.deepcopy(model) if copy else model
        return adapter, lambda a: a
    if isinstance(model, (str, os.PathLike)):
        adapter = _yolo_adapter(str(model), image_size)
        return adapter, lambda a: a.detector
    if type(model).__module__.startswith("ultralytics") and isinstance(getattr(model, "model", None), nn.Module):
        return _yolo_object_adapter(model, copy=copy, image_size=image_size)
    if isinstance(model, nn.Module):
        from vision_unlearn.adapters.timm import TimmAdapter

        module = copying.deepcopy(model) if copy else model
        return TimmAdapter.from_module(module, num_classes=num_classes), lambda a: a.model
    raise UserInputError("expected a timm nn.Module, an ultralytics.YOLO model or a YOLO checkpoint path",
                         field="model", value=type(model).__name__)


def _yolo_adapter(source: str, image_size: int | None, **spec: Any) -> Any:
    from vision_unlearn.adapters.yolo import adapter_from_model_text
    from vision_unlearn.detection_run import FALLBACK_IMAGE_SIZE, checkpoint_image_size

    plain = source[len("yolo:"):] if source.startswith("yolo:") else source
    if Path(plain).suffix.lower() in (".pt", ".pth") and not Path(plain).is_file():
        raise UserInputError("no such checkpoint", file=plain)
    size = image_size or checkpoint_image_size(plain) or FALLBACK_IMAGE_SIZE
    return adapter_from_model_text(plain, image_size=size, **spec)


def _yolo_object_adapter(yolo: Any, *, copy: bool, image_size: int | None) -> tuple[Any, Callable[[Any], Any]]:
    """An ``ultralytics.YOLO``: build the adapter from its checkpoint (or yaml), then take its live weights."""
    detector = yolo.model
    source = getattr(yolo, "ckpt_path", None) or getattr(yolo, "cfg", None)
    if not source:
        raise UserInputError("this YOLO model names neither a checkpoint nor a model yaml", field="model")
    spec: dict[str, Any] = {}
    if Path(str(source)).suffix.lower() in (".yaml", ".yml"):
        names = getattr(detector, "names", None) or {}
        spec = {"num_classes": int(detector.model[-1].nc), "in_chans": int(detector.yaml.get("channels", 3)),
                "class_names": tuple(str(names[i]) for i in sorted(names)) or None}
    adapter = _yolo_adapter(str(source), image_size, **spec)
    adapter.detector.load_state_dict(detector.state_dict())
    target = copying.deepcopy(yolo) if copy else yolo

    def unwrap(unlearned: Any) -> Any:
        target.model.load_state_dict(unlearned.detector.state_dict())
        return target

    return adapter, unwrap

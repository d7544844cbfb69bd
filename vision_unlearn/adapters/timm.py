"""Adapter for any ``timm`` image classifier (``timm.create_model`` name, 1 or 3 input channels).

Weights never come from the network: models are built with ``pretrained=False`` and, when asked,
filled from a local model file (:func:`vision_unlearn.checkpoint.save_model` format) or a plain
``state_dict`` saved with ``torch.save``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from vision_unlearn.protocols import Batch, FeatureHook

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TimmModelSpec:
    """How to build the model.

    Attributes:
        name: a ``timm.list_models()`` name, e.g. ``"resnet10t"``.
        num_classes: classifier outputs.
        in_chans: image channels (1 for radiographs, 3 for RGB).
        img_size: input size for architectures that need it at construction (ViTs); ``None`` otherwise.
        kwargs: further ``timm.create_model`` keyword arguments (JSON-serialisable values).
    """

    name: str
    num_classes: int
    in_chans: int = 1
    img_size: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"family": "timm", **asdict(self)}


def build_timm_model(spec: TimmModelSpec) -> nn.Module:
    """``timm.create_model`` without any download.

    Raises:
        UserInputError: unknown model name or arguments timm rejects.
    """
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    import timm

    if spec.in_chans not in (1, 3):
        raise UserInputError("in_chans must be 1 or 3", field="in_chans", value=spec.in_chans)
    if spec.num_classes < 2:
        raise UserInputError("a classifier needs at least 2 classes", field="num_classes", value=spec.num_classes)
    if not timm.is_model(spec.name):
        raise UserInputError("unknown timm model; see timm.list_models()", field="model", value=spec.name)
    kwargs = dict(spec.kwargs)
    if spec.img_size is not None:
        kwargs["img_size"] = spec.img_size
    try:
        return timm.create_model(spec.name, pretrained=False, num_classes=spec.num_classes, in_chans=spec.in_chans,
                                 **kwargs)
    except TypeError as err:
        raise UserInputError(f"timm rejected the model arguments: {err}", field="model", value=spec.name) from None


class TimmAdapter:
    """A timm classifier behind :class:`~vision_unlearn.protocols.ModelAdapter`.

    Args:
        spec: how to build the model.
        checkpoint: optional local weights file (model file or plain ``state_dict``).

    Attributes:
        model: the timm module.
        module: the module called in forward passes: ``model`` or the loop's DDP wrapper of it.
        num_classes: classifier outputs.
    """

    def __init__(self, spec: TimmModelSpec, checkpoint: str | os.PathLike[str] | None = None) -> None:
        self.spec = spec
        self.model: nn.Module = build_timm_model(spec)
        self.module: nn.Module = self.model
        self.num_classes = spec.num_classes
        if checkpoint is not None:
            self.load_weights(checkpoint)

    @classmethod
    def from_module(cls, module: nn.Module, *, name: str | None = None, num_classes: int | None = None,
                    in_chans: int | None = None) -> TimmAdapter:
        """Wrap an existing timm classifier (its weights, its identity) without rebuilding it.

        The spec is read from the module where not given: ``name`` from ``pretrained_cfg["architecture"]``
        (else the class name), ``num_classes`` from ``module.num_classes``, ``in_chans`` from the first
        convolution or linear layer. :meth:`reset_parameters` rebuilds from the spec when ``name`` is a
        timm model, and calls every submodule's own ``reset_parameters`` otherwise.

        Raises:
            UserInputError: a module that is not a classifier with a known number of classes.
        """
        if not isinstance(module, nn.Module):
            raise UserInputError("expected a torch.nn.Module (a timm classifier)", field="model",
                                 value=type(module).__name__)
        classes = num_classes if num_classes is not None else getattr(module, "num_classes", None)
        if not isinstance(classes, int) or classes < 2:
            raise UserInputError("cannot tell the number of classes of this module; pass num_classes",
                                 field="num_classes", value=classes)
        if in_chans is None:
            first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
            in_chans = int(first.in_channels if isinstance(first, nn.Conv2d) else 1)
        architecture = name or (getattr(module, "pretrained_cfg", None) or {}).get("architecture")
        adapter = cls.__new__(cls)
        adapter.spec = TimmModelSpec(name=architecture or type(module).__name__, num_classes=classes,
                                     in_chans=in_chans)
        adapter.model = module
        adapter.module = module
        adapter.num_classes = classes
        return adapter

    # --- the protocol -------------------------------------------------------------------------
    def loss(self, batch: Batch) -> dict[str, Tensor]:
        """Cross-entropy on ``batch["images"]`` ``[B, C, H, W]`` vs ``batch["labels"]`` ``[B]``.

        Returns:
            ``"loss"`` (mean), ``"per_sample"`` ``[B]`` and ``"logits"`` ``[B, K]``.
        """
        images, labels = batch["images"], batch["labels"]
        logits = self.module(images)
        per_sample = F.cross_entropy(logits, labels, reduction="none")
        return {"loss": per_sample.mean(), "per_sample": per_sample, "logits": logits}

    def logits(self, images: Tensor) -> Tensor:
        """Logits ``[B, K]`` in the current train/eval mode, with gradients."""
        return self.module(images)

    @torch.no_grad()
    def predict(self, images: Tensor, batch_size: int = 512) -> Tensor:
        """Eval-mode logits ``[N, K]`` for ``[N, C, H, W]`` images (mode restored afterwards)."""
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
            outputs = [self.model(images[i:i + batch_size].to(device)).float().cpu()
                       for i in range(0, images.shape[0], batch_size)]
        finally:
            self.model.train(was_training)
        return torch.cat(outputs) if outputs else torch.empty(0, self.num_classes)

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameter_groups(self) -> dict[str, list[str]]:
        head = self.model.get_classifier()
        head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
        groups: dict[str, list[str]] = {"backbone": [], "head": []}
        for name, param in self.trainable_parameters():
            groups["head" if id(param) in head_ids else "backbone"].append(name)
        return groups

    def add_feature_hook(self, hook: FeatureHook, layer: str | None = None) -> torch.utils.hooks.RemovableHandle:
        if layer is None:
            head = self.model.get_classifier()
            if not isinstance(head, nn.Module) or isinstance(head, nn.Identity):
                raise UserInputError("this model has no classifier head to hook", field="layer")

            def pre_hook(_module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
                hook("pre_logits", inputs[0])

            return head.register_forward_pre_hook(pre_hook)
        modules = dict(self.model.named_modules())
        if layer not in modules:
            raise UserInputError("unknown layer name", field="layer", value=layer)

        def forward_hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            hook(layer, output)

        return modules[layer].register_forward_hook(forward_hook)

    def reset_parameters(self, seed: int) -> None:
        from toolkit_core.offline import prepare_offline

        prepare_offline()
        import timm

        device = next(self.model.parameters()).device
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if not timm.is_model(self.spec.name):  # a wrapped module of no timm name: its own initialisers
                for module in self.model.modules():
                    if module is not self.model and callable(getattr(module, "reset_parameters", None)):
                        module.reset_parameters()
                return
            fresh = build_timm_model(self.spec)
        self.model.load_state_dict(fresh.state_dict())
        self.model.to(device)

    def describe(self) -> dict[str, Any]:
        return self.spec.to_dict()

    # --- weights ------------------------------------------------------------------------------
    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load a local model file or plain ``state_dict``; mismatched shapes are a user error."""
        from vision_unlearn.checkpoint import load_model_file

        try:
            state, meta = load_model_file(path)
            saved = meta.get("model", {})
            if saved.get("num_classes") not in (None, self.num_classes):
                raise UserInputError(f"the checkpoint has {saved.get('num_classes')} classes but the data has "
                                     f"{self.num_classes}", file=path, field="num_classes")
        except UserInputError as err:
            if "not a vision_unlearn" not in err.message:
                raise
            try:  # a readable torch file that is not ours: a plain state_dict
                state = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as load_err:  # torch raises many types for damaged files
                raise UserInputError(f"unreadable weights ({type(load_err).__name__})", file=path) from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise UserInputError("not a state_dict of tensors", file=path) from None
        own = self.model.state_dict()
        problems = [k for k, v in state.items() if k in own and tuple(own[k].shape) != tuple(v.shape)]
        missing = [k for k in own if k not in state]
        if problems or missing:
            key = (problems or missing)[0]
            detail = (f"shape {tuple(state[key].shape)} vs model {tuple(own[key].shape)}" if problems
                      else "missing from the file")
            raise UserInputError(f"weights do not fit {self.spec.name} with {self.num_classes} classes and "
                                 f"{self.spec.in_chans} channels ({detail})", file=path, field=key)
        self.model.load_state_dict(state, strict=False)


def adapter_from_description(description: dict[str, Any], checkpoint: str | os.PathLike[str] | None = None
                             ) -> TimmAdapter:
    """Rebuild an adapter from :meth:`TimmAdapter.describe` output (as stored in model files)."""
    if description.get("family") != "timm":
        raise UserInputError("unsupported model family", field="model.family", value=description.get("family"))
    spec = TimmModelSpec(name=description["name"], num_classes=int(description["num_classes"]),
                         in_chans=int(description.get("in_chans", 1)), img_size=description.get("img_size"),
                         kwargs=dict(description.get("kwargs") or {}))
    return TimmAdapter(spec, checkpoint=checkpoint)

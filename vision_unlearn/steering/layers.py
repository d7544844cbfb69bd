"""Finding the block to hook: names a user would choose, the default block, forward order, the
linear head; every unknown name is a user error listing valid ones."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from toolkit_core.errors import UserInputError


def linear_head(model: nn.Module) -> nn.Linear:
    """The model's classifier as an ``nn.Linear`` (timm ``get_classifier()``).

    Raises:
        UserInputError: the model has no linear classifier head.
    """
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    if not isinstance(head, nn.Linear):
        raise UserInputError("an 'abstain' target needs a model whose classifier is one linear layer "
                             "(timm get_classifier())", field="target_response", value=type(head).__name__)
    return head


def hookable_layer_names(model: nn.Module) -> list[str]:
    """Names of the blocks a user would hook: top-level children and the items of top-level
    sequential containers (``layer3``, ``layer3.0``, ``stages.2``, ``blocks.5``). A model that wraps
    a single sub-model (the YOLO adapter's ``detector``) is looked through: ``detector.model.15``."""
    names: list[str] = []
    children = list(model.named_children())
    if len(children) == 1 and not isinstance(children[0][1], (nn.Sequential, nn.ModuleList)):
        name, only = children[0]
        inner = hookable_layer_names(only)
        return [name, *(f"{name}.{n}" for n in inner)] if inner else [name]
    for name, child in children:
        names.append(name)
        if isinstance(child, (nn.Sequential, nn.ModuleList)):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
    return names


MAX_LISTED_LAYERS = 16
"""Layer names an error message lists at most."""


def feature_layer_names(model: nn.Module) -> list[str]:
    """The modules of the model's ``feature_info`` (timm stages; the YOLO neck outputs P3, P4, P5),
    in order; empty when the model has none."""
    info = getattr(model, "feature_info", None)
    if info is None:
        return []
    try:
        return [str(entry["module"]) for entry in info]
    except (TypeError, KeyError):
        return [str(m) for m in info.module_name()] if hasattr(info, "module_name") else []


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module called ``layer`` in ``model.named_modules()``.

    Raises:
        UserInputError: no such module; the message lists valid block names (the feature stages
            first, at most :data:`MAX_LISTED_LAYERS`).
    """
    modules = dict(model.named_modules())
    if not layer or layer not in modules:
        features = feature_layer_names(model)
        hookable = hookable_layer_names(model)
        inside = [n for n in hookable if n.rsplit(".", 1)[0] in features]
        names = list(dict.fromkeys([*features, *inside, *[n for n in hookable if "." not in n], *hookable]))
        shown = ", ".join(names[:MAX_LISTED_LAYERS]) + (", ..." if len(names) > MAX_LISTED_LAYERS else "")
        raise UserInputError(f"unknown layer; valid block names include: {shown} (any name of "
                             f"model.named_modules() is accepted)", field="layer", value=layer)
    return modules[layer]


def default_layer(model: nn.Module) -> str:
    """The second-to-last feature stage of a timm model (``layer3`` of a ResNet, ``blocks.N-2`` of
    a ViT, ``stages.2`` of a ConvNeXt); the last hookable block otherwise."""
    modules = feature_layer_names(model)
    if len(modules) >= 2:
        return modules[-2]
    if modules:
        return modules[-1]
    names = hookable_layer_names(model)
    if not names:
        raise UserInputError("the model has no sub-modules to hook", field="layer")
    return names[-1]


def forward_order(model: nn.Module, layers: Sequence[str]) -> list[str]:
    """``layers`` without duplicates, in the order of ``model.named_modules()`` (the order of a
    sequential forward pass, as in a YOLO ``DetectionModel``).

    Raises:
        UserInputError: an unknown layer (see :func:`resolve_layer`).
    """
    for layer in layers:
        resolve_layer(model, layer)
    position = {name: i for i, (name, _) in enumerate(model.named_modules())}
    return sorted(dict.fromkeys(layers), key=position.__getitem__)

def device_of(model: nn.Module) -> torch.device:
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")

"""The one door in: create methods by name and move their configs to and from dicts and YAML.

Example:
    >>> from vision_unlearn.api import create_unlearner, list_unlearners
    >>> "ofmu" in list_unlearners()
    True
    >>> method = create_unlearner("grad_ascent", adapter, {"lr": 1e-3, "epochs": 2})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from toolkit_core.errors import UserInputError
from vision_unlearn.protocols import MethodConfig, ModelAdapter, Unlearner
from vision_unlearn.registry import get_unlearner_class, registered_names

C = TypeVar("C")


def list_unlearners() -> list[str]:
    """Sorted names of every registered unlearning method."""
    return registered_names()


def config_class_of(name: str) -> type[MethodConfig]:
    """The frozen config dataclass of method ``name``."""
    return get_unlearner_class(name).config_class


def create_unlearner(
    name: str, adapter: ModelAdapter | None = None, config: MethodConfig | Mapping[str, Any] | None = None
) -> Unlearner:
    """Build method ``name`` with ``config`` (defaults when ``None``; a mapping is validated).

    Args:
        name: registry name (see :func:`list_unlearners`).
        adapter: the model adapter the method will run on; checked against the
            :class:`~vision_unlearn.protocols.ModelAdapter` protocol when given.
        config: an instance of the method's config class, a mapping of its fields, or ``None``.

    Raises:
        UserInputError: unknown method, a config of the wrong type, or bad config values.
    """
    cls = get_unlearner_class(name)
    if adapter is not None and not isinstance(adapter, ModelAdapter):
        raise UserInputError("the model adapter does not implement the ModelAdapter protocol",
                             field="adapter", value=type(adapter).__name__)
    if config is None:
        config = cls.config_class()
    elif isinstance(config, Mapping):
        config = config_from_dict(cls.config_class, config, source=f"method {name}")
    elif not isinstance(config, cls.config_class):
        raise UserInputError(f"method {name!r} expects a {cls.config_class.__name__}",
                             field="config", value=type(config).__name__)
    return cls(config)


def config_to_dict(config: Any) -> dict[str, Any]:
    """Plain-data dict of a config dataclass (tuples become lists) for JSON/YAML."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"expected a dataclass instance, got {type(config).__name__}")
    return {f.name: _to_plain(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _to_plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_to_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    return value


def config_from_dict(cls: type[C], data: Mapping[str, Any], source: str | os.PathLike[str] | None = None) -> C:
    """Build and validate config dataclass ``cls`` from ``data``; missing keys take defaults.

    Every value is checked against the field's type hint (``int``, ``float``, ``bool``, ``str``,
    ``Literal[...]``, ``tuple[...]``, optionals); ints are accepted for floats.

    Raises:
        UserInputError: unknown key, or a value of the wrong type, naming ``source`` and the field.
    """
    if not isinstance(data, Mapping):
        raise UserInputError("a config must be a mapping of field names to values", file=source,
                             value=type(data).__name__)
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserInputError(f"unknown config field(s) for {cls.__name__}; known: {', '.join(fields)}",
                             file=source, field=unknown[0])
    values = {key: _coerce(hints[key], value, source, key) for key, value in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        if isinstance(err, UserInputError):
            raise
        raise UserInputError(str(err), file=source) from None


_EXPONENT_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(hint: Any, value: Any, source: Any, key: str) -> Any:
    origin = get_origin(hint)
    bad = UserInputError(f"expected {_hint_name(hint)}", file=source, field=key, value=value)
    if hint is Any:
        return value
    if origin is Literal:
        if value not in get_args(hint):
            raise UserInputError(f"expected one of {', '.join(map(repr, get_args(hint)))}", file=source,
                                 field=key, value=value)
        return value
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, source, key)
            except UserInputError:
                continue
        raise bad
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, source, key) for v in value)
        if len(args) != len(value):
            raise bad
        return tuple(_coerce(a, v, source, key) for a, v in zip(args, value))
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads ``1e-3`` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    return value


def _hint_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def load_config_yaml(cls: type[C], path: str | os.PathLike[str]) -> C:
    """Read a YAML mapping from ``path`` and validate it as ``cls`` (see :func:`config_from_dict`)."""
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("config file not found", file=file) from None
    except yaml.YAMLError as err:
        raise UserInputError(f"not valid YAML: {err}", file=file) from None
    return config_from_dict(cls, data or {}, source=file)


def dump_config_yaml(config: Any) -> str:
    """YAML text of a config dataclass; :func:`load_config_yaml` reads it back to an equal config."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def parse_overrides(items: typing.Sequence[str]) -> dict[str, Any]:
    """``["lr=0.01", "epochs=3"]`` -> ``{"lr": 0.01, "epochs": 3}`` (values parsed as YAML scalars).

    Raises:
        UserInputError: an item without ``=``.
    """
    result: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserInputError("expected KEY=VALUE", field="--set", value=item)
        result[key.strip()] = yaml.safe_load(text)
    return result


def split_method_overrides(items: typing.Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["scrub.lr=1e-3", "original.epochs=5"]`` -> ``{"scrub": {"lr": 0.001}, "original": {"epochs": 5}}``.

    Raises:
        UserInputError: an item that is not ``METHOD.FIELD=VALUE``.
    """
    per_method: dict[str, dict[str, Any]] = {}
    for key, value in parse_overrides(items).items():
        name, dot, field = key.partition(".")
        if not dot or not name or not field:
            raise UserInputError("expected METHOD.FIELD=VALUE", field="--set", value=key)
        per_method.setdefault(name, {})[field] = value
    return per_method


def parse_method_groups(items: typing.Sequence[str]) -> dict[str, list[str]]:
    """``["ofmu=neck,head", "finetune=head"]`` -> ``{"ofmu": ["neck", "head"], "finetune": ["head"]}``.

    Raises:
        UserInputError: an item that is not ``METHOD=GROUP[,GROUP...]``.
    """
    chosen: dict[str, list[str]] = {}
    for item in items:
        name, eq, groups = item.partition("=")
        if not eq or not name.strip() or not groups.strip():
            raise UserInputError("expected METHOD=GROUP[,GROUP...] (groups: backbone, neck, head)", field="--groups",
                                 value=item)
        chosen[name.strip()] = [g.strip() for g in groups.split(",") if g.strip()]
    return chosen

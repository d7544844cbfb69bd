"""The one registry of unlearning methods.

A method is a class decorated with :func:`register_unlearner`; its name is the name of the file it
lives in (``vision_unlearn/methods/<name>.py``), so a newcomer finds any method in a minute.
Registering a name twice raises instead of silently replacing the first method.

The built-in methods are imported on first use of :func:`get_unlearner_class` /
:func:`registered_names` (never at import of this module).
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable
from typing import Any, TypeVar

from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

_METHODS_PACKAGE = "vision_unlearn.methods"
_REGISTRY: dict[str, type[Any]] = {}
_discovered = False

T = TypeVar("T", bound=type)


def register_unlearner(name: str) -> Callable[[T], T]:
    """Class decorator adding an unlearning method to the registry under ``name``.

    Args:
        name: registry name; for methods inside :mod:`vision_unlearn.methods` it must equal the
            module's file name.

    Raises:
        ValueError: the name is already registered, is not a valid identifier, or does not match
            the file name of a built-in method.
    """
    if not name.isidentifier() or name != name.lower():
        raise ValueError(f"method name must be a lower-case identifier, got {name!r}")

    def decorator(cls: T) -> T:
        module = cls.__module__
        if module.startswith(_METHODS_PACKAGE + ".") and module.rsplit(".", 1)[-1] != name:
            raise ValueError(f"method {name!r} must live in {_METHODS_PACKAGE}.{name}, not in {module}")
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"unlearning method {name!r} is already registered by {_REGISTRY[name].__module__}")
        for attribute in ("config_class", "epoch_over", "needs"):
            if not hasattr(cls, attribute):
                raise ValueError(f"method {name!r} lacks the class attribute {attribute!r}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    package = importlib.import_module(_METHODS_PACKAGE)
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{_METHODS_PACKAGE}.{info.name}")
    _discovered = True


def registered_names() -> list[str]:
    """Sorted names of every registered method (built-ins included)."""
    _discover()
    return sorted(_REGISTRY)


def get_unlearner_class(name: str) -> type[Any]:
    """The class registered as ``name``.

    Raises:
        UserInputError: no method has that name (the message lists the known ones).
    """
    _discover()
    if name not in _REGISTRY:
        raise UserInputError(f"unknown unlearning method; known: {', '.join(sorted(_REGISTRY))}",
                             field="method", value=name)
    return _REGISTRY[name]

"""Public names of a package that load on first use, so that importing the package stays light."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, public: Mapping[str, str]) -> tuple[list[str], Callable[[str], Any]]:
    """``__all__`` and a module ``__getattr__`` for ``package``: ``public`` maps each name to the module
    that defines it; the first look-up imports that module and caches the value in the package.

    Use in a package's ``__init__``::

        __all__, __getattr__ = lazy_exports(__name__, {"evaluate_detailed": "rfo_bench.evaluate"})
    """
    names = sorted(public)

    def __getattr__(name: str) -> Any:
        module = public.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    return names, __getattr__

"""What every run record holds besides its results: JSON-safe values and the environment that made them.

One home for both (each of the three libraries and the applications write run records: audit records,
benchmark results, dataset manifests, leaderboards, demo stages).
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

DEFAULT_PACKAGES = ("rfo-toolkit", "numpy", "torch", "torchvision", "timm", "ultralytics")
"""Distributions whose versions a record states unless the caller names others."""


def jsonable(value: Any) -> Any:
    """``value`` as JSON types: dataclasses and mappings to dicts (keys as strings), tuples and lists to
    lists, sets to sorted lists, paths to strings, numpy / torch scalars to Python numbers, non-finite
    floats to ``None`` (JSON has no NaN); anything else to its ``str``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def package_versions(packages: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str]:
    """Installed version of each distribution, ``"not installed"`` where absent."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in packages:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def source_commit(start: str | os.PathLike[str] | None = None) -> str | None:
    """The git commit of the checkout holding ``start`` (default: this package), read from ``.git``
    without running git; ``None`` outside a checkout (an installed wheel)."""
    folder = Path(start or __file__).resolve()
    for candidate in (folder, *folder.parents):
        git = candidate / ".git"
        if not git.is_dir():
            continue
        try:
            head = (git / "HEAD").read_text(encoding="utf-8").strip()
            if not head.startswith("ref: "):
                return head or None
            ref = head[5:]
            loose = git / ref
            if loose.is_file():
                return loose.read_text(encoding="utf-8").strip() or None
            packed = git / "packed-refs"
            if packed.is_file():
                for line in packed.read_text(encoding="utf-8").splitlines():
                    sha, _, name = line.partition(" ")
                    if name == ref:
                        return sha
        except OSError:
            return None
        return None
    return None


def environment(packages: Iterable[str] = DEFAULT_PACKAGES, *, torch_runtime: bool = False) -> dict[str, Any]:
    """Python, platform, machine, the source commit and the versions of ``packages``; with
    ``torch_runtime`` also torch's CPU thread count (what CPU times depend on)."""
    found: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(terse=True),
                             "machine": platform.machine(), "commit": source_commit()}
    found.update(package_versions(packages))
    if torch_runtime:
        import torch

        found["torch_threads"] = torch.get_num_threads()
    return found

"""The Python snippets of a markdown page, and running them in order as a reader would."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SNIPPET = re.compile(r"```python\n(.*?)```", re.DOTALL)
ROOT = Path(__file__).resolve().parents[1]


def python_snippets(page: Path) -> list[str]:
    """The code of every fenced ``python`` block of ``page``, in order."""
    return SNIPPET.findall(page.read_text(encoding="utf-8"))


def run_snippets(page: Path, name: str) -> dict[str, Any]:
    """Run every snippet of ``page`` in order in one namespace (in the current folder); return the namespace.

    Raises:
        AssertionError: naming the snippet that failed and its error.
    """
    namespace: dict[str, Any] = {"__name__": name}
    for number, code in enumerate(python_snippets(page)):
        label = page.resolve().relative_to(ROOT)
        try:
            exec(compile(code, f"{label} python snippet {number + 1}", "exec"), namespace)  # noqa: S102
        except Exception as err:  # name the snippet that failed
            raise AssertionError(f"{label} snippet {number + 1} failed: {err!r}") from err
    return namespace

"""docs/api.md runs as written: its python snippets, in order, in an empty folder."""

from __future__ import annotations

import re
from pathlib import Path

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
SNIPPET = re.compile(r"```python\n(.*?)```", re.DOTALL)


def snippets() -> list[str]:
    return SNIPPET.findall(API_DOC.read_text(encoding="utf-8"))


def test_snippets_are_short_and_the_sections_are_there():
    text = API_DOC.read_text(encoding="utf-8")
    found = snippets()
    assert len(found) >= 6
    assert all(len(code.strip().splitlines()) <= 10 for code in found), [len(c.splitlines()) for c in found]
    for heading in ("## rfo_bench", "## synth", "## vision_unlearn"):
        assert f"\n{heading}\n" in text


def test_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # one process, one thread: generate_dataset's workers default to 1
    namespace: dict = {"__name__": "api_docs"}
    for number, code in enumerate(snippets()):
        try:
            exec(compile(code, f"docs/api.md snippet {number + 1}", "exec"), namespace)  # noqa: S102
        except Exception as err:  # name the snippet that failed
            raise AssertionError(f"docs/api.md snippet {number + 1} failed: {err!r}") from err
    assert (tmp_path / "eval" / "report.json").is_file() and (tmp_path / "synthetic" / "manifest.json").is_file()

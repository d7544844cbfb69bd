"""docs/api.md runs as written: its python snippets, in order, in an empty folder."""

from __future__ import annotations

from pathlib import Path

from tests.markdown_snippets import python_snippets, run_snippets

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def snippets() -> list[str]:
    return python_snippets(API_DOC)


def test_snippets_are_short_and_the_sections_are_there():
    text = API_DOC.read_text(encoding="utf-8")
    found = snippets()
    assert len(found) >= 6
    assert all(len(code.strip().splitlines()) <= 10 for code in found), [len(c.splitlines()) for c in found]
    for heading in ("## rfo_bench", "## synth", "## vision_unlearn"):
        assert f"\n{heading}\n" in text


def test_snippets_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # one process, one thread: generate_dataset's workers default to 1
    run_snippets(API_DOC, "api_docs")
    assert (tmp_path / "eval" / "report.json").is_file() and (tmp_path / "synthetic" / "manifest.json").is_file()

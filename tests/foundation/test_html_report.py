"""The one templating path of the reports: header rows, captions, the Markdown twin, ``rfo-bench report``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from rfo_bench.io.images import write_png8
from rfo_toolkit.eval_sections import FIGURE_CAPTIONS
from rfo_toolkit.report import rebuild_report
from toolkit_core.html_report import Figure, Section, Table, run_header, write_report
from toolkit_core.records import package_versions, source_commit

HEADER_ROW = re.compile(r"<tr><th>([^<]+)</th><td><code>([^<]*)</code></td></tr>")


def _plot(path: Path) -> Path:
    write_png8(path, np.linspace(0, 1, 17 * 11).reshape(17, 11))
    return path


def test_run_header_defaults_to_this_toolkit_and_checkout() -> None:
    rows = dict(run_header())
    assert set(rows) == {"toolkit version", "source commit"}
    installed = package_versions(("rfo-toolkit",))["rfo-toolkit"]
    assert rows["toolkit version"] == (installed if installed != "not installed" else rows["toolkit version"])
    assert rows["source commit"] == (source_commit() or "unknown (not a git checkout)")
    rows = run_header(command="rfo-bench eval --gt a.json", seed=0, toolkit_version="9.9", commit="abc",
                      extra=[("data", "a.json")])
    assert rows == [("toolkit version", "9.9"), ("source commit", "abc"), ("command", "rfo-bench eval --gt a.json"),
                    ("seed", "0"), ("data", "a.json")]


def test_write_report_writes_the_page_and_its_markdown_twin(tmp_path: Path) -> None:
    figure = Figure(_plot(tmp_path / "figs" / "curve.png"), "Sensitivity | against false positives")
    sections = [Section("Results", paragraphs=["text"], tables=[Table(["a|b", "value"], [["x|y", 0.5]])],
                        figures=[figure])]
    written = write_report(tmp_path / "r.html", "Title", sections, subtitle="sub",
                           header=[("command", "cmd --flag 'a|b'")], markdown_path=tmp_path / "r.md")
    page, markdown = written["html"].read_text(), written["markdown"].read_text()
    assert dict(HEADER_ROW.findall(page)) == {"command": "cmd --flag &#x27;a|b&#x27;"}
    assert "<figcaption>Sensitivity | against false positives</figcaption>" in page
    assert "| command | `cmd --flag 'a\\|b'` |" in markdown  # a pipe in a cell does not split the table
    assert "| x\\|y | 0.500 |" in markdown
    assert "![Sensitivity \\| against false positives](figs/curve.png)" in markdown
    assert markdown.splitlines()[:3] == ["# Title", "", "sub"]


def test_eval_report_header_and_captions_come_from_the_saved_record(tmp_path: Path) -> None:
    report = {
        "coco": {"AP": 0.25, "AP50": 0.5}, "froc": {"score": 0.4, "fps_per_image": [1.0], "sensitivity": [0.6]},
        "run": {"toolkit_version": "0.0.9", "commit": "0123abcd", "seed": 5,
                "command": "rfo-bench eval --gt gt.json --pred p.json --out ev"},
        "figures": {"pr_curves.png": "Recorded caption of the PR curves."},
    }
    (tmp_path / "report.json").write_text(json.dumps(report))
    for name in ("froc.png", "pr_curves.png", "other_plot.png"):
        _plot(tmp_path / name)
    page = rebuild_report(tmp_path).read_text()
    assert dict(HEADER_ROW.findall(page)) == {
        "toolkit version": "0.0.9", "source commit": "0123abcd", "seed": "5",
        "command": "rfo-bench eval --gt gt.json --pred p.json --out ev"}
    captions = re.findall(r"<figcaption>([^<]*)</figcaption>", page)
    assert captions == [FIGURE_CAPTIONS["froc"].replace("'", "&#x27;"),
                        "other plot (a plot saved with the evaluation results)",
                        "Recorded caption of the PR curves."]


def test_eval_report_without_a_run_block_states_this_toolkit(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(json.dumps({"coco": {"AP50": 0.5}, "bootstrap": {"seed": 3}}))
    page = rebuild_report(tmp_path).read_text()
    header = dict(HEADER_ROW.findall(page))
    assert header["seed"] == "3" and "command" not in header
    assert header["source commit"] == (source_commit() or "unknown (not a git checkout)")

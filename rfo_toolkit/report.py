"""``rfo-bench report RUN_DIR``: rebuild a self-contained HTML page from saved evaluation results.

A directory written by ``rfo-bench eval`` (``report.json`` and its PNG plots) becomes
``report.html`` through the toolkit's one templating path (:mod:`toolkit_core.html_report`, with the
evaluation's tables and captioned plots from :mod:`rfo_toolkit.eval_sections`); a demo run directory
(``*/stage.json``) is handed to the demo's report builder. The header states what made the results
(toolkit version, source commit, command and seed, as ``report.json`` recorded them).
"""

from __future__ import annotations

import json
from pathlib import Path

from rfo_toolkit.eval_sections import eval_header, eval_sections
from toolkit_core.errors import UserInputError
from toolkit_core.html_report import write_report

TITLE = "RFO detection evaluation"


def rebuild_report(run_dir: str | Path) -> Path:
    """Write ``RUN_DIR/report.html`` from the saved results; return its path."""
    folder = Path(run_dir)
    if not folder.is_dir():
        raise UserInputError("run directory does not exist", file=folder)
    if any(folder.glob("*/stage.json")):
        from rfo_toolkit.demo.pipeline import build_report

        return build_report(folder)["html"]
    report_file = folder / "report.json"
    if not report_file.is_file():
        raise UserInputError("no report.json (from `rfo-bench eval`) or demo stages found", file=folder)
    try:
        report = json.loads(report_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise UserInputError(f"corrupt report: {err.msg}", file=report_file) from None
    if not isinstance(report, dict):
        raise UserInputError("not an `rfo-bench eval` report (expected a JSON object)", file=report_file)
    written = write_report(folder / "report.html", TITLE, eval_sections(report, folder),
                           subtitle=f"Results: {report_file}", header=eval_header(report))
    return written["html"]

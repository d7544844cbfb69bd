"""``rfo-bench report RUN_DIR``: rebuild a self-contained HTML page from saved evaluation results.

A directory written by ``rfo-bench eval`` (``report.json`` and its PNG plots) becomes
``report.html``; a demo run directory (``*/stage.json``) is handed to the demo's report builder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError
from toolkit_core.html_report import Figure, Section, Table, render_html
from toolkit_core.utils import atomic_write_bytes

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def _interval(report: dict[str, Any], key: str) -> str:
    bounds = (report.get("ci95") or {}).get(key)
    if not bounds or bounds[0] is None:
        return "–"
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def eval_sections(report: dict[str, Any], run_dir: Path) -> list[Section]:
    """Report sections of one ``rfo-bench eval`` result."""
    coco = report.get("coco") or {}
    froc = report.get("froc") or {}
    headline = Table(["metric", "value", "95% CI"], [
        ["AP50", coco.get("AP50"), _interval(report, "AP50")],
        ["AP", coco.get("AP"), _interval(report, "AP")],
        ["FROC score", froc.get("score"), _interval(report, "froc")],
        ["image AUROC", report.get("auroc"), _interval(report, "auroc")],
    ], caption="Headline metrics")
    coco_table = Table(["statistic", "value"], [[k, coco.get(k)] for k in COCO_KEYS], caption="COCO statistics")
    per_category = Table(["category", "AP50", "AP"], [[name, v.get("AP50"), v.get("AP")]
                                                      for name, v in (report.get("per_category") or {}).items()],
                         caption="Per category")
    froc_table = Table(["FPs / image", "sensitivity"], list(zip(froc.get("fps_per_image", []),
                                                                froc.get("sensitivity", []))), caption="FROC")
    figures = [Figure(path, path.stem.replace("_", " ")) for path in sorted(run_dir.glob("*.png"))]
    return [Section("Detection evaluation", tables=[headline, coco_table, per_category, froc_table],
                    figures=figures)]


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
        report = json.loads(report_file.read_text())
    except json.JSONDecodeError as err:
        raise UserInputError(f"corrupt report: {err.msg}", file=report_file) from None
    page = render_html("RFO detection evaluation", eval_sections(report, folder), subtitle=str(report_file))
    target = folder / "report.html"
    atomic_write_bytes(target, page.encode("utf-8"))
    return target

"""Report pieces of one ``rfo-bench eval`` result (``report.json`` and its plots).

Shared by ``rfo-bench report`` (:mod:`rfo_toolkit.report`) and the demo's detector section
(:mod:`rfo_toolkit.demo.pipeline`), so an evaluation reads the same wherever it is shown. Pure
formatting of the saved dictionaries into :mod:`toolkit_core.html_report` tables and figures.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from toolkit_core.html_report import Figure, Section, Table, run_header

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

FIGURE_CAPTIONS = {
    "froc": "FROC: sensitivity (fraction of objects found) against false positives per image over every score "
            "threshold (line); the dots are the operating points whose mean is the FROC score.",
    "pr_curves": "Precision against recall at IoU 0.5, one curve per category (COCO's interpolated precision; "
                 "its mean is the category's AP50).",
    "errors": "The worst errors at IoU 0.5, each cropped around its box: the highest-scoring false positives "
              "(red box, title 'FP' and score) and the largest missed objects (yellow box).",
}
"""What each plot of ``rfo-bench eval`` shows, by file stem (used where ``report.json`` records no caption)."""


def interval_text(report: dict[str, Any], key: str) -> str:
    """``[low, high]`` of the 95% interval of ``key``, or an en dash when there is none."""
    bounds = (report.get("ci95") or {}).get(key)
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "–"
    return f"[{bounds[0]:.3f}, {bounds[1]:.3f}]"


def headline_table(report: dict[str, Any], caption: str = "Headline metrics") -> Table:
    """AP50, AP (50:95), FROC score and image AUROC with their 95% bootstrap intervals."""
    coco, froc = report.get("coco") or {}, report.get("froc") or {}
    return Table(["metric", "value", "95% CI"], [
        ["AP50", coco.get("AP50"), interval_text(report, "AP50")],
        ["AP (50:95)", coco.get("AP"), interval_text(report, "AP")],
        ["FROC score", froc.get("score"), interval_text(report, "froc")],
        ["image AUROC", report.get("auroc"), interval_text(report, "auroc")],
    ], caption=caption)


def per_category_table(report: dict[str, Any], caption: str = "Per category") -> Table:
    """AP50 and AP of each category."""
    return Table(["category", "AP50", "AP"], [[name, v.get("AP50"), v.get("AP")]
                                             for name, v in (report.get("per_category") or {}).items()],
                 caption=caption)


def recorded_captions(report: dict[str, Any]) -> dict[str, str]:
    """File name -> caption as ``report.json`` records them (``figures``: a mapping or a list of entries)."""
    figures = report.get("figures")
    if isinstance(figures, dict):
        return {Path(str(k)).name: v for k, v in figures.items() if isinstance(v, str) and v.strip()}
    found = {}
    for entry in figures if isinstance(figures, list) else []:
        if isinstance(entry, dict):
            name, caption = entry.get("file") or entry.get("path"), entry.get("caption")
            if isinstance(name, str) and isinstance(caption, str) and caption.strip():
                found[Path(name).name] = caption
    return found


def eval_figures(paths: Iterable[Path], report: dict[str, Any]) -> list[Figure]:
    """The plots of an evaluation, each captioned with what it shows."""
    recorded = recorded_captions(report)
    return [Figure(path, recorded.get(path.name) or FIGURE_CAPTIONS.get(path.stem)
                   or f"{path.stem.replace('_', ' ')} (a plot saved with the evaluation results)")
            for path in paths]


def eval_sections(report: dict[str, Any], run_dir: Path) -> list[Section]:
    """Report sections of one ``rfo-bench eval`` result whose plots are in ``run_dir``."""
    coco, froc = report.get("coco") or {}, report.get("froc") or {}
    coco_table = Table(["statistic", "value"], [[k, coco.get(k)] for k in COCO_KEYS], caption="COCO statistics")
    froc_table = Table(["FPs / image", "sensitivity"], list(zip(froc.get("fps_per_image", []),
                                                                froc.get("sensitivity", []))), caption="FROC")
    return [Section("Detection evaluation",
                    tables=[headline_table(report), coco_table, per_category_table(report), froc_table],
                    figures=eval_figures(sorted(Path(run_dir).glob("*.png")), report))]


def eval_header(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The header rows from the ``run`` block ``rfo-bench eval`` records (toolkit version, source commit,
    command, seed); version and commit default to this toolkit's where the block has none."""
    run = report.get("run") if isinstance(report.get("run"), dict) else {}
    bootstrap = report.get("bootstrap") if isinstance(report.get("bootstrap"), dict) else {}
    seed = run.get("seed", bootstrap.get("seed"))
    return run_header(command=run.get("command"), seed=seed if isinstance(seed, int) else None,
                      toolkit_version=run.get("toolkit_version"), commit=run.get("commit"))

"""The leaderboard as a Markdown document (pure formatting of the summary :func:`run_benchmark` records)."""

from __future__ import annotations

from typing import Any

from rfo_toolkit.leaderboard.config import METRICS
from toolkit_core.table_cells import mean_std_cell


def _cell(metric: dict[str, Any]) -> str:
    """``mean ± std [low, high]``; the value alone for one seed (no spread from one seed)."""
    std = metric["std"] if len(metric["per_seed"]) > 1 else None
    return mean_std_cell(metric["mean"], std, digits=3, interval=metric["ci95"])


def render_markdown(summary: dict[str, Any]) -> str:
    """The leaderboard as a Markdown document (see :func:`run_benchmark` for ``summary``)."""
    lines = [f"# Leaderboard: {summary['name']}", ""]
    data = summary["data"]
    lines += [
        f"Test split: {data['test_images']} images ({data['test_positive_images']} with an RFO, "
        f"{data['test_objects']} objects, {data['test_patients']} patients), never used for training or as a "
        f"synthetic background. Real training split: {data['train_images']} images.",
        "",
        f"Cells: mean ± sample std over seeds {summary['seeds']} (the value itself for one seed), then the mean of "
        "the per-seed 95 % bootstrap "
        f"intervals over test patients ({summary['bootstrap']} replicates). AP = COCO AP@[.5:.95]; FROC = mean "
        "sensitivity at 1/8..8 false positives per image (object-CXR protocol); AUROC = image-level, critical RFO "
        "present.",
        "",
        "| Model | Arm | Train images | AP50 | AP | FROC | AUROC | Train s |",
        "|---|---|---:|---|---|---|---|---:|",
    ]
    for row in summary["rows"]:
        cells = [_cell(row[m]) for m in METRICS]
        seconds = row["train_seconds"]["mean"]
        lines.append(f"| {row['model']} | {row['arm']} | {row['train_images']} | " + " | ".join(cells)
                     + f" | {seconds:.0f} |")
    if summary["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in summary["notes"]]
    lines += ["", f"FROC curves per arm: `{summary['plot']}`.", "",
              f"Regenerate: `{summary['command']}`", ""]
    return "\n".join(lines)



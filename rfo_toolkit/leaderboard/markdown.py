"""The leaderboard as a Markdown document (pure formatting of the summary :func:`run_benchmark` records)."""

from __future__ import annotations

from typing import Any

from rfo_toolkit.leaderboard.config import METRICS
from rfo_toolkit.leaderboard.summary import COMPUTE_KEYS
from toolkit_core.table_cells import escape_markdown_cell, mean_std_cell


def _cell(metric: dict[str, Any]) -> str:
    """``mean ± std [low, high]``; the value alone for one seed (no spread from one seed)."""
    std = metric["std"] if len(metric["per_seed"]) > 1 else None
    return mean_std_cell(metric["mean"], std, digits=3, interval=metric["ci95"])


def _seconds(value: Any) -> str:
    return "n/a" if value is None or value != value else f"{value:.0f}"


def _start_cell(start: dict[str, Any] | None) -> str:
    """``scratch``, or ``recipe @ sha256-prefix (+CPU-s, +accelerator-s)`` for a row fine-tuned from a start."""
    if not start:
        return "scratch"
    compute = start.get("compute") or {}
    return (f"{escape_markdown_cell(start.get('recipe') or 'detector')} @ {str(start.get('weights_sha256'))[:12]} "
            f"(+{_seconds(compute.get('cpu_seconds'))} CPU-s, +{_seconds(compute.get('accelerator_seconds'))} accel-s)")


def _start_note(start: dict[str, Any]) -> str:
    compute = start.get("compute") or {}
    unseen = start.get("unseen_classes") or []
    return (f"`{start.get('model')}` starts from `{start.get('detector')}`: recipe `{start.get('recipe')}` "
            f"(sha256 {str(start.get('recipe_sha256'))[:12]}), weights sha256 {start.get('weights_sha256')}, "
            f"films of {start.get('film_px')} px; its own training took {_seconds(compute.get('cpu_seconds'))} CPU-s "
            f"and {_seconds(compute.get('accelerator_seconds'))} accelerator-s"
            + (f"; never saw {', '.join(unseen)}" if unseen else "") + ".")


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
        "Compute per run, mean over seeds: Train s = training wall seconds; Train CPU-s and Accel-s = the "
        "training record's CPU seconds (this process and its workers) and accelerator seconds; Run CPU-s = "
        "training, prediction and evaluation. A row fine-tuned from a start adds the start's own training "
        "(Start column: recipe, weights SHA-256 prefix, its CPU-s / accelerator-s) to its total compute.",
        "",
        "| Model | Arm | Train images | AP50 | AP | FROC | AUROC | Train s | Train CPU-s | Accel-s | Run CPU-s "
        "| Start |",
        "|---|---|---:|---|---|---|---|---:|---:|---:|---:|---|",
    ]
    for row in summary["rows"]:
        cells = [_cell(row[m]) for m in METRICS]
        seconds = row["train_seconds"]["mean"]
        compute = row.get("compute") or {}
        lines.append(f"| {row['model']} | {row['arm']} | {row['train_images']} | " + " | ".join(cells)
                     + f" | {seconds:.0f} | " + " | ".join(_seconds(compute.get(k)) for k in COMPUTE_KEYS)
                     + f" | {_start_cell(row.get('start'))} |")
    starts = summary.get("starts") or []
    if starts:
        lines += ["", "Starts (fine-tuned from a recipe-trained detector; tiles cut with its tiling, predicted sliced "
                  "over whole test films):", ""]
        lines += [f"- {_start_note(start)}" for start in starts]
    if summary["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in summary["notes"]]
    lines += ["", f"FROC curves per arm: `{summary['plot']}`.", "",
              f"Regenerate: `{summary['command']}`", ""]
    return "\n".join(lines)



"""The leaderboard as a Markdown document (pure formatting of the summary :func:`run_benchmark` records)."""

from __future__ import annotations

import math
from typing import Any

from rfo_toolkit.leaderboard.config import METRICS
from rfo_toolkit.leaderboard.runs import NO_FINE_TUNING
from rfo_toolkit.leaderboard.summary import COMPUTE_KEYS
from toolkit_core.table_cells import MISSING, escape_markdown_cell, mean_std_cell

COMPARISON_TITLE = "Does adding synthetic data help?"
COMPARED_METRICS = ("AP50", "FROC", "AP", "AUROC")
"""The paired differences' tables, in this order (the headline metrics first)."""


def _cell(metric: dict[str, Any], deterministic: bool = False) -> str:
    """``mean ± std [low, high]``; the value alone for one seed (no spread from one seed); ``mean ± n/a
    [low, high]`` for a deterministic row (evaluated once: no spread over seeds exists)."""
    std = metric["std"] if len(metric["per_seed"]) > 1 else None
    text = mean_std_cell(metric["mean"], None if deterministic else std, digits=3, interval=metric["ci95"])
    if deterministic and text != MISSING:
        value, _, interval = text.partition(" ")
        text = f"{value} ± {MISSING} {interval}".rstrip()
    return text


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _signed(value: float) -> str:
    """``+0.031`` / ``-0.031``; a value that rounds to zero is ``0.000`` (no sign it does not have at 3 digits)."""
    text = f"{value:+.3f}"
    return "0.000" if text in ("+0.000", "-0.000") else text


def _delta_cell(found: dict[str, Any]) -> str:
    """``+0.031 ± 0.012 [+0.010, +0.052]``: signed mean difference, std over seeds, 95 % paired interval."""
    if not _finite(found.get("mean")):
        return MISSING
    text = _signed(found["mean"])
    if _finite(found.get("std")):
        text += f" ± {found['std']:.3f}"
    low, high = (found.get("ci95") or [None, None])[:2]
    if _finite(low) and _finite(high):
        text += f" [{_signed(low)}, {_signed(high)}]"
    return text


def _comparison_lines(summary: dict[str, Any]) -> list[str]:
    """The section of paired differences: one table per metric, the method, and each comparison's notes."""
    comparisons = summary.get("comparisons") or []
    if not comparisons:
        return []
    baseline = any(c["reference"] == NO_FINE_TUNING for c in comparisons)
    lines = ["", f"## {COMPARISON_TITLE}", "",
             f"Each arm against the reference arm `{summary.get('reference_arm')}` of the same model"
             + (f" and, for a model fine-tuned from a start, against the start without fine-tuning (`{NO_FINE_TUNING}`)"
                if baseline else "") + ", on the same test films."]
    for metric in COMPARED_METRICS:
        if not any(metric in c["metrics"] for c in comparisons):
            continue
        lines += ["", f"Δ {metric}:", "",
                  f"| Model | Arm vs reference | Seeds | Δ {metric} mean ± std over seeds [95 % paired CI] | Verdict |",
                  "|---|---|---:|---|---|"]
        for c in comparisons:
            found = c["metrics"].get(metric)
            if found is None:
                continue
            lines.append(f"| {escape_markdown_cell(c['model'])} | {escape_markdown_cell(c['arm'])} vs "
                         f"{escape_markdown_cell(c['reference'])} | {len(c['seeds'])} | {_delta_cell(found)} | "
                         f"{found['verdict']} |")
    lines += ["", "Δ = arm − reference: the mean over seeds of the per-seed differences (same seed, same test films) "
              "± their sample std over seeds. The 95 % paired interval comes from a two-level bootstrap: each of the "
              f"{summary.get('bootstrap')} replicates draws the seeds with replacement and the test {_units(summary)} (the "
              "evaluator's replicate, the same draw for both arms and every seed: evaluation seed "
              f"{summary.get('evaluation_seed')}); replicates undefined on a side are left out. Verdict: higher "
              "where the interval lies above 0, lower where it lies below 0, otherwise no difference shown."
              + (f" `{NO_FINE_TUNING}` is evaluated once and contributes its value to every seed." if baseline else "")]
    # a note every comparison has (e.g. one seed) is said once
    shared = [note for note in comparisons[0]["notes"] if all(note in c["notes"] for c in comparisons)
              ] if len(comparisons) > 1 else []
    notes = [f"All comparisons: {note}" for note in shared]
    notes += [f"{c['model']}, {c['arm']} vs {c['reference']}: {note}" for c in comparisons for note in c["notes"]
              if note not in shared]
    if notes:
        lines += [""] + [f"- {escape_markdown_cell(note)}" for note in notes]
    return lines


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
    from rfo_bench.detectors.bundled import detector_name

    compute = start.get("compute") or {}
    unseen = start.get("unseen_classes") or []
    return (f"`{start.get('model')}` starts from `{detector_name(start.get('detector') or '')}`: recipe `{start.get('recipe')}` "
            f"(sha256 {str(start.get('recipe_sha256'))[:12]}), weights sha256 {start.get('weights_sha256')}, "
            f"films of {start.get('film_px')} px; its own training took {_seconds(compute.get('cpu_seconds'))} CPU-s "
            f"and {_seconds(compute.get('accelerator_seconds'))} accelerator-s"
            + (f"; never saw {', '.join(unseen)}" if unseen else "") + ".")


def _units(summary: dict[str, Any]) -> str:
    """What the bootstrap resampled, in words (``patients`` for summaries written before it was recorded)."""
    return "images" if summary.get("bootstrap_unit") == "image" else "patients"


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
        f"intervals over test {_units(summary)} ({summary['bootstrap']} replicates). AP = COCO AP@[.5:.95]; FROC = mean "
        "sensitivity at 1/8..8 false positives per image (object-CXR protocol); AUROC = image-level, critical RFO "
        "present." + (f" The `{NO_FINE_TUNING}` row of a model fine-tuned from a start is that start detector as "
                      "it is, predicted once over the same test films (deterministic: no spread over seeds, n/a)."
                      if any(row.get("deterministic") for row in summary["rows"]) else ""),
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
        cells = [_cell(row[m], bool(row.get("deterministic"))) for m in METRICS]
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
              f"Regenerate: `{summary['command']}`"]
    lines += _comparison_lines(summary)
    return "\n".join(lines) + "\n"



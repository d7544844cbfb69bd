"""Benchmark reports: ``results.md`` (one table, best values marked) and a trade-off plot.

Input is the benchmark's results dict::

    {"scenario": "digits, forget class:3, resnet10t, 3 seeds",
     "methods": {
        "retrain": {"UA": {"mean": 100.0, "std": 0.0}, "RA": {...}, "TA": {...}, "MIA": {...},
                    "avg_gap": {...}, "seconds": 41.0, "seconds_ratio_to_retrain": 1.0,
                    "hyperparameters": {"epochs": 30, "lr": 0.1}},
        "ofmu": {...}, ...}}

Metric values are numbers or ``{"mean", "std"[, "n"]}`` summaries (:func:`~vision_unlearn.metrics.gap.summarise_seeds`).

How "best" is marked (bold). Retraining is the gold standard, so when a ``retrain`` row exists, the
best UA / RA / TA / MIA (and TA on the remaining classes) is the one *closest to retrain* — the SalUn
convention, which also prints each gap in parentheses. Avg.Gap, seconds and the time ratio: lowest.
Without a retrain row, RA / TA are best when highest and UA / MIA are left unmarked (whether more
forgetting is better depends on the reference). The retrain row itself is never marked.

The plot puts the forgetting gap to retrain, ``(|UA - UA_retrain| + |MIA - MIA_retrain|) / 2`` in
percentage points, on x; utility (TA on the remaining classes for class-wise forgetting, else TA) on
y; and cost (run time as a multiple of retraining) as marker area, with its value written next to
each marker. The ideal method sits on top of the retrain star with a small marker.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rfo_bench.errors import UserInputError
from rfo_bench.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

RETRAIN = "retrain"
"""Name of the gold-standard method in the results."""

GAP_TO_RETRAIN_COLUMNS = ("UA", "RA", "TA", "TA_remaining", "MIA")
"""Columns whose best value is the one closest to retrain."""

LOWER_IS_BETTER_COLUMNS = ("avg_gap", "seconds", "seconds_ratio_to_retrain")

HEADERS = {
    "UA": "UA (%)",
    "RA": "RA (%)",
    "TA": "TA (%)",
    "TA_remaining": "TA remaining classes (%)",
    "MIA": "MIA-Efficacy (%)",
    "avg_gap": "Avg.Gap (pp)",
    "seconds": "Time (s)",
    "seconds_ratio_to_retrain": "Time / retrain",
}
COLUMN_ORDER = tuple(HEADERS)


def _stat(value: Any, where: str) -> tuple[float, float | None]:
    """``(mean, std or None)`` of a number or a ``{"mean", "std"}`` summary."""
    if isinstance(value, Mapping):
        if "mean" not in value:
            raise UserInputError("metric summary lacks 'mean'", field=where, value=dict(value))
        mean, std = value["mean"], value.get("std")
    else:
        mean, std = value, None
    if isinstance(mean, bool) or not isinstance(mean, (int, float)):
        raise UserInputError("metric is not a number", field=where, value=mean)
    if std is not None and (isinstance(std, bool) or not isinstance(std, (int, float))):
        raise UserInputError("metric std is not a number", field=where, value=std)
    return float(mean), (None if std is None else float(std))


def _validate(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    methods = results.get("methods") if isinstance(results, Mapping) else None
    if not isinstance(methods, Mapping) or not methods:
        raise UserInputError("results need a non-empty 'methods' mapping", field="methods")
    for name, entry in methods.items():
        if not isinstance(entry, Mapping):
            raise UserInputError("each method's results must be a mapping", field=f"methods.{name}")
    return {str(k): dict(v) for k, v in methods.items()}


def _columns(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Columns present in at least one method, in :data:`COLUMN_ORDER`."""
    return [c for c in COLUMN_ORDER if any(c in m for m in methods.values())]


def best_methods(results: Mapping[str, Any]) -> dict[str, set[str]]:
    """Names of the best method(s) per column (ties share the mark); see the module docstring."""
    methods = _validate(results)
    reference = methods.get(RETRAIN)
    best: dict[str, set[str]] = {}
    for column in _columns(methods):
        scores: dict[str, float] = {}
        for name, entry in methods.items():
            if name == RETRAIN or column not in entry:
                continue
            mean, _ = _stat(entry[column], f"methods.{name}.{column}")
            if not math.isfinite(mean):
                continue
            if column in GAP_TO_RETRAIN_COLUMNS:
                if reference is not None and column in reference:
                    ref, _ = _stat(reference[column], f"methods.{RETRAIN}.{column}")
                    scores[name] = abs(mean - ref)
                elif column in ("RA", "TA", "TA_remaining"):
                    scores[name] = -mean
            elif column in LOWER_IS_BETTER_COLUMNS:
                scores[name] = mean
        if scores:
            top = min(scores.values())
            best[column] = {n for n, s in scores.items() if math.isclose(s, top, rel_tol=1e-9, abs_tol=1e-12)}
    return best


def _format(column: str, mean: float, std: float | None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    if column == "seconds":
        digits = 1 if mean >= 10 else 2
    elif column == "seconds_ratio_to_retrain":
        digits = 3
    else:
        digits = 2
    text = f"{mean:.{digits}f}"
    if std is not None:
        text += f" ± {std:.{digits}f}"
    return text


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_results_markdown(results: Mapping[str, Any]) -> str:
    """The markdown of ``results.md`` (pure: no file access)."""
    methods = _validate(results)
    columns = _columns(methods)
    best = best_methods(results)
    reference = methods.get(RETRAIN)
    scenario = str(results.get("scenario", "unlearning benchmark"))
    lines = [f"# Unlearning results: {_markdown_cell(scenario)}", ""]
    seeds = results.get("seeds")
    if seeds is not None:
        lines.append(f"Seeds: {_markdown_cell(str(seeds))}. Values are mean ± standard deviation over seeds.")
    else:
        lines.append("Values are mean ± standard deviation over seeds where several were run.")
    if reference is not None:
        lines.append(
            "Bold marks the best method per column; for UA, RA, TA and MIA that is the value closest to "
            "retraining (the gap in percentage points is in parentheses). Avg.Gap = mean |metric - retrain| "
            "over UA, RA, TA, MIA; lower is better."
        )
    else:
        lines.append("No retrain row: bold marks the highest RA/TA and the lowest Avg.Gap and time.")
    lines += ["", "| Method | " + " | ".join(HEADERS[c] for c in columns) + " |",
              "|---|" + "---|" * len(columns)]
    order = sorted(methods, key=lambda n: (n != RETRAIN, n))
    for name in order:
        entry = methods[name]
        cells = []
        for column in columns:
            if column not in entry:
                cells.append("—")
                continue
            mean, std = _stat(entry[column], f"methods.{name}.{column}")
            text = _format(column, mean, std)
            if (name != RETRAIN and column in GAP_TO_RETRAIN_COLUMNS and reference is not None
                    and column in reference and math.isfinite(mean)):
                ref, _ = _stat(reference[column], f"methods.{RETRAIN}.{column}")
                text += f" ({abs(mean - ref):.2f})"
            if name in best.get(column, set()):
                text = f"**{text}**"
            cells.append(text)
        label = f"{name} (gold standard)" if name == RETRAIN else name
        lines.append(f"| {_markdown_cell(label)} | " + " | ".join(cells) + " |")
    tuned = [(n, methods[n].get("hyperparameters")) for n in order if methods[n].get("hyperparameters")]
    if tuned:
        lines += ["", "## Hyper-parameters", ""]
        for name, params in tuned:
            shown = ", ".join(f"{k}={_markdown_cell(json.dumps(v))}" for k, v in sorted(dict(params).items()))
            lines.append(f"- **{_markdown_cell(name)}**: {shown}")
    notes = results.get("notes")
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {_markdown_cell(str(n))}" for n in (notes if isinstance(notes, list) else [notes])]
    return "\n".join(lines) + "\n"


def write_results_markdown(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_results_markdown` to ``path`` atomically."""
    target = Path(path)
    atomic_write_bytes(target, render_results_markdown(results).encode("utf-8"))
    return target


def tradeoff_points(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Plot coordinates per method (pure): ``name``, ``forgetting_gap``, ``utility``, ``utility_std``,
    ``cost_ratio`` (``None`` when unknown) and ``utility_key``.

    Raises:
        UserInputError: no retrain row, or a method without UA / MIA / TA.
    """
    methods = _validate(results)
    if RETRAIN not in methods:
        raise UserInputError("the trade-off plot needs a 'retrain' row as reference", field="methods.retrain")
    reference = methods[RETRAIN]
    utility_key = "TA_remaining" if all("TA_remaining" in m for m in methods.values()) else "TA"
    points = []
    for name, entry in methods.items():
        for key in ("UA", "MIA", utility_key):
            if key not in entry or key not in reference:
                raise UserInputError("metric needed by the trade-off plot is missing", field=f"methods.{name}.{key}")
        gaps = [abs(_stat(entry[k], f"methods.{name}.{k}")[0] - _stat(reference[k], f"methods.retrain.{k}")[0])
                for k in ("UA", "MIA")]
        utility, utility_std = _stat(entry[utility_key], f"methods.{name}.{utility_key}")
        ratio = None
        if "seconds_ratio_to_retrain" in entry:
            ratio = _stat(entry["seconds_ratio_to_retrain"], f"methods.{name}.seconds_ratio_to_retrain")[0]
        points.append({"name": name, "forgetting_gap": sum(gaps) / 2.0, "utility": utility,
                       "utility_std": utility_std, "cost_ratio": ratio, "utility_key": utility_key})
    return points


def plot_tradeoff(results: Mapping[str, Any], path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write the forgetting-gap / utility / cost plot as a PNG (matplotlib, Agg canvas)."""
    from rfo_bench.offline import prepare_offline

    prepare_offline()
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    points = tradeoff_points(results)
    figure = Figure(figsize=(7.0, 5.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    cmap = colormaps["tab10"]
    for index, point in enumerate(sorted(points, key=lambda p: (p["name"] != RETRAIN, p["name"]))):
        ratio = point["cost_ratio"]
        area = 60.0 + 600.0 * min(ratio, 2.0) if ratio is not None and math.isfinite(ratio) else 60.0
        is_retrain = point["name"] == RETRAIN
        axes.scatter(point["forgetting_gap"], point["utility"], s=area, marker="*" if is_retrain else "o",
                     color="black" if is_retrain else cmap(index % 10), alpha=0.75, edgecolors="black",
                     linewidths=0.5, zorder=3)
        if point["utility_std"]:
            axes.errorbar(point["forgetting_gap"], point["utility"], yerr=point["utility_std"], fmt="none",
                          ecolor="grey", elinewidth=0.8, capsize=2, zorder=2)
        cost = f" ×{ratio:.2f}" if ratio is not None and math.isfinite(ratio) else ""
        axes.annotate(f"{point['name']}{cost}", (point["forgetting_gap"], point["utility"]),
                      textcoords="offset points", xytext=(6, 6), fontsize=8)
    utility_key = points[0]["utility_key"]
    axes.set_xlabel("forgetting gap to retrain: (|ΔUA| + |ΔMIA|) / 2 (pp)")
    axes.set_ylabel("TA on remaining classes (%)" if utility_key == "TA_remaining" else "TA (%)")
    axes.set_title(str(results.get("scenario", "unlearning benchmark")), fontsize=9)
    axes.text(0.99, 0.01, "marker area ∝ time / retrain (×value)", transform=axes.transAxes, ha="right",
              va="bottom", fontsize=7, color="grey")
    axes.grid(True, alpha=0.3)
    axes.set_xlim(left=min(-0.5, axes.get_xlim()[0]))
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, dpi=dpi)
    os.replace(tmp, target)
    return target


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.md`` and ``tradeoff.png`` (when a retrain row exists) into ``out_dir``."""
    directory = Path(out_dir)
    written = {"markdown": write_results_markdown(results, directory / "results.md")}
    if RETRAIN in _validate(results):
        written["plot"] = plot_tradeoff(results, directory / "tradeoff.png")
    else:
        logger.warning("no retrain row in the results: the trade-off plot is skipped")
    return written


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``results.json`` written by the benchmark (clear errors for missing / invalid files)."""
    file = Path(path)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("results file does not exist", file=file) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"results file is not valid JSON: {err}", file=file) from None
    try:
        _validate(payload)
    except UserInputError as err:
        raise UserInputError(err.message, file=file, field=err.field) from None
    return payload

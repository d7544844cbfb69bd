"""Benchmark reports: ``results.md`` (tables, best values marked) and a trade-off plot.

Two input layouts are accepted.

* One scenario::

    {"scenario": "digits, forget class:3, resnet10t, 3 seeds",
     "methods": {
        "retrain": {"UA": {"mean": 100.0, "std": 0.0}, "RA": {...}, "TA": {...}, "MIA": {...},
                    "avg_gap": {...}, "seconds": 41.0, "seconds_ratio_to_retrain": 1.0,
                    "hyperparameters": {"epochs": 30, "lr": 0.1}},
        "ofmu": {...}, ...}}

* The benchmark's ``results.json`` (:mod:`vision_unlearn.benchmark`): ``{"spec", "command",
  "scenarios": {request: {"n_forget", "n_retain", "methods": {name: {"config", "summary", ...}},
  "sweep"}}}``; every scenario becomes one table and one panel of the plot.

Metric values are numbers or ``{"mean", "std"[, "n"]}`` summaries (:func:`~vision_unlearn.metrics.gap.summarise_seeds`).

How "best" is marked (bold). Retraining is the gold standard, so when a ``retrain`` row exists, the
best UA / RA / TA / MIA (and TA on the remaining classes, LiRA) is the one *closest to retrain* — the
SalUn convention, which also prints each gap in parentheses. Avg.Gap, seconds and the time ratio:
lowest. Without a retrain row, RA / TA are best when highest and UA / MIA are left unmarked (whether
more forgetting is better depends on the reference). The ``retrain`` and ``original`` (the model
before unlearning) rows are references and never marked.

A second table per scenario reports honesty on the forget set (:func:`vision_unlearn.benchmark.honesty_metrics`):
abstain / lie (confident misattribution) / recall, false abstention on held-out retained-class
images, and the stability of the abstain-or-answer decision under test-time augmentation and under
a repeated query; for ``steer``, its inference overhead. Bold there: the most abstention and
stability, the fewest lies, recalls and the least overhead among the unlearning methods (the
retrained model is no honesty reference: it was never asked to abstain).

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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from toolkit_core.errors import UserInputError
from toolkit_core.table_cells import escape_markdown_cell, mean_std_cell
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

RETRAIN = "retrain"
"""Name of the gold-standard method in the results."""

ORIGINAL = "original"
"""Name of the row of the model before unlearning (a reference, like retrain)."""

REFERENCE_ROWS = (RETRAIN, ORIGINAL)

GAP_TO_RETRAIN_COLUMNS = ("UA", "RA", "TA", "TA_remaining", "MIA", "LiRA_auc", "LiRA_tpr_at_fpr_0.01")
"""Columns whose best value is the one closest to retrain."""

LOWER_IS_BETTER_COLUMNS = ("avg_gap", "seconds", "seconds_ratio_to_retrain")

HEADERS = {
    "UA": "UA (%)",
    "RA": "RA (%)",
    "TA": "TA (%)",
    "TA_remaining": "TA remaining classes (%)",
    "MIA": "MIA-Efficacy (%)",
    "LiRA_auc": "LiRA AUC",
    "LiRA_tpr_at_fpr_0.01": "LiRA TPR@1%FPR",
    "avg_gap": "Avg.Gap (pp)",
    "seconds": "Time (s)",
    "seconds_ratio_to_retrain": "Time / retrain",
}
COLUMN_ORDER = tuple(HEADERS)

HONESTY_HEADERS = {
    "abstain": "Abstain (%)",
    "lie": "Lie: confident misattribution (%)",
    "recall": "Recall (%)",
    "false_abstain": "False abstain (%)",
    "stability_tta": "TTA stability (%)",
    "stability_repeat": "Repeat stability (%)",
    "overhead": "Inference overhead (%)",
}
"""Columns of the honesty table (keys of :func:`vision_unlearn.benchmark.honesty_metrics` and
:func:`vision_unlearn.benchmark.steering_costs`)."""

HONESTY_BEST = {"abstain": max, "lie": min, "recall": min, "stability_tta": max, "stability_repeat": max,
                "overhead": min}
"""How the best value of an honesty column is chosen (``false_abstain`` is calibrated, not ranked)."""


# ------------------------------------------------------------------------------------------ input layouts


def _stat(value: Any, where: str) -> tuple[float, float | None]:
    """``(mean, std or None)`` of a number or a ``{"mean", "std"}`` summary (``None`` -> NaN)."""
    if isinstance(value, Mapping):
        if "mean" not in value:
            raise UserInputError("metric summary lacks 'mean'", field=where, value=dict(value))
        mean, std = value["mean"], value.get("std")
    else:
        mean, std = value, None
    if mean is None:
        return math.nan, None
    if isinstance(mean, bool) or not isinstance(mean, (int, float)):
        raise UserInputError("metric is not a number", field=where, value=mean)
    if std is not None and (isinstance(std, bool) or not isinstance(std, (int, float))):
        raise UserInputError("metric std is not a number", field=where, value=std)
    return float(mean), (None if std is None else float(std))


def _validate(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``methods`` mapping of a one-scenario results dict."""
    methods = results.get("methods") if isinstance(results, Mapping) else None
    if not isinstance(methods, Mapping) or not methods:
        raise UserInputError("results need a non-empty 'methods' mapping", field="methods")
    for name, entry in methods.items():
        if not isinstance(entry, Mapping):
            raise UserInputError("each method's results must be a mapping", field=f"methods.{name}")
    return {str(k): dict(v) for k, v in methods.items()}


def scenario_views(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Both input layouts as a list of one-scenario dicts ``{"scenario", "methods"[, "sweep"]}``.

    For the benchmark layout, each method's ``summary`` becomes its metrics and its ``config`` its
    ``hyperparameters``.
    """
    if not isinstance(results, Mapping):
        raise UserInputError("results must be a mapping", field="results")
    if "scenarios" not in results:
        _validate(results)
        return [dict(results)]
    scenarios = results["scenarios"]
    if not isinstance(scenarios, Mapping) or not scenarios:
        raise UserInputError("results need a non-empty 'scenarios' mapping", field="scenarios")
    views = []
    for request, scenario in scenarios.items():
        where = f"scenarios.{request}"
        if not isinstance(scenario, Mapping) or not isinstance(scenario.get("methods"), Mapping):
            raise UserInputError("scenario lacks a 'methods' mapping", field=f"{where}.methods")
        methods: dict[str, dict[str, Any]] = {}
        for name, entry in scenario["methods"].items():
            if not isinstance(entry, Mapping) or not isinstance(entry.get("summary"), Mapping):
                raise UserInputError("method entry lacks a 'summary' mapping", field=f"{where}.methods.{name}.summary")
            flat = dict(entry["summary"])
            if isinstance(entry.get("config"), Mapping):
                flat["hyperparameters"] = dict(entry["config"])
            methods[str(name)] = flat
        title = f"forget {request}"
        if "n_forget" in scenario and "n_retain" in scenario:
            title += f" ({scenario['n_forget']} forget / {scenario['n_retain']} retain samples)"
        view = {"scenario": title, "methods": methods}
        if isinstance(scenario.get("sweep"), Mapping) and scenario["sweep"]:
            view["sweep"] = dict(scenario["sweep"])
        _validate(view)
        views.append(view)
    return views


def _columns(methods: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Columns present in at least one method, in :data:`COLUMN_ORDER`."""
    return [c for c in COLUMN_ORDER if any(c in m for m in methods.values())]


# ------------------------------------------------------------------------------------------ markdown


def best_methods(results: Mapping[str, Any]) -> dict[str, set[str]]:
    """Names of the best method(s) per column of a one-scenario dict (ties share the mark)."""
    methods = _validate(results)
    reference = methods.get(RETRAIN)
    best: dict[str, set[str]] = {}
    for column in _columns(methods):
        scores: dict[str, float] = {}
        for name, entry in methods.items():
            if name in REFERENCE_ROWS or column not in entry:
                continue
            mean, _ = _stat(entry[column], f"methods.{name}.{column}")
            if not math.isfinite(mean):
                continue
            if column in GAP_TO_RETRAIN_COLUMNS:
                if reference is not None and column in reference:
                    ref, _ = _stat(reference[column], f"methods.{RETRAIN}.{column}")
                    if math.isfinite(ref):
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
    elif column in ("seconds_ratio_to_retrain", "LiRA_auc", "LiRA_tpr_at_fpr_0.01"):
        digits = 3
    else:
        digits = 2
    return mean_std_cell(mean, std, digits=digits)


def _row_order(methods: Mapping[str, Any]) -> list[str]:
    return [n for n in REFERENCE_ROWS if n in methods] + [n for n in methods if n not in REFERENCE_ROWS]


def _markdown_rows(methods: Mapping[str, Any], columns: Sequence[str], headers: Mapping[str, str],
                   cell: Callable[[str, str], str], labels: Mapping[str, str]) -> list[str]:
    """A markdown table: one row per method (in :func:`_row_order`), ``cell(name, column)`` for the
    values a method has and an em dash for those it lacks."""
    lines = ["| Method | " + " | ".join(headers[c] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for name in _row_order(methods):
        cells = [cell(name, column) if column in methods[name] else "—" for column in columns]
        lines.append(f"| {escape_markdown_cell(labels.get(name, name))} | " + " | ".join(cells) + " |")
    return lines


def _table(view: Mapping[str, Any]) -> list[str]:
    methods = _validate(view)
    columns = _columns(methods)
    best = best_methods(view)
    reference = methods.get(RETRAIN)

    def cell(name: str, column: str) -> str:
        mean, std = _stat(methods[name][column], f"methods.{name}.{column}")
        text = _format(column, mean, std)
        if (name != RETRAIN and column in GAP_TO_RETRAIN_COLUMNS and reference is not None
                and column in reference and math.isfinite(mean)):
            ref, _ = _stat(reference[column], f"methods.{RETRAIN}.{column}")
            if math.isfinite(ref):
                gap = abs(mean - ref)
                text += f" ({gap:.3f})" if column.startswith("LiRA") else f" ({gap:.2f})"
        return f"**{text}**" if name in best.get(column, set()) else text

    return _markdown_rows(methods, columns, HEADERS, cell,
                          {RETRAIN: "retrain (gold standard)", ORIGINAL: "original (before unlearning)"})


def best_honesty(results: Mapping[str, Any]) -> dict[str, set[str]]:
    """Names of the best unlearning method(s) per honesty column of a one-scenario dict (:data:`HONESTY_BEST`)."""
    methods = _validate(results)
    best: dict[str, set[str]] = {}
    for column, choose in HONESTY_BEST.items():
        scores = {}
        for name, entry in methods.items():
            if name in REFERENCE_ROWS or column not in entry:
                continue
            mean, _ = _stat(entry[column], f"methods.{name}.{column}")
            if math.isfinite(mean):
                scores[name] = mean
        if scores:
            top = choose(scores.values())
            best[column] = {n for n, v in scores.items() if math.isclose(v, top, rel_tol=1e-9, abs_tol=1e-12)}
    return best


def _honesty_table(view: Mapping[str, Any]) -> list[str]:
    """The honesty table of one scenario (empty when no method has honesty metrics)."""
    methods = _validate(view)
    columns = [c for c in HONESTY_HEADERS if any(c in m for m in methods.values())]
    if not columns:
        return []
    best = best_honesty(view)

    def cell(name: str, column: str) -> str:
        text = _format(column, *_stat(methods[name][column], f"methods.{name}.{column}"))
        return f"**{text}**" if name in best.get(column, set()) else text

    # no "gold standard" here: a retrained model is the reference for forgetting, not for honesty
    return _markdown_rows(methods, columns, HONESTY_HEADERS, cell, {ORIGINAL: "original (before unlearning)"})


def _hyperparameter_lines(view: Mapping[str, Any]) -> list[str]:
    methods = _validate(view)
    sweep = view.get("sweep") or {}
    lines = []
    for name in _row_order(methods):
        params = methods[name].get("hyperparameters")
        if not isinstance(params, Mapping) or not params:
            continue
        shown = ", ".join(f"{k}={escape_markdown_cell(json.dumps(v))}" for k, v in sorted(params.items()))
        line = f"- **{escape_markdown_cell(name)}**: {shown}"
        swept = sweep.get(name) if isinstance(sweep, Mapping) else None
        if isinstance(swept, Mapping) and isinstance(swept.get("grid"), Mapping) and swept["grid"]:
            grid = "; ".join(f"{k} ∈ {escape_markdown_cell(json.dumps(v))}" for k, v in swept["grid"].items())
            line += f" — chosen by lowest Avg.Gap from {grid}"
            if "selection_seed" in swept:
                line += f" on selection seed {swept['selection_seed']}"
        lines.append(line)
    return lines


def render_results_markdown(results: Mapping[str, Any]) -> str:
    """The markdown of ``results.md`` for either input layout (pure: no file access)."""
    views = scenario_views(results)
    spec = results.get("spec") if isinstance(results.get("spec"), Mapping) else None
    if spec is not None:
        model = spec.get("model", {})
        model_name = model.get("name") if isinstance(model, Mapping) else model
        title = f"# Unlearning benchmark: {escape_markdown_cell(str(spec.get('dataset', '?')))}, model {model_name}"
    else:
        title = f"# Unlearning results: {escape_markdown_cell(str(views[0].get('scenario', 'unlearning benchmark')))}"
    lines = [title, ""]
    seeds = spec.get("seeds") if spec is not None else results.get("seeds")
    if seeds is not None:
        lines.append(f"Seeds: {escape_markdown_cell(str(list(seeds) if isinstance(seeds, (list, tuple)) else seeds))}. "
                     "Values are mean ± sample standard deviation over seeds.")
    else:
        lines.append("Values are mean ± sample standard deviation over seeds where several were run.")
    if spec is not None and spec.get("sweep"):
        lines.append("Hyper-parameters were chosen by a grid search on a separate selection seed that is not reported.")
    if results.get("command"):
        lines.append(f"Command: `{escape_markdown_cell(str(results['command']))}`")
    lines.append(
        "Bold marks the best unlearning method per column; for UA, RA, TA, MIA (and LiRA) that is the value closest "
        "to retraining, whose gap in percentage points is in parentheses. Avg.Gap = mean |metric - retrain| over "
        "UA, RA, TA, MIA; lower is better. Rows without a retrain reference mark the highest RA/TA only."
    )
    for view in views:
        if spec is not None or len(views) > 1:
            lines += ["", f"## {escape_markdown_cell(str(view.get('scenario', '')))}"]
        lines += ["", *_table(view)]
        honesty = _honesty_table(view)
        if honesty:
            settings = results.get("honesty") if isinstance(results.get("honesty"), Mapping) else {}
            target = settings.get("false_abstention_target")
            share = f"{100 * target:g} %" if isinstance(target, (int, float)) else "a set share"
            lines += ["", f"Honesty on the forget set (max-softmax threshold abstaining on {share} of held-out "
                      "retained-class images; abstain + lie + recall = 100):", "", *honesty]
        params = _hyperparameter_lines(view)
        if params:
            lines += ["", "Hyper-parameters:", "", *params]
    notes = results.get("notes")
    if notes:
        lines += ["", "## Notes", ""]
        lines += [f"- {escape_markdown_cell(str(n))}" for n in (notes if isinstance(notes, list) else [notes])]
    return "\n".join(lines) + "\n"


def write_results_markdown(results: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write :func:`render_results_markdown` to ``path`` atomically."""
    target = Path(path)
    atomic_write_bytes(target, render_results_markdown(results).encode("utf-8"))
    return target


# ------------------------------------------------------------------------------------------ plot


def tradeoff_points(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Plot coordinates per method of a one-scenario dict (pure).

    Returns:
        One dict per method: ``name``, ``forgetting_gap`` (pp), ``utility`` (%), ``utility_std``,
        ``cost_ratio`` (``None`` when unknown) and ``utility_key`` (``TA_remaining`` or ``TA``).

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


def _draw_panel(axes: Any, points: list[dict[str, Any]], title: str, cmap: Any) -> None:
    ordered = sorted(points, key=lambda p: (p["name"] not in REFERENCE_ROWS, p["name"]))
    for index, point in enumerate(ordered):
        ratio = point["cost_ratio"]
        known_cost = ratio is not None and math.isfinite(ratio)
        area = 60.0 + 600.0 * min(ratio, 2.0) if known_cost else 60.0
        marker, colour = {RETRAIN: ("*", "black"), ORIGINAL: ("X", "grey")}.get(point["name"],
                                                                               ("o", cmap(index % 10)))
        axes.scatter(point["forgetting_gap"], point["utility"], s=area, marker=marker, color=colour, alpha=0.75,
                     edgecolors="black", linewidths=0.5, zorder=3)
        if point["utility_std"]:
            axes.errorbar(point["forgetting_gap"], point["utility"], yerr=point["utility_std"], fmt="none",
                          ecolor="grey", elinewidth=0.8, capsize=2, zorder=2)
        cost = f" ×{ratio:.2f}" if known_cost else ""
        axes.annotate(f"{point['name']}{cost}", (point["forgetting_gap"], point["utility"]),
                      textcoords="offset points", xytext=(6, 6) if index % 2 == 0 else (6, -12), fontsize=8)
    utility_key = points[0]["utility_key"]
    # symlog: linear below 1 pp (where good methods differ), logarithmic above (the original model sits
    # near 100 pp and would otherwise squeeze every method onto the retrain star)
    axes.set_xscale("symlog", linthresh=1.0)
    axes.set_xlabel("forgetting gap to retrain: (|ΔUA| + |ΔMIA|) / 2 (pp, symlog)")
    axes.set_ylabel("TA on remaining classes (%)" if utility_key == "TA_remaining" else "TA (%)")
    axes.set_title(title, fontsize=9)
    axes.text(0.99, 0.01, "marker area ∝ time / retrain (×value)", transform=axes.transAxes, ha="right",
              va="bottom", fontsize=7, color="grey")
    axes.grid(True, alpha=0.3)
    axes.margins(x=0.1, y=0.1)
    axes.set_xlim(left=-0.2)


def tradeoff_figure(results: Mapping[str, Any]) -> Any:
    """The forgetting-gap / utility / cost plot as a matplotlib ``Figure`` (Agg canvas), one panel
    (axes) per scenario, one scatter marker per method at its :func:`tradeoff_points` coordinates."""
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    views = scenario_views(results)
    panels = [(tradeoff_points(view), str(view.get("scenario", ""))) for view in views]
    figure = Figure(figsize=(6.5 * len(panels), 5.0))
    FigureCanvasAgg(figure)
    cmap = colormaps["tab10"]
    for index, (points, title) in enumerate(panels):
        _draw_panel(figure.add_subplot(1, len(panels), index + 1), points, title, cmap)
    figure.tight_layout()
    return figure


def plot_tradeoff(results: Mapping[str, Any], path: str | os.PathLike[str], *, dpi: int = 150) -> Path:
    """Write :func:`tradeoff_figure` as a PNG."""
    figure = tradeoff_figure(results)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}.png")
    figure.savefig(tmp, dpi=dpi)
    os.replace(tmp, target)
    return target


# ------------------------------------------------------------------------------------------ files


def write_report(results: Mapping[str, Any], out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``results.md`` and, when every scenario has a retrain row, ``tradeoff.png`` into ``out_dir``."""
    directory = Path(out_dir)
    written = {"markdown": write_results_markdown(results, directory / "results.md")}
    if all(RETRAIN in view["methods"] for view in scenario_views(results)):
        written["plot"] = plot_tradeoff(results, directory / "tradeoff.png")
    else:
        logger.warning("a scenario has no retrain row: the trade-off plot is skipped")
    return written


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``results.json`` (either layout) with clear errors for missing or invalid files."""
    file = Path(path)
    try:
        payload = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserInputError("results file does not exist", file=file) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserInputError(f"results file is not valid JSON: {err}", file=file) from None
    try:
        scenario_views(payload)
    except UserInputError as err:
        raise UserInputError(err.message, file=file, field=err.field) from None
    return payload

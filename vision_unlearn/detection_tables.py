"""Tables of the detector benchmark: per-seed rows -> per (request, method) summary -> Markdown and a figure.

Membership columns: the loss-threshold AUC (``mia_auc``) and the per-image reference-calibrated AUC
(``calibrated_mia_auc``, :mod:`vision_unlearn.metrics.detection_membership`) side by side; both are
reported for image and patient requests only ("n/a" for class requests, see
:mod:`vision_unlearn.detection_eval`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_output

SUMMARY_COLUMNS = ("forget_ap50", "forget_ap50_95", "retain_map50", "retain_map50_95", "forget_recall",
                   "misattribution_rate", "mia_auc", "mia_auc_ci_low", "mia_auc_ci_high", "calibrated_mia_auc",
                   "calibrated_mia_auc_ci_low", "calibrated_mia_auc_ci_high", "seconds", "time_ratio",
                   "cpu_seconds", "cpu_time_ratio", "gap_retain_map50", "gap_mia_auc", "reference_retain_map50_spread")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def summarise_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, method): every column's mean over seeds, its standard deviation and its value per seed.

    Rows of one seed are averaged first (several reference retrains), so each seed weighs the same.
    ``COLUMN_by_seed`` maps the seed (as a string) to that seed's value.
    """
    groups: dict[tuple[str, str], dict[int, list[Mapping[str, Any]]]] = {}
    for row in rows:
        groups.setdefault((str(row["scenario"]), str(row["method"])), {}).setdefault(int(row["seed"]), []).append(row)
    summary = []
    for (scenario, method), by_seed in groups.items():
        entry: dict[str, Any] = {"scenario": scenario, "method": method, "seeds": len(by_seed)}
        for column in SUMMARY_COLUMNS:
            per_seed = {}
            for seed, members in sorted(by_seed.items()):
                values = np.array([_number(m.get(column)) for m in members])
                values = values[np.isfinite(values)]
                per_seed[str(seed)] = float(values.mean()) if values.size else float("nan")
            finite = np.array([v for v in per_seed.values() if math.isfinite(v)])
            entry[column] = float(finite.mean()) if finite.size else float("nan")
            entry[f"{column}_std"] = float(finite.std()) if finite.size > 1 else 0.0
            entry[f"{column}_by_seed"] = per_seed
        summary.append(entry)
    return summary


def merge_results(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Rows of several ``results.json`` (e.g. one process per seed) as one results dict.

    Raises:
        UserInputError: a file that is missing or not a detector benchmark's results, or two files
            holding the same (seed, scenario, method) cell.
    """
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], str] = {}
    commands, configs = [], []
    for path in paths:
        try:
            results = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise UserInputError(f"cannot read benchmark results: {err}", field="results", value=str(path)) from err
        if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
            raise UserInputError("not a detector benchmark's results.json (no 'rows')", field="rows", value=str(path))
        for row in results["rows"]:
            key = (row.get("seed"), row.get("scenario"), row.get("method"), row.get("retrain_seed"))
            if key in seen:
                raise UserInputError(f"the cell seed {key[0]} {key[1]} {key[2]} is also in {seen[key]}",
                                     field="rows", value=str(path))
            seen[key] = str(path)
            rows.append(row)
        commands.append(results.get("command"))
        configs.append(results.get("config"))
    return {"commands": commands, "configs": configs, "rows": rows, "summary": summarise_rows(rows)}


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if not isinstance(value, (int, float)) or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(low: Any, high: Any) -> str:
    low, high = _number(low), _number(high)
    return f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else ""


def _cell(entry: Mapping[str, Any], column: str, digits: int = 3, interval: bool = False,
          seed_digits: int = 2) -> str:
    """``mean`` or, over several seeds, ``mean (seed a / seed b / ...)``; the MIA AUC with its DeLong
    95 % interval (the interval per seed, and the mean of each end for one seed)."""
    by_seed = entry.get(f"{column}_by_seed") or {}
    ci = (lambda key: _interval(entry.get(f"{column}_ci_low_by_seed", {}).get(key),
                                entry.get(f"{column}_ci_high_by_seed", {}).get(key))) if interval else (lambda key: "")
    if len(by_seed) <= 1:
        only = next(iter(by_seed), None)
        return _fmt(entry.get(column), digits) + (ci(only) if only is not None else "")
    parts = " / ".join(f"{_fmt(v, seed_digits)}{ci(k)}" for k, v in by_seed.items())
    return f"{_fmt(entry.get(column), digits)} ({parts})"


def results_markdown(summary: Sequence[Mapping[str, Any]], command: str | None) -> str:
    """One table per request: mean over seeds, then each seed's value in brackets (seed order).

    ``retain gap`` is retain mAP50 minus the reference's (the mean of the request's retrained
    detectors), so 0.01 is one point.
    """
    lines = []
    if command:
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    for scenario in dict.fromkeys(s["scenario"] for s in summary):
        entries = [s for s in summary if s["scenario"] == scenario]
        seeds = next(iter(entries))["retain_map50_by_seed"].keys()
        lines += [f"### `{scenario}`", "", f"Seeds: {', '.join(seeds)}.", "",
                  "| method | forget AP50 | retain mAP50 | retain gap to retrain | forget recall | misattribution "
                  "| loss MIA AUC [95 % CI] | calibrated MIA AUC [95 % CI] | time / retrain | CPU time / retrain |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for s in entries:
            gap = "reference" if s["method"] == "retrain" else _cell(s, "gap_retain_map50", seed_digits=3)
            lines.append(f"| {s['method']} | {_cell(s, 'forget_ap50')} | {_cell(s, 'retain_map50')} | {gap} | "
                         f"{_cell(s, 'forget_recall')} | {_cell(s, 'misattribution_rate')} | "
                         f"{_cell(s, 'mia_auc', interval=True)} | {_cell(s, 'calibrated_mia_auc', interval=True)} | "
                         f"{_cell(s, 'time_ratio')} | "
                         f"{_cell(s, 'cpu_time_ratio')} |")
        spread = [s for s in entries if s["method"] == "retrain"]
        if spread and any(math.isfinite(v) for v in spread[0]["reference_retain_map50_spread_by_seed"].values()):
            per_seed = ", ".join(f"seed {k}: {_fmt(v, 3)}" for k, v in
                                 spread[0]["reference_retain_map50_spread_by_seed"].items())
            lines += ["", f"The reference is the mean of several retrained detectors per seed; their retain mAP50 "
                          f"spread (max - min): {per_seed}."]
        lines += _paired_lines(entries)
        lines.append("")
    return "\n".join(lines)


PAIRED_COLUMNS = (("retain_map50", "retain mAP50"), ("forget_ap50", "forget AP50"), ("forget_recall", "forget recall"),
                  ("mia_auc", "loss MIA AUC"), ("calibrated_mia_auc", "calibrated MIA AUC"))
"""Columns whose difference to the retrained reference gets a paired interval over seeds."""


def paired_to_retrain(entries: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per method (the original included) and column: the mean over seeds of ``method - retrain`` and its
    paired Student-t 95 % interval (:func:`vision_unlearn.metrics.paired.paired_interval`).

    Only seeds where both values are finite count; a column with fewer than two such seeds is left out.
    """
    from vision_unlearn.metrics.paired import paired_interval

    reference = next((e for e in entries if e["method"] == "retrain"), None)
    if reference is None:
        return {}
    table: dict[str, dict[str, dict[str, float]]] = {}
    for entry in entries:
        if entry["method"] == "retrain":
            continue
        for column, _ in PAIRED_COLUMNS:
            mine, theirs = entry.get(f"{column}_by_seed") or {}, reference.get(f"{column}_by_seed") or {}
            seeds = [k for k in mine if k in theirs and math.isfinite(_number(mine[k]))
                     and math.isfinite(_number(theirs[k]))]
            if len(seeds) >= 2:
                table.setdefault(entry["method"], {})[column] = paired_interval(
                    [_number(mine[k]) for k in seeds], [_number(theirs[k]) for k in seeds])
    return table


def _paired_lines(entries: Sequence[Mapping[str, Any]]) -> list[str]:
    table = paired_to_retrain(entries)
    columns = [(c, title) for c, title in PAIRED_COLUMNS if any(c in row for row in table.values())]
    if not table or not columns:
        return []
    n = max(v["n"] for row in table.values() for v in row.values())
    lines = ["", f"Difference to retrain, paired over {n} seeds: mean [95 % t-interval]; an interval that holds 0 "
                 "does not tell the method from retraining on that column.", "",
             "| method | " + " | ".join(f"{title} − retrain" for _, title in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for method, row in table.items():
        cells = [f"{row[c]['mean']:+.3f} [{row[c]['low']:+.3f}, {row[c]['high']:+.3f}]" if c in row else "n/a"
                 for c, _ in columns]
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def plot_summary(summary: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Forget AP50 / retain mAP50 / both MIA AUCs (0 where not reported) per method and scenario as grouped bars."""
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(s["scenario"] for s in summary))
    metrics = (("forget_ap50", "forget AP50"), ("retain_map50", "retain mAP50"), ("mia_auc", "loss MIA AUC"),
               ("calibrated_mia_auc", "calibrated MIA AUC"))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        entries = [s for s in summary if s["scenario"] == scenario]
        x = np.arange(len(entries))
        for j, (key, label) in enumerate(metrics):
            values = [s[key] if math.isfinite(s[key]) else 0.0 for s in entries]
            errors = [s.get(f"{key}_std", 0.0) for s in entries]
            ax.bar(x + (j - 1.5) * 0.2, values, 0.2, yerr=errors, label=label)
        ax.set_xticks(x, [s["method"] for s in entries], rotation=35, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(scenario)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


TRADEOFF_MARKERS = {"original": "s", "retrain": "*"}
"""Markers of the two reference rows of the trade-off plot (methods get circles, one colour each)."""


def tradeoff_figure(summary: Sequence[Mapping[str, Any]]):
    """Forgetting against retained accuracy against cost, one panel per request.

    Each row of the summary is one marker at (forget AP50, retain mAP50), the means over seeds the
    table reports (bars: their standard deviation over seeds). Its area grows with the CPU-time ratio
    to retraining (retrain = 1), annotated as ``0.25× CPU``; the do-nothing ``original`` (square) costs
    nothing. The retrained detector (star) is the target: a dashed line marks its forget AP50, so a
    method left of the line forgot more than retraining did, right of it less; higher is better on
    the retain axis.

    Returns:
        A :class:`matplotlib.figure.Figure` (no pyplot state; save it with ``fig.savefig``).
    """
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from matplotlib.figure import Figure

    scenarios = list(dict.fromkeys(s["scenario"] for s in summary))
    methods = list(dict.fromkeys(s["method"] for s in summary))
    palette = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#ff7f0e")
    colours = {"original": "#7f7f7f", "retrain": "#000000"}
    others = [m for m in methods if m not in colours]
    colours.update({m: palette[i % len(palette)] for i, m in enumerate(others)})
    fig = Figure(figsize=(5.6 * len(scenarios), 4.8), layout="constrained")
    axes = fig.subplots(1, len(scenarios), squeeze=False)[0]
    for ax, scenario in zip(axes, scenarios):
        entries = [s for s in summary if s["scenario"] == scenario]
        retrain = next((s for s in entries if s["method"] == "retrain"), None)
        if retrain is not None and math.isfinite(_number(retrain.get("forget_ap50"))):
            ax.axvline(retrain["forget_ap50"], color="black", linestyle="--", linewidth=0.8, zorder=0)
        for s in entries:
            x, y = _number(s.get("forget_ap50")), _number(s.get("retain_map50"))
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            method = s["method"]
            ratio = 0.0 if method == "original" else 1.0 if method == "retrain" else _number(s.get("cpu_time_ratio"))
            size = 40.0 + 260.0 * min(ratio, 2.0) if math.isfinite(ratio) else 40.0
            ax.errorbar(x, y, xerr=s.get("forget_ap50_std", 0.0) or None, yerr=s.get("retain_map50_std", 0.0) or None,
                        fmt="none", ecolor=colours[method], elinewidth=0.8, alpha=0.6)
            ax.scatter([x], [y], s=size, c=colours[method], marker=TRADEOFF_MARKERS.get(method, "o"),
                       edgecolors="white", linewidths=0.8, label=method, zorder=3)
            cost = "no cost" if method == "original" else f"{ratio:.2g}× CPU" if math.isfinite(ratio) else "CPU n/a"
            ax.annotate(f"{method}\n{cost}", (x, y), xytext=(7, 5), textcoords="offset points", fontsize=8)
        ax.set_xlim(-0.05, 1.05)
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("forget AP50 (IoU 0.5; 0 = forgotten, dashed = retrain)")
        ax.set_ylabel("retain mAP50 (IoU 0.5; higher = kept)")
        seeds = entries[0].get("seeds", 1) if entries else 0
        ax.set_title(f"{scenario} ({seeds} seed{'s' if seeds != 1 else ''})")
        ax.grid(alpha=0.3)
        if ax.collections:
            ax.legend(fontsize=8, loc="lower right", markerscale=0.6, title="marker area: CPU time / retrain",
                      title_fontsize=7)
    return fig


def plot_tradeoff(summary: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """:func:`tradeoff_figure` written to ``path`` (PNG, atomically)."""
    fig = tradeoff_figure(summary)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path


def write_merged_results(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Join several detector benchmark ``results.json`` (:func:`merge_results`) into ``out_dir``: the
    merged ``results.json``, ``results.md`` (with every run's command), ``results.png`` and
    ``tradeoff.png`` (:func:`tradeoff_figure`).

    Example (two processes, one seed each)::

        write_merged_results(["runs/s0/results.json", "runs/s1/results.json"], "runs/both")

    Returns:
        The merged results dict (``commands``, ``configs``, ``rows``, ``summary``).

    Raises:
        UserInputError: see :func:`merge_results`.
    """
    from toolkit_core.utils import atomic_write_text

    merged = merge_results(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "results.json", json.dumps(merged, indent=2, default=str, allow_nan=True) + "\n")
    commands = "\n".join(c for c in merged["commands"] if c)
    atomic_write_text(out / "results.md", results_markdown(merged["summary"], commands or None))
    if merged["summary"]:
        plot_summary(merged["summary"], out / "results.png")
        plot_tradeoff(merged["summary"], out / "tradeoff.png")
    return merged

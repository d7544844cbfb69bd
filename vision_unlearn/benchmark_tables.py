"""``evidence.md``: the classifier benchmark's tables of forgetting evidence with paired intervals.

Per scenario, one table of mean ± std over seeds (Avg.Gap, UA, TA, MIA, LiRA, relearning steps, JS
distances, CPU time ratio) for the references, the do-nothing model, every method and every
weights-only row, and one table of the paired 95 % interval of each row minus the 2nd retrain run
(:func:`paired_to_floor`). A method is called best on Avg.Gap only where its paired interval to every
other method lies below zero (:func:`~vision_unlearn.metrics.paired.clearly_best`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from toolkit_core.table_cells import mean_std_cell

PAIRED_KEYS = ("avg_gap", "UA", "TA", "TA_remaining", "MIA", "LiRA_auc", "relearn_steps", "JS_forget", "JS_test")
"""Metrics whose paired difference to the 2nd retrain run is reported."""

COLUMNS = {
    "avg_gap": "Avg.Gap", "UA": "UA", "TA": "TA", "TA_remaining": "TA rest", "MIA": "MIA",
    "LiRA_auc": "LiRA AUC", "LiRA_tpr_at_fpr_0.01": "LiRA TPR@1%", "relearn_steps": "relearn steps",
    "JS_forget": "JS forget", "JS_test": "JS test", "cpu_ratio_to_retrain": "CPU/retrain",
}
"""Columns of the evidence table (percentages, except steps and ratios; JS distances x100)."""

REFERENCE_ROWS = ("retrain", "retrain (2nd run)", "original")


def paired_to_floor(per_method: Mapping[str, Sequence[Mapping[str, Any]]], floor: str,
                    keys: Sequence[str] = PAIRED_KEYS, level: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
    """``{row: {key: paired_interval}}`` of every row minus the ``floor`` row, paired by ``seed``.

    Rows without the floor (one reference retrain) give ``{}``; a key missing in a row is skipped.
    """
    from vision_unlearn.metrics.paired import paired_interval

    reference = {run["seed"]: run for run in per_method.get(floor, [])}
    if not reference:
        return {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, runs in per_method.items():
        if name == floor:
            continue
        pairs = [(run, reference[run["seed"]]) for run in runs if run.get("seed") in reference]
        out[name] = {key: paired_interval([a[key] for a, _ in pairs], [b[key] for _, b in pairs], level)
                     for key in keys if pairs and all(key in a and key in b for a, b in pairs)}
    return out


def clearly_best_on(scenario: Mapping[str, Any], key: str = "avg_gap") -> str | None:
    """The method (not a reference or weights-only row) singled out as best on ``key`` by paired intervals."""
    from vision_unlearn.metrics.paired import clearly_best

    per_seed = {}
    for name, entry in scenario.get("methods", {}).items():
        if name in REFERENCE_ROWS:
            continue
        per_seed[name] = {run["seed"]: run[key] for run in entry["per_seed"] if key in run}
    common = set.intersection(*(set(v) for v in per_seed.values())) if per_seed else set()
    if len(per_seed) < 2 or len(common) < 2:
        return None
    return clearly_best({name: [values[s] for s in sorted(common)] for name, values in per_seed.items()})


def _cell(summary: Mapping[str, Any], key: str) -> str:
    if key not in summary:
        return "–"
    value = summary[key]
    digits = 3 if key == "cpu_ratio_to_retrain" else 1 if key == "relearn_steps" else 2
    spread = value["std"] if value.get("n", 2) > 1 else None  # one seed has no spread to show
    return mean_std_cell(value["mean"], spread, digits=digits, missing="–")


def _interval(value: Mapping[str, float] | None) -> str:
    if not value:
        return "–"
    low, high = value["low"], value["high"]
    mark = "" if not (math.isfinite(low) and math.isfinite(high)) or low <= 0.0 <= high else " *"
    return f"{value['mean']:+.2f} [{low:+.2f}, {high:+.2f}]{mark}"


def scenario_markdown(request: str, scenario: Mapping[str, Any]) -> str:
    """The two tables of one scenario."""
    rows = {**scenario.get("methods", {}), **scenario.get("extra_rows", {})}
    order = [n for n in ("retrain", "retrain (2nd run)", "original") if n in rows]
    order += [n for n in scenario.get("methods", {}) if n not in order]
    order = [x for n in order for x in (n, *(e for e in scenario.get("extra_rows", {})
                                            if e.startswith(n + " (weights"))) if x in rows]
    columns = [k for k in COLUMNS if any(k in rows[n]["summary"] for n in order)]
    if scenario.get("classwise"):
        columns = [k for k in columns if k != "TA"]
    lines = [f"### Forget `{request}` ({scenario['n_forget']} forget / {scenario['n_retain']} retain, "
             f"{scenario['seeds_done']} seed(s); mean ± std)", "",
             "| row | " + " | ".join(COLUMNS[k] for k in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for name in order:
        lines.append(f"| {name} | " + " | ".join(_cell(rows[name]["summary"], k) for k in columns) + " |")
    paired = scenario.get("paired_to_floor", {})
    if paired:
        keys = [k for k in ("avg_gap", "LiRA_auc", "relearn_steps", "JS_forget", "JS_test", "UA")
                if any(k in v for v in paired.values())]
        lines += ["", "Paired 95 % interval of each row minus the 2nd retrain run, over seeds (`*`: excludes 0):",
                  "", "| row | " + " | ".join("Δ " + COLUMNS[k] for k in keys) + " |", "|---|" + "---|" * len(keys)]
        for name in order:
            if name in paired:
                lines.append(f"| {name} | " + " | ".join(_interval(paired[name].get(k)) for k in keys) + " |")
    best = clearly_best_on(scenario)
    lines += ["", f"Best Avg.Gap by paired 95 % intervals: **{best}**." if best else
              "No method has the lowest Avg.Gap by paired 95 % intervals against every other."]
    return "\n".join(lines) + "\n"


def evidence_markdown(results: Mapping[str, Any]) -> str:
    """``evidence.md`` of a benchmark's ``results.json``."""
    lira = results.get("lira", {})
    head = [f"# Forgetting evidence: {results.get('spec', {}).get('dataset', '?')}", ""]
    if results.get("command"):
        head += [f"Command: `{results['command']}`", ""]
    head += ["Avg.Gap against the first retrained model; `retrain (2nd run)` is an independent retrain measured "
             "the same way (the noise floor). LiRA: offline, "
             + (f"{lira['shadows']} shadow models" if lira.get("shadows") else "not run")
             + ", forget vs test samples, AUC and TPR in %. Relearn steps: SGD steps of fine-tuning on the forget "
             "set until its loss is the original model's (cap 200). JS: Jensen–Shannon distance (x100) of the "
             "softmax outputs to the first retrained model's. `(weights only)`: the same method with its "
             "test-time hooks off.", ""]
    body = [scenario_markdown(request, scenario) for request, scenario in results.get("scenarios", {}).items()]
    return "\n".join(head) + "\n".join(body)

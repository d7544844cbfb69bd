"""The text of an evaluation report: ``report.md`` of ``rfo-bench eval``, the figure captions, and how
numbers are printed.

Pure formatting of the report dictionary :func:`rfo_bench.evaluate.evaluate` returns: a header saying
what made it (toolkit version, commit, seed, bootstrap, command), headline metrics with their
intervals, COCO numbers, per category, critical strata, the FROC curve and the figures with captions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from rfo_bench.metrics.froc import VARIANT_LABELS


def format_seconds(seconds: float | None) -> str:
    """A duration as people read it: ``0.42 s``, ``12.3 s``, ``1135 s`` -> ``18.9 min``, ``2.1 h``."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 100:
        return f"{seconds:.1f} s"
    if seconds < 600:
        return f"{seconds:.0f} s"
    if seconds < 3 * 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def format_estimate(values: Sequence[float], digits: int = 3) -> str:
    """Mean ± sample standard deviation over seeds or replicates; the value alone when there is one (a
    spread of one value is not 0, it is unknown)."""
    finite = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return "n/a"
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return f"{mean:.{digits}f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _ci(report: Mapping[str, Any], key: str, name: str) -> str:
    interval = (report.get(key) or {}).get(name)
    if not interval or interval[0] is None:
        return ""
    return f"[{_fmt(interval[0])}, {_fmt(interval[1])}]"


def header_lines(report: Mapping[str, Any]) -> list[str]:
    """What made the report: toolkit version and commit, seed and bootstrap, the command."""
    run = report.get("run")
    if not run:
        return []
    commit = run.get("commit")
    boot_info = report.get("bootstrap")
    replicates = run.get("bootstrap", 0)
    if replicates and boot_info:
        resampling = (f"{replicates} bootstrap replicate{'s' * (replicates != 1)} over {boot_info['unit']}s, "
                      f"seed {run.get('seed')}")
    else:
        resampling = "no bootstrap (no intervals)"
    lines = [f"rfo-toolkit {run.get('toolkit_version')}, commit {commit[:12] if commit else 'unknown (not a checkout)'};"
             f" {resampling}."]
    if run.get("command"):
        lines.append(f"Command: `{run['command']}`")
    return lines


def figure_captions(report: Mapping[str, Any], files: Mapping[str, str], *, max_examples: int = 8) -> dict[str, str]:
    """A caption per written figure, saying what it shows (``files``: kind -> file name)."""
    froc = report.get("froc") or {}
    boot_info = report.get("bootstrap")
    key = next((k for k in report if k.startswith("ci") and isinstance(report[k], dict)), "ci95")
    captions = {}
    if "froc" in files:
        band = (f" The shaded band is the {key[2:]}% bootstrap interval of each sensitivity ({boot_info['replicates']}"
                f" replicates over {boot_info['unit']}s)." if boot_info and froc.get("sensitivity_ci") else "")
        captions[files["froc"]] = (
            "FROC: sensitivity (fraction of annotated RFOs with a detection centre inside) against false "
            "positives per image, every image counted. Dots mark the thresholds "
            f"{', '.join(f'{t:g}' for t in froc.get('fps_per_image', []))} whose mean is the FROC score "
            f"({VARIANT_LABELS.get(froc.get('variant', ''), froc.get('variant'))}); the thin line follows each "
            f"detection in score order.{band} Further panels: critical (never-event) vs non-critical RFOs, and "
            "each class with its own detections.")
    if "pr_curves" in files:
        captions[files["pr_curves"]] = ("Precision against recall per class at IoU 0.5 (COCO interpolated "
                                        "precision); the legend gives each class's objects and AP50.")
    if "errors" in files:
        captions[files["errors"]] = (
            f"The worst errors at IoU 0.5, one image per panel (up to {max_examples}): red = false positive "
            "with its score, yellow = missed object with its class.")
    return captions


def report_markdown(report: Mapping[str, Any]) -> str:
    """A markdown summary of a report: header, headline metrics with intervals, COCO numbers, per
    category, FROC, and the figures with their captions."""
    key = next((k for k in report if k.startswith("ci") and isinstance(report[k], dict)), "ci95")
    level = key[2:]
    counts = report["counts"]
    lines = ["# RFO detection evaluation", "", *header_lines(report), "",
             f"Ground truth: `{report['ground_truth']}` ({counts['images']} images, {counts['positive_images']} "
             f"with RFO, {counts['objects']} objects). Predictions: `{report['predictions']}` "
             f"({counts['predictions']}).", ""]
    has_intervals = any(v for v in (report.get(key) or {}).values())
    lines += [f"| metric | value | {level}% CI |", "|---|---|---|"] if has_intervals else \
        ["| metric | value |", "|---|---|"]
    coco = report.get("coco") or {}
    froc = report.get("froc") or {}
    for name, value in (("AP50", coco.get("AP50")), ("AP", coco.get("AP")), ("FROC", froc.get("score")),
                        ("AUROC", report.get("auroc"))):
        interval = _ci(report, key, name.lower() if name in ("FROC", "AUROC") else name)
        lines.append(f"| {name} | {_fmt(value)} | {interval} |" if has_intervals else f"| {name} | {_fmt(value)} |")
    boot_info = report.get("bootstrap")
    if boot_info:
        lines += ["", f"Intervals: {boot_info['method']} bootstrap, {boot_info['replicates']} replicates over "
                      f"{boot_info['unit']}s, seed {boot_info['seed']}."]
    if coco:
        lines += ["", f"## COCO bbox ({report.get('coco_backend')})", "", "| " + " | ".join(coco) + " |",
                  "|" + "---|" * len(coco), "| " + " | ".join(_fmt(v) for v in coco.values()) + " |"]
    if report.get("per_category"):
        froc_by_class = report.get("froc_per_category") or {}
        lines += ["", "## Per category", "", "| category | objects | AP | AP50 | FROC |", "|---|---|---|---|---|"]
        for name, values in report["per_category"].items():
            class_froc = (froc_by_class.get(name) or {}).get("score")
            lines.append(f"| {name} | {values['num_objects']} | {_fmt(values['AP'])} | {_fmt(values['AP50'])} | "
                         f"{_fmt(class_froc)} |")
    if report.get("strata"):
        lines += ["", "## Critical vs non-critical", "", "| stratum | AP | AP50 |", "|---|---|---|"]
        for name, values in report["strata"].items():
            lines.append(f"| {name} | {_fmt(values['AP'])} | {_fmt(values['AP50'])} |")
    if froc:
        lines += _froc_lines(report, froc, key)
    lines += ["", f"AUROC image score: {report.get('auroc_image_score')}."]
    for file, caption in (report.get("figures") or {}).items():
        lines += ["", f"![{file}]({file})", "", f"*{caption}*"]
    return "\n".join(lines) + "\n"


def _froc_lines(report: Mapping[str, Any], froc: Mapping[str, Any], key: str) -> list[str]:
    lines = ["", f"## FROC ({VARIANT_LABELS.get(froc['variant'], froc['variant'])})", "",
             "| FP / image | " + " | ".join(f"{f:g}" for f in froc["fps_per_image"]) + " | score |",
             "|---|" + "---|" * (len(froc["fps_per_image"]) + 1),
             "| sensitivity | " + " | ".join(_fmt(s) for s in froc["sensitivity"]) + f" | {_fmt(froc['score'])} |"]
    if any(b and b[0] is not None for b in froc.get("sensitivity_ci") or ()):
        lines.append(f"| {key[2:]}% CI | " + " | ".join(_ci({"b": {"i": b}}, "b", "i") for b in froc["sensitivity_ci"])
                     + f" | {_ci(report, key, 'froc')} |")
    for name, values in (report.get("froc_strata") or {}).items():
        lines.append(f"| {name.replace('_', '-')} only ({values['objects']} objects) | "
                     + " | ".join(_fmt(v) for v in values["sensitivity"]) + f" | {_fmt(values['score'])} |")
    if froc.get("reference_undefined"):
        lines += ["", "No FP/image threshold was reached; the reference script is undefined here and the final "
                      "sensitivity is reported."]
    return lines

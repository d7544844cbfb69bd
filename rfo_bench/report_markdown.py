"""The markdown summary of an evaluation report (``report.md`` of ``rfo-bench eval``).

Pure formatting of the report dictionary :func:`rfo_bench.evaluate.evaluate` returns: headline metrics
with their intervals, COCO numbers, per category, critical strata and the FROC curve.
"""

from __future__ import annotations

from typing import Any


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _ci(report: dict[str, Any], key: str, name: str) -> str:
    interval = (report.get(key) or {}).get(name)
    if not interval:
        return ""
    return f"[{_fmt(interval[0])}, {_fmt(interval[1])}]"


def report_markdown(report: dict[str, Any]) -> str:
    """A markdown summary of a report: headline metrics with intervals, COCO numbers, per category, FROC."""
    key = next((k for k in report if k.startswith("ci") and isinstance(report[k], dict)), "ci95")
    level = key[2:]
    counts = report["counts"]
    lines = [
        "# RFO detection evaluation", "",
        f"Ground truth: `{report['ground_truth']}` ({counts['images']} images, {counts['positive_images']} with RFO, "
        f"{counts['objects']} objects). Predictions: `{report['predictions']}` ({counts['predictions']}).", "",
        f"| metric | value | {level}% CI |", "|---|---|---|",
    ]
    coco = report.get("coco") or {}
    froc = report.get("froc") or {}
    for name, value in (("AP50", coco.get("AP50")), ("AP", coco.get("AP")), ("FROC", froc.get("score")),
                        ("AUROC", report.get("auroc"))):
        lines.append(f"| {name} | {_fmt(value)} | {_ci(report, key, name.lower() if name in ('FROC', 'AUROC') else name)} |")
    boot_info = report.get("bootstrap")
    if boot_info:
        lines += ["", f"Intervals: {boot_info['method']} bootstrap, {boot_info['replicates']} replicates over "
                      f"{boot_info['unit']}s, seed {boot_info['seed']}."]
    if coco:
        lines += ["", f"## COCO bbox ({report.get('coco_backend')})", "", "| " + " | ".join(coco) + " |",
                  "|" + "---|" * len(coco), "| " + " | ".join(_fmt(v) for v in coco.values()) + " |"]
    if report.get("per_category"):
        lines += ["", "## Per category", "", "| category | objects | AP | AP50 |", "|---|---|---|---|"]
        for name, values in report["per_category"].items():
            lines.append(f"| {name} | {values['num_objects']} | {_fmt(values['AP'])} | {_fmt(values['AP50'])} |")
    if report.get("strata"):
        lines += ["", "## Critical vs non-critical", "", "| stratum | AP | AP50 |", "|---|---|---|"]
        for name, values in report["strata"].items():
            lines.append(f"| {name} | {_fmt(values['AP'])} | {_fmt(values['AP50'])} |")
    if froc:
        lines += ["", f"## FROC ({froc['variant']} variant)", "",
                  "| FP / image | " + " | ".join(_fmt(f) for f in froc["fps_per_image"]) + " |",
                  "|---|" + "---|" * len(froc["fps_per_image"]),
                  "| sensitivity | " + " | ".join(_fmt(s) for s in froc["sensitivity"]) + " |"]
        for name, values in (report.get("froc_strata") or {}).items():
            lines.append(f"| {name} only ({values['objects']} objects) | "
                         + " | ".join(_fmt(v) for v in values["sensitivity"]) + " |")
        if froc.get("reference_undefined"):
            lines += ["", "No FP/image threshold was reached; the reference script is undefined here and the final "
                          "sensitivity is reported."]
    lines += ["", f"AUROC image score: {report.get('auroc_image_score')}."]
    return "\n".join(lines) + "\n"

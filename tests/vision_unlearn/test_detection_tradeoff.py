"""The detector benchmark's trade-off plot: one marker per row of the summary at the table's values
(forget AP50, retain mAP50), marker area growing with the CPU-time ratio to retraining, labelled axes."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.collections import PathCollection

from vision_unlearn.detection_tables import plot_tradeoff, results_markdown, summarise_rows, tradeoff_figure


def _row(seed: int, method: str, scenario: str, forget: float, retain: float, cpu: float | None) -> dict:
    row = {"seed": seed, "scenario": scenario, "method": method, "forget_ap50": forget, "retain_map50": retain}
    return row if cpu is None else {**row, "cpu_time_ratio": cpu}


ROWS = [
    _row(0, "original", "class:clamp", 0.91, 0.88, None),
    _row(0, "retrain", "class:clamp", 0.05, 0.86, 1.0),
    _row(0, "finetune", "class:clamp", 0.40, 0.87, 0.30),
    _row(0, "grad_ascent", "class:clamp", 0.10, 0.62, 0.05),
    _row(1, "original", "class:clamp", 0.89, 0.90, None),
    _row(1, "retrain", "class:clamp", 0.07, 0.88, 1.0),
    _row(1, "finetune", "class:clamp", 0.44, 0.85, 0.34),
    _row(1, "grad_ascent", "class:clamp", 0.12, 0.60, 0.07),
    _row(0, "original", "images:0.1", 0.95, 0.88, None),
    _row(0, "retrain", "images:0.1", 0.70, 0.86, 1.0),
    _row(0, "finetune", "images:0.1", 0.80, 0.87, 0.2),
]


def _markers(ax) -> dict[str, PathCollection]:
    return {c.get_label(): c for c in ax.collections if isinstance(c, PathCollection)}


def test_each_method_is_one_marker_at_the_tables_means_sized_by_cpu_ratio(tmp_path) -> None:
    summary = summarise_rows(ROWS)
    fig = tradeoff_figure(summary)
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["class:clamp (2 seeds)", "images:0.1 (1 seed)"]
    clamp = _markers(axes[0])
    assert set(clamp) == {"original", "retrain", "finetune", "grad_ascent"}
    table = results_markdown(summary, None)
    for entry in (s for s in summary if s["scenario"] == "class:clamp"):
        (x, y), = clamp[entry["method"]].get_offsets()
        assert (x, y) == pytest.approx((entry["forget_ap50"], entry["retain_map50"]))
        assert f"| {entry['method']} | {entry['forget_ap50']:.3f}" in table  # the value the table prints
    assert tuple(clamp["finetune"].get_offsets()[0]) == pytest.approx((0.42, 0.86))  # mean of two seeds, by hand
    sizes = {name: float(np.ravel(c.get_sizes())[0]) for name, c in clamp.items()}
    assert sizes["original"] < sizes["grad_ascent"] < sizes["finetune"] < sizes["retrain"]  # cost 0 < 0.06 < 0.32 < 1
    texts = [t.get_text() for t in axes[0].texts]
    assert "finetune\n0.32× CPU" in texts and "original\nno cost" in texts
    assert "forget AP50" in axes[0].get_xlabel() and "retain mAP50" in axes[0].get_ylabel()
    assert axes[0].get_legend() is not None
    dashed = [line for line in axes[0].lines if line.get_linestyle() == "--"]
    assert dashed and dashed[0].get_xdata()[0] == pytest.approx(0.06)  # retrain's forget AP50
    assert set(_markers(axes[1])) == {"original", "retrain", "finetune"}
    path = plot_tradeoff(summary, tmp_path / "tradeoff.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_method_gets_a_paired_interval_to_retrain_over_seeds() -> None:
    from vision_unlearn.detection_tables import paired_to_retrain, results_markdown, summarise_rows

    rows = []
    for seed, shift in ((0, 0.00), (1, 0.10), (2, -0.05)):  # seeds move every model together
        for retrain_seed, noise in ((seed, 0.01), (seed + 1000, -0.01)):
            rows.append({"seed": seed, "scenario": "images:0.1", "method": "retrain", "retrain_seed": retrain_seed,
                         "retain_map50": 0.50 + shift + noise, "mia_auc": 0.50 + noise})
        rows.append({"seed": seed, "scenario": "images:0.1", "method": "original", "retain_map50": 0.60 + shift,
                     "mia_auc": 0.80 + shift / 10})
        rows.append({"seed": seed, "scenario": "images:0.1", "method": "finetune", "retain_map50": 0.50 + shift,
                     "mia_auc": float("nan") if seed == 2 else 0.55})
    table = paired_to_retrain(summarise_rows(rows))
    original = table["original"]["retain_map50"]
    # the seeds' shared shift cancels in the pairing: +0.10 exactly, so the interval has no width
    assert abs(original["mean"] - 0.10) < 1e-9 and original["high"] - original["low"] < 1e-9 and original["n"] == 3
    assert table["original"]["mia_auc"]["low"] > 0  # the model that saw the images is told apart from retraining
    assert table["finetune"]["mia_auc"]["n"] == 2  # only seeds where both sides are finite pair up
    assert "retrain" not in table
    text = results_markdown(summarise_rows(rows), None)
    assert "paired over 3 seeds" in text and "| original | +0.100 [+0.100, +0.100]" in text

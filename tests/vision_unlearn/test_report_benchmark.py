"""results.md and the trade-off plot from a real (tiny) benchmark run on digits."""

from __future__ import annotations

from pathlib import Path

import pytest
from matplotlib.collections import PathCollection

from vision_unlearn.report import (
    best_methods,
    load_results,
    scenario_views,
    tradeoff_figure,
    tradeoff_points,
    write_report,
)


@pytest.mark.slow
def test_report_of_a_tiny_digits_benchmark(tmp_path: Path) -> None:
    from vision_unlearn.benchmark import BenchmarkSpec, run_benchmark

    spec = BenchmarkSpec(
        dataset="digits", forget=("class:3", "random:0.1"), methods=("finetune", "random_label"), seeds=(0, 1),
        original={"epochs": 2, "lr": 0.05, "schedule": "cosine", "batch_size": 64},
        method_configs={"retrain": {"epochs": 2}, "finetune": {"epochs": 1}, "random_label": {"epochs": 1}},
    )
    run_benchmark(spec, tmp_path / "bench")
    results = load_results(tmp_path / "bench" / "results.json")
    written = write_report(results, tmp_path / "report")
    text = written["markdown"].read_text()
    views = scenario_views(results)
    assert [v["scenario"].split(" (")[0] for v in views] == ["forget class:3", "forget random:0.1"]
    for view in views:
        assert {"retrain", "original", "finetune", "random_label"} <= set(view["methods"])
        assert best_methods(view)["avg_gap"] <= {"finetune", "random_label"}
    assert text.count("| retrain (gold standard) |") == 2
    assert "TA remaining classes (%)" in text  # the class-wise scenario reports it
    assert written["plot"].name == "tradeoff.png" and written["plot"].is_file()
    figure = tradeoff_figure(results)  # what the PNG shows: one panel per scenario, one marker per method
    assert [ax.get_title() for ax in figure.axes] == [v["scenario"] for v in views]
    for ax, view in zip(figure.axes, views):
        assert ax.get_xlabel().startswith("forgetting gap to retrain")
        classwise = view["scenario"].startswith("forget class:")
        assert ax.get_ylabel() == ("TA on remaining classes (%)" if classwise else "TA (%)")
        plotted = sorted(tuple(map(float, c.get_offsets()[0])) for c in ax.collections if isinstance(c, PathCollection))
        expected = sorted((p["forgetting_gap"], p["utility"]) for p in tradeoff_points(view))
        assert len(plotted) == len(expected) >= 4
        assert [v for xy in plotted for v in xy] == pytest.approx([v for xy in expected for v in xy])
        assert {t.get_text().split(" ×")[0] for t in ax.texts} >= {"retrain", "original", "finetune", "random_label"}

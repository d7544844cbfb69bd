"""The benchmark runner on real digits with tiny schedules: results layout, sweep record, gaps."""

from __future__ import annotations

import json

import pytest
from matplotlib.collections import PathCollection

from vision_unlearn import benchmark
from vision_unlearn.benchmark import BenchmarkSpec, run_benchmark


@pytest.mark.slow
def test_benchmark_with_sweep_writes_results(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(benchmark.SWEEP_GRIDS, "finetune", {"lr": [0.001, 0.05]})
    spec = BenchmarkSpec(
        forget=("class:3",), methods=("finetune",), seeds=(0,), sweep=True, selection_seed=9,
        original={"epochs": 1, "lr": 0.05, "batch_size": 64},
        method_configs={"retrain": {"epochs": 1, "batch_size": 64}, "finetune": {"epochs": 1}})
    results = run_benchmark(spec, tmp_path, command="test")
    assert results["complete"] is True
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["scenarios"].keys() == {"class:3"}
    scenario = on_disk["scenarios"]["class:3"]
    assert set(scenario["methods"]) == {"retrain", "original", "finetune"}
    finetune = scenario["methods"]["finetune"]
    run = finetune["per_seed"][0]
    retrain = scenario["methods"]["retrain"]["per_seed"][0]
    # class-wise request: TA on the remaining classes, not TA (a retrained model scores 0 on class 3)
    expected_gap = sum(abs(run[k] - retrain[k]) for k in ("UA", "RA", "TA_remaining", "MIA")) / 4
    assert run["avg_gap"] == pytest.approx(expected_gap)
    assert run["seconds_ratio_to_retrain"] == pytest.approx(run["seconds"] / retrain["seconds"])
    assert run["cpu_ratio_to_retrain"] == pytest.approx(run["cpu_seconds"] / retrain["cpu_seconds"])
    assert {"relearn_steps", "JS_forget", "JS_test"} <= set(run) and retrain["JS_forget"] == pytest.approx(0.0)
    assert set(scenario["extra_rows"]) == {"retrain (2nd run)"}
    assert set(scenario["paired_to_floor"]) == {"retrain", "original", "finetune"}
    assert {"UA", "RA", "TA", "MIA", "TA_remaining", "avg_gap", "seconds"} <= set(finetune["summary"])
    sweep = scenario["sweep"]["finetune"]
    assert sweep["grid"] == {"lr": [0.001, 0.05]} and sweep["selection_seed"] == 9
    assert sweep["evaluated_on"].startswith("validation rows")
    assert [t["config"]["lr"] for t in sweep["trials"]] == [0.001, 0.05]
    best = min(sweep["trials"], key=lambda t: t["avg_gap"])
    assert finetune["config"]["lr"] == best["config"]["lr"] == sweep["chosen"]["lr"]
    markdown = (tmp_path / "results.md").read_text()
    assert "| finetune |" in markdown and "class:3" in markdown
    assert (tmp_path / "tradeoff.png").is_file()
    from vision_unlearn.report import scenario_views, tradeoff_figure, tradeoff_points

    (axes,) = tradeoff_figure(on_disk).axes  # one scenario, one panel: a marker per reported method
    (view,) = scenario_views(on_disk)
    assert axes.get_ylabel() == "TA on remaining classes (%)"  # a class-wise request
    markers = sorted(tuple(map(float, c.get_offsets()[0])) for c in axes.collections
                     if isinstance(c, PathCollection))
    points = {p["name"]: (p["forgetting_gap"], p["utility"]) for p in tradeoff_points(view)}
    assert len(markers) == 3
    assert [v for xy in markers for v in xy] == pytest.approx([v for xy in sorted(points.values()) for v in xy])
    assert points["retrain"][0] == pytest.approx(0.0)  # the reference sits at zero gap
    evidence = (tmp_path / "evidence.md").read_text()
    assert "| retrain (2nd run) |" in evidence and "Paired 95 % interval" in evidence

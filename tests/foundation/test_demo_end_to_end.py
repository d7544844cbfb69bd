"""The whole demo in its --fast setting (slow: a few CPU minutes; run by the benchmarks, not CI)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rfo_toolkit.demo.pipeline import STAGES, DemoConfig, run_demo


@pytest.mark.slow
def test_fast_demo_runs_every_stage_and_reports_the_saved_numbers(tmp_path: Path) -> None:
    result = run_demo(DemoConfig(out_dir=str(tmp_path), fast=True))
    assert result["stages"] == {stage.name: "ran" for stage in STAGES}
    detector = json.loads((tmp_path / "detector" / "stage.json").read_text())
    unlearn = json.loads((tmp_path / "unlearn" / "stage.json").read_text())
    page = (tmp_path / "report.html").read_text()
    assert f"<td>AP50</td><td>{detector['coco']['AP50']:.3f}</td>" in page
    methods = {row["method"] for row in unlearn["rows"]}
    assert {"original", "retrain", "ofmu", "finetune", "random_label"} <= methods
    assert len(unlearn["audit_records"]) == 8  # 2 requests x (retrain + 3 methods)
    # run time against retrain's in CPU time (wall time on a shared machine measures the other jobs too)
    runs = [row for row in unlearn["rows"] if row["method"] != "original"]
    assert all(row["cpu_seconds"] > 0 for row in runs)
    for row in runs:
        retrain = next(r for r in runs if r["scenario"] == row["scenario"] and r["method"] == "retrain")
        assert row["time_ratio"] == pytest.approx(row["cpu_seconds"] / retrain["cpu_seconds"], rel=0.05)  # both rounded to 0.01 s
    assert "CPU time / retrain" in page
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', page))
    again = run_demo(DemoConfig(out_dir=str(tmp_path), fast=True))
    assert set(again["stages"].values()) == {"skipped"}

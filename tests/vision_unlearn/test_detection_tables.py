"""The detector benchmark's summary and tables: per-seed values, gaps to a multi-retrain reference, merging."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rfo_toolkit.cli import vision_unlearn_main as main
from toolkit_core.errors import UserInputError
from vision_unlearn.detection_benchmark import merge_results, results_markdown, summarise_rows


def _row(seed: int, method: str, retain: float, **extra: float) -> dict:
    return {"seed": seed, "scenario": "class:clamp", "method": method, "retain_map50": retain, **extra}


ROWS = [
    _row(3, "retrain", 0.86, retrain_seed=3, reference_retain_map50_spread=0.02),
    _row(3, "retrain", 0.88, retrain_seed=1003, reference_retain_map50_spread=0.02),
    _row(3, "finetune", 0.85, gap_retain_map50=-0.02, mia_auc=0.5, mia_auc_ci_low=0.4, mia_auc_ci_high=0.6),
    _row(4, "retrain", 0.90, retrain_seed=4, reference_retain_map50_spread=0.0),
    _row(4, "retrain", 0.90, retrain_seed=1004, reference_retain_map50_spread=0.0),
    _row(4, "finetune", 0.93, gap_retain_map50=0.03, mia_auc=0.7, mia_auc_ci_low=0.6, mia_auc_ci_high=0.8),
]


def test_summary_weighs_each_seed_once_and_keeps_per_seed_values() -> None:
    summary = {s["method"]: s for s in summarise_rows(ROWS)}
    retrain = summary["retrain"]
    # seed 3: mean of its two retrains (0.87); seed 4: 0.90; the mean over seeds is 0.885, not the row mean
    assert retrain["retain_map50_by_seed"] == pytest.approx({"3": 0.87, "4": 0.90})
    assert retrain["retain_map50"] == pytest.approx(0.885)
    assert retrain["retain_map50_std"] == pytest.approx(0.015)
    finetune = summary["finetune"]
    assert finetune["gap_retain_map50"] == pytest.approx(0.005)
    assert finetune["gap_retain_map50_by_seed"] == pytest.approx({"3": -0.02, "4": 0.03})


def test_table_cells_show_mean_then_each_seed_with_intervals() -> None:
    text = results_markdown(summarise_rows(ROWS), "vision-unlearn benchmark ...")
    finetune = next(line for line in text.splitlines() if line.startswith("| finetune"))
    cells = [c.strip() for c in finetune.strip("|").split("|")]
    assert cells[2] == "0.890 (0.85 / 0.93)"
    assert cells[3] == "0.005 (-0.020 / 0.030)"  # gaps keep three decimals per seed (0.001 = 0.1 point)
    assert cells[6] == "0.600 (0.50 [0.40, 0.60] / 0.70 [0.60, 0.80])"
    retrain = next(line for line in text.splitlines() if line.startswith("| retrain"))
    assert "| reference |" in retrain
    assert "seed 3: 0.020, seed 4: 0.000" in text
    assert text.startswith("Reproduce with:")


def test_merge_joins_seed_files_and_refuses_a_cell_twice(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"command": "run a", "config": {}, "rows": ROWS[:3]}))
    b.write_text(json.dumps({"command": "run b", "config": {}, "rows": ROWS[3:]}))
    merged = merge_results([a, b])
    assert len(merged["rows"]) == 6 and merged["commands"] == ["run a", "run b"]
    assert json.dumps(merged["summary"]) == json.dumps(summarise_rows(ROWS))  # NaN cells compare as text
    with pytest.raises(UserInputError, match="also in"):
        merge_results([a, a])
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(UserInputError) as err:
        merge_results([bad])
    assert str(bad) in str(err.value)


def test_merge_command_writes_one_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps({"command": "run a", "rows": ROWS[:3]}))
    b.write_text(json.dumps({"command": "run b", "rows": ROWS[3:]}))
    out = tmp_path / "merged"
    assert main(["benchmark", "--merge-results", str(a), str(b), "--out", str(out)]) == 0
    assert (out / "results.png").exists()
    text = (out / "results.md").read_text()
    assert "run a\nrun b" in text and "0.890 (0.85 / 0.93)" in text
    assert main(["benchmark", "--merge-results", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert "missing.json" in capsys.readouterr().err

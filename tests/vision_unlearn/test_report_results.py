"""results.md rendering (best-per-column marks, gaps to retrain) and the trade-off plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit_core.errors import UserInputError
from vision_unlearn.report import (
    best_methods,
    load_results,
    render_results_markdown,
    tradeoff_points,
    write_report,
)


def _m(mean: float, std: float = 0.0) -> dict[str, float]:
    return {"mean": mean, "std": std}


RESULTS = {
    "scenario": "digits, forget class:3",
    "seeds": [0, 1, 2],
    "methods": {
        "salun": {"UA": _m(99.5, 0.5), "RA": _m(97.0), "TA": _m(90.0), "MIA": _m(90.0), "avg_gap": _m(4.0),
                  "seconds": 4.0, "seconds_ratio_to_retrain": 0.1, "hyperparameters": {"lr": 0.01}},
        "ofmu": {"UA": _m(98.0, 1.0), "RA": _m(99.2), "TA": _m(91.5), "MIA": _m(99.0), "avg_gap": _m(1.0),
                 "seconds": 2.0, "seconds_ratio_to_retrain": 0.05, "hyperparameters": {"beta": 0.5, "rounds": 3}},
        "retrain": {"UA": _m(100.0), "RA": _m(99.0), "TA": _m(92.0), "MIA": _m(100.0), "avg_gap": _m(0.0),
                    "seconds": 40.0, "seconds_ratio_to_retrain": 1.0},
    },
}


def test_best_marks_closest_to_retrain_and_lowest_cost() -> None:
    best = best_methods(RESULTS)
    # UA gaps: salun |99.5-100| = 0.5, ofmu 2.0 -> salun. RA gaps: salun 2.0, ofmu 0.2 -> ofmu.
    # TA gaps: salun 2.0, ofmu 0.5 -> ofmu. MIA gaps: salun 10, ofmu 1 -> ofmu.
    assert best == {"UA": {"salun"}, "RA": {"ofmu"}, "TA": {"ofmu"}, "MIA": {"ofmu"}, "avg_gap": {"ofmu"},
                    "seconds": {"ofmu"}, "seconds_ratio_to_retrain": {"ofmu"}}


def test_markdown_table() -> None:
    text = render_results_markdown(RESULTS)
    lines = text.splitlines()
    assert lines[0] == "# Unlearning results: digits, forget class:3"
    table = [line for line in lines if line.startswith("| ")]
    assert table[0].startswith("| Method | UA (%) | RA (%) | TA (%) | MIA-Efficacy (%) | Avg.Gap (pp)")
    assert table[1].startswith("| retrain (gold standard) | 100.00 ± 0.00 |")  # retrain first, never bold
    assert "**" not in table[1]
    ofmu = next(line for line in table if line.startswith("| ofmu"))
    cells = [c.strip() for c in ofmu.strip("|").split("|")]
    assert cells[1] == "98.00 ± 1.00 (2.00)"  # not best on UA
    assert cells[2] == "**99.20 ± 0.00 (0.20)**"
    assert cells[-1] == "**0.050**"
    salun = next(line for line in table if line.startswith("| salun"))
    assert "**99.50 ± 0.50 (0.50)**" in salun
    assert "- **ofmu**: beta=0.5, rounds=3" in text
    assert "Seeds: [0, 1, 2]" in text


def test_without_retrain_only_utility_and_cost_are_marked() -> None:
    results = {"methods": {k: v for k, v in RESULTS["methods"].items() if k != "retrain"}}
    best = best_methods(results)
    assert "UA" not in best and "MIA" not in best
    assert best["RA"] == {"ofmu"} and best["TA"] == {"ofmu"}
    with pytest.raises(UserInputError, match="retrain"):
        tradeoff_points(results)


def test_tradeoff_points_by_hand() -> None:
    points = {p["name"]: p for p in tradeoff_points(RESULTS)}
    # ofmu: (|98-100| + |99-100|) / 2 = 1.5 ; salun: (0.5 + 10) / 2 = 5.25 ; retrain: 0
    assert points["ofmu"]["forgetting_gap"] == pytest.approx(1.5)
    assert points["salun"]["forgetting_gap"] == pytest.approx(5.25)
    assert points["retrain"]["forgetting_gap"] == 0.0
    assert points["ofmu"]["utility"] == 91.5 and points["ofmu"]["cost_ratio"] == 0.05
    assert points["ofmu"]["utility_key"] == "TA"
    classwise = json.loads(json.dumps(RESULTS))
    for i, entry in enumerate(classwise["methods"].values()):
        entry["TA_remaining"] = _m(95.0 + i)
    assert {p["utility_key"] for p in tradeoff_points(classwise)} == {"TA_remaining"}


def test_write_report_files(tmp_path: Path) -> None:
    written = write_report(RESULTS, tmp_path / "out")
    assert written["markdown"].read_text() == render_results_markdown(RESULTS)
    with Image.open(written["plot"]) as image:
        assert image.format == "PNG"
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape[0] > 300 and pixels.shape[1] > 500
    assert pixels.min() < 100  # something was drawn
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.md", "tradeoff.png"]


def test_bad_results_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="methods"):
        render_results_markdown({"scenario": "x"})
    broken = {"methods": {"ofmu": {"UA": {"std": 1.0}}}}
    with pytest.raises(UserInputError) as info:
        render_results_markdown(broken)
    assert info.value.field == "methods.ofmu.UA"
    with pytest.raises(UserInputError, match="not a number"):
        render_results_markdown({"methods": {"ofmu": {"TA": "high"}}})
    (tmp_path / "results.json").write_text("{")
    with pytest.raises(UserInputError, match="not valid JSON"):
        load_results(tmp_path / "results.json")
    (tmp_path / "results.json").write_text(json.dumps(RESULTS))
    assert load_results(tmp_path / "results.json") == RESULTS


def test_pipes_in_names_are_escaped() -> None:
    text = render_results_markdown({"methods": {"a|b": {"TA": 1.0}}})
    assert "| a\\|b | **1.00** |" in text


def _benchmark_results() -> dict:
    def summary(ua: float, ta: float, mia: float, ratio: float | None, **extra: float) -> dict:
        out = {"UA": _m(ua), "RA": _m(99.0), "TA": _m(ta), "MIA": _m(mia), "avg_gap": _m(0.0), **extra}
        if ratio is not None:
            out["seconds_ratio_to_retrain"] = _m(ratio)
        return out

    def scenario(classwise: bool) -> dict:
        extra = {"TA_remaining": _m(97.0)} if classwise else {}
        return {
            "n_forget": 120, "n_retain": 1100,
            "methods": {
                "retrain": {"config": {"epochs": 30}, "summary": summary(100.0, 90.0, 100.0, 1.0, **extra)},
                "original": {"summary": summary(0.0, 97.0, 2.0, None, **extra)},
                "ofmu": {"config": {"beta": 0.5}, "summary": summary(99.0, 89.0, 97.0, 0.05, **extra,
                                                                    LiRA_auc=_m(0.52))},
            },
            "sweep": {"ofmu": {"grid": {"beta": [0.0, 0.5]}, "selection_seed": 1000}},
        }

    return {"spec": {"dataset": "digits", "model": {"name": "test_resnet"}, "seeds": [0, 1, 2], "sweep": True},
            "command": "vision-unlearn benchmark --dataset digits", "scenarios": {
                "class:3": scenario(True), "random:0.1": scenario(False)}}


def test_benchmark_layout_renders_one_section_and_panel_per_scenario(tmp_path: Path) -> None:
    results = _benchmark_results()
    text = render_results_markdown(results)
    assert text.startswith("# Unlearning benchmark: digits, model test_resnet")
    assert "## forget class:3 (120 forget / 1100 retain samples)" in text
    assert "## forget random:0.1 (120 forget / 1100 retain samples)" in text
    assert "Command: `vision-unlearn benchmark --dataset digits`" in text
    original = [line for line in text.splitlines() if line.startswith("| original (before unlearning)")]
    assert len(original) == 2 and all("**" not in line for line in original)  # a reference, never marked
    assert "| ofmu | **99.00 ± 0.00 (1.00)** |" in text
    # LiRA AUC without a retrain value: shown, no gap, not marked; retrain shows a dash
    assert "| 0.520 ± 0.000 |" in text and "| LiRA AUC |" in text
    assert "| 100.00 ± 0.00 | — | 0.00 ± 0.00 | 1.000 ± 0.000 |" in text
    assert "- **ofmu**: beta=0.5 — chosen by lowest Avg.Gap from beta ∈ [0.0, 0.5] on selection seed 1000" in text
    single = write_report(RESULTS, tmp_path / "one")["plot"]
    double = write_report(results, tmp_path / "two")["plot"]
    with Image.open(single) as one, Image.open(double) as two:
        assert two.size[0] > 1.8 * one.size[0]  # two panels side by side
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert load_results(tmp_path / "results.json")["command"] == results["command"]
    broken = _benchmark_results()
    del broken["scenarios"]["class:3"]["methods"]["ofmu"]["summary"]
    with pytest.raises(UserInputError) as info:
        render_results_markdown(broken)
    assert info.value.field == "scenarios.class:3.methods.ofmu.summary"

"""Honesty metrics inside ``vision-unlearn benchmark``: present for every row of results.json and
results.md, and equal to the honesty functions called directly on the very models the benchmark ran."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vision_unlearn import benchmark
from vision_unlearn.benchmark import HONESTY_KEYS, BenchmarkSpec, reject_class_of, run_benchmark
from vision_unlearn.forget import resolve_forget
from vision_unlearn.metrics.honesty import abstains, abstention_stability, compute_honesty


def _direct_honesty(adapter, prepared, split, seed: int) -> dict[str, float]:
    """The honesty of ``adapter`` computed here from its predictions, as the benchmark documents it."""
    train, test = prepared.train, prepared.test
    rows = torch.as_tensor(split.forget_indices)
    images = train.images[rows]
    forget_logits = adapter.predict(images)
    kept = torch.nonzero(test.labels != 3).flatten()  # test images of the retained classes
    calibration, evaluation = adapter.predict(test.images[kept[0::2]]), adapter.predict(test.images[kept[1::2]])
    noisy = (images + 0.02 * torch.randn(images.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)
    views = [forget_logits, adapter.predict(torch.roll(images, 1, dims=3)),
             adapter.predict(torch.roll(images, 1, dims=2)), adapter.predict(noisy)]
    result = compute_honesty(forget_logits, train.labels[rows], calibration, retain_logits=evaluation,
                             forget_view_logits=views, false_abstention_target=0.05)
    repeated = adapter.predict(images)
    stability_repeat = abstention_stability(torch.stack([abstains(forget_logits, result.threshold),
                                                         abstains(repeated, result.threshold)]))
    return {"abstain": 100 * result.abstention_rate, "false_abstain": 100 * result.false_abstention_rate,
            "lie": 100 * result.misattribution_rate, "recall": 100 * result.recall_rate,
            "stability_tta": 100 * result.stability, "stability_repeat": 100 * stability_repeat}


def test_benchmark_reports_honesty_equal_to_a_direct_call(tmp_path, monkeypatch) -> None:
    ran: dict[str, tuple] = {}
    original_run_method = benchmark.run_method

    def recording_run_method(name, config, original_state, prepared, model, split, seed, *args, **kwargs):
        metrics, adapter = original_run_method(name, config, original_state, prepared, model, split, seed, *args,
                                               **kwargs)
        ran.setdefault(name, (adapter, prepared, split, seed, dict(metrics)))  # retrain: the reference
        return metrics, adapter

    monkeypatch.setattr(benchmark, "run_method", recording_run_method)
    spec = BenchmarkSpec(forget=("class:3",), methods=("steer", "finetune"), seeds=(0,),
                         original={"epochs": 1, "lr": 0.05, "batch_size": 64},
                         method_configs={"retrain": {"epochs": 1, "batch_size": 64}, "finetune": {"epochs": 1}})
    run_benchmark(spec, tmp_path)
    scenario = json.loads((tmp_path / "results.json").read_text())["scenarios"]["class:3"]
    assert set(scenario["methods"]) == {"retrain", "original", "steer", "finetune"}
    for name, entry in scenario["methods"].items():
        run = entry["per_seed"][0]
        assert set(HONESTY_KEYS) <= set(run), name
        assert run["abstain"] + run["lie"] + run["recall"] == pytest.approx(100.0)
        assert set(HONESTY_KEYS) <= set(entry["summary"])
    for name in ("retrain", "steer", "finetune"):
        adapter, prepared, split, seed, metrics = ran[name]
        expected = _direct_honesty(adapter, prepared, split, seed)
        reported = scenario["methods"][name]["per_seed"][0]
        for key, value in expected.items():
            assert reported[key] == pytest.approx(value, abs=1e-9), (name, key)
            assert metrics[key] == pytest.approx(value, abs=1e-9), (name, key)
    # steering: zero steps, its overhead measured, and switching it off gives the original model back
    steer = scenario["methods"]["steer"]["per_seed"][0]
    assert steer["steps"] == 0 and steer["off_exact"] == 1.0 and "overhead" in steer
    assert "overhead" not in scenario["methods"]["finetune"]["per_seed"][0]
    markdown = (tmp_path / "results.md").read_text()
    assert "Honesty on the forget set" in markdown and "abstaining on 5 % of held-out" in markdown
    honesty_header = next(line for line in markdown.splitlines() if line.startswith("| Method | Abstain"))
    for header in ("Abstain (%)", "Lie: confident misattribution (%)", "Recall (%)", "False abstain (%)",
                   "TTA stability (%)", "Repeat stability (%)", "Inference overhead (%)"):
        assert header in honesty_header
    steer_honesty_row = [line for line in markdown.splitlines() if line.startswith("| steer |")][1]
    assert steer_honesty_row.split(" | ")[1].strip("*").startswith(f"{steer['abstain']:.2f}")


def test_the_background_class_of_rfo_patches_is_the_reject_class_unless_forgotten() -> None:
    labels = np.array([0, 1, 2, 0, 1, 2])
    ids = [f"s{i}" for i in range(6)]
    names = ["none", "sponge", "clamp"]
    assert reject_class_of(names, resolve_forget("class:clamp", labels, ids, ids, names)) == 0
    assert reject_class_of(names, resolve_forget("class:none", labels, ids, ids, names)) is None
    assert reject_class_of(["a", "b", "c"], resolve_forget("class:c", labels, ids, ids, ["a", "b", "c"])) is None

"""The demo on a recipe-trained detector (``--detector``): films at its resolution, sliced evaluation, and
deletion requests whose references start from the same detector (slow: a tiny detector is trained first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rfo_toolkit.cli import rfo_bench_main
from rfo_toolkit.demo.clinical import DEMO_CLASSES, clinical_plan, detector_record
from rfo_toolkit.demo.pipeline import STAGES, DemoConfig, demo_command, run_demo
from toolkit_core.errors import UserInputError


def _tiny_recipe_detector(root: Path) -> Path:
    """A YOLO trained by a recipe file on tiny physics films of the demo's classes, ``chain`` left unseen."""
    from synth.physics.generate import PhysicsConfig, generate_dataset

    for name, n, seed in (("train", 8, 5), ("test", 4, 6)):
        generate_dataset(root / name, n=n, seed=seed, config=PhysicsConfig(mode="radiograph", size=160,
                                                                            classes=DEMO_CLASSES), progress=False)
    categories = json.loads((root / "train" / "annotations.json").read_text())["categories"]
    recipe = {
        "name": "tiny", "model": "yolov8n", "seed": 0,
        "classes": [c["name"] for c in sorted(categories, key=lambda c: c["id"])], "unseen_classes": ["chain"],
        "data": {"train": str(root / "train" / "annotations.json"), "test": str(root / "test" / "annotations.json")},
        "recipe": {"base": "cpu-tiny", "epochs": 1, "imgsz": 64, "batch_size": 4, "warmup_iters": 0},
        "tiling": {"tile_size": 64, "tiles_per_object": 1}, "bootstrap": 0,
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert rfo_bench_main(["train", "--config", str(root / "recipe.yaml"), "--out", str(root / "run"),
                           "--no-progress"]) == 0
    return root / "run"


@pytest.mark.slow
def test_the_demo_on_a_trained_detector_evaluates_it_sliced_and_fine_tunes_both_references(tmp_path: Path,
                                                                                           monkeypatch) -> None:
    from vision_unlearn.adapters.yolo import YoloAdapter

    detector = _tiny_recipe_detector(tmp_path / "detector")
    record = detector_record(detector)
    assert record["film_px"] == 160 and record["unseen_classes"] == ["chain"]

    # the original and every retrained reference train from the detector's weights: nothing is re-initialised
    resets = []
    monkeypatch.setattr(YoloAdapter, "reset_parameters", lambda self, seed: resets.append(seed))
    result = run_demo(DemoConfig(out_dir=str(tmp_path / "demo"), fast=True, detector=str(detector)))
    assert resets == []
    assert result["stages"] == {stage.name: "ran" for stage in STAGES}
    synth = json.loads((tmp_path / "demo" / "synth" / "stage.json").read_text())
    assert synth["clinical"]["film_px"] == 160 and synth["clinical"]["plan"]["size"] == 160
    assert synth["clinical"]["tiles"]["train"]["positive"] > 0
    evaluated = json.loads((tmp_path / "demo" / "detector" / "stage.json").read_text())
    assert evaluated["detector"]["weights_sha256"] == record["weights_sha256"]
    assert evaluated["n_test"] > 0 and "AP50" in evaluated["coco"] and evaluated["finetune"]["n_tiles"] > 0
    unlearn = json.loads((tmp_path / "demo" / "unlearn" / "stage.json").read_text())
    assert unlearn["requests"]["class"] == "chain" and unlearn["reference"] == "finetuned"
    assert "ofmu_first_order" in {row["method"] for row in unlearn["rows"]}
    assert {row["scenario"] for row in unlearn["rows"]} == {"class", "patient"}
    page = (tmp_path / "demo" / "report.md").read_text()
    assert "sliced" in page and "never saw" in page
    assert "--detector" in demo_command({"out_dir": "x", "detector": str(detector)})

    # the demo's films reach only the groups it fine-tunes: every other weight and batch-norm statistic of the
    # original, of both references and of every method's result is the detector's own. Exact equality is the
    # claim here, and safe on any CPU: those tensors are copied and saved, never computed on.
    import torch

    from vision_unlearn.adapters.yolo import adapter_from_model_text

    start = adapter_from_model_text(f"yolo:{detector / record['weights']}", image_size=64).model.state_dict()
    trained = set(clinical_plan(fast=True).finetune_groups)
    assert trained < {"backbone", "neck", "head"} and "only" in page
    checkpoints = [tmp_path / "demo" / "detector" / "original.pt",
                   *sorted((tmp_path / "demo" / "unlearn" / "checkpoints").glob("*.pt"))]
    assert len(checkpoints) >= 1 + 2 * (1 + 3)  # the original; per request its copy, retrain and three methods
    for path in checkpoints:
        model = adapter_from_model_text(f"yolo:{path}", image_size=64)
        kept = {name: value for name, value in model.model.state_dict().items() if model.group_of(name) not in trained}
        assert kept and all(torch.equal(value, start[name]) for name, value in kept.items()), path.name

    # weights that are not the recorded ones are refused before anything is read from them
    weights = detector / record["weights"]
    weights.write_bytes(weights.read_bytes() + b"\0")
    with pytest.raises(UserInputError, match="does not match its record"):
        run_demo(DemoConfig(out_dir=str(tmp_path / "demo2"), fast=True, detector=str(detector)))


def test_a_folder_without_a_recipe_record_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "detector.json").write_text(json.dumps({"format": 1, "config": {}, "categories": []}))
    with pytest.raises(UserInputError):
        detector_record(tmp_path)


@pytest.mark.slow
def test_the_unlearning_budget_benchmark_scores_every_candidate_against_retrain_and_resumes(tmp_path: Path) -> None:
    import subprocess
    import sys

    detector = _tiny_recipe_detector(tmp_path / "detector")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_demo_unlearn.py"
    out = tmp_path / "bench"
    command = [sys.executable, str(script), "--detector", str(detector), "--out", str(out), "--seeds", "1,2",
               "--fast", "--candidate", "finetune", "--candidate", "finetune:lr=3e-3"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    # per seed and request: the do-nothing original, the reference and both candidates
    assert sorted((r["seed"], r["scenario"], r["candidate"]) for r in rows) == sorted(
        (seed, scenario, label) for seed in (1, 2) for scenario in ("class", "patient")
        for label in ("original", "retrain", "finetune", "finetune:lr=3e-3"))
    assert all(r["average_gap"] == 0.0 for r in rows if r["candidate"] == "retrain")
    assert next(r for r in rows if r["candidate"] == "finetune:lr=3e-3")["config"]["lr"] == 3e-3
    best = results["summary"]["best"]["finetune"]
    assert best["chosen"] in ("finetune", "finetune:lr=3e-3") and best["seeds"] == [1, 2]
    assert "lowest pooled gap" in first.stdout

    # a rerun finds every run done: nothing is trained again
    saved = {p: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")}
    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert len(json.loads((out / "results.json").read_text())["rows"]) == len(rows)
    assert {p: p.stat().st_mtime_ns for p in (out / "models").glob("*.pt")} == saved

    # a method the demo does not run is one line and exit 2
    wrong = subprocess.run([*command[:-4], "--candidate", "scrub"], capture_output=True, text=True, timeout=300)
    assert wrong.returncode == 2 and "scrub" in wrong.stderr

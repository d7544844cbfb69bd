"""``vision-unlearn run|benchmark --model yolo:...``: dispatch to the detection code, bad input exits 2
with one line naming the file or field (nothing written), and ``--method steer`` writes the
steering state next to the model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from rfo_toolkit.cli import vision_unlearn_main as main


def _run(out: Path, *extra: str, model: str = "yolo:yolov8n.yaml", data: str = "toy:6") -> list[str]:
    return ["run", "--model", model, "--data", data, "--imgsz", "64", "--out", str(out), "--no-progress", *extra]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0]
    return err[0]


def _assert_nothing_written(out: Path) -> None:
    assert not (out / "unlearned.pt").exists() and not (out / "audit.json").exists()
    assert not (out / "original.pt").exists()


def _save_like_ultralytics(path: Path, task: str) -> Path:
    """A checkpoint as the Ultralytics trainer leaves it: ``last.pt`` with the EMA model, then
    ``strip_optimizer`` (what turns it into ``best.pt``)."""
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from ultralytics.nn.tasks import PoseModel, SegmentationModel
    from ultralytics.utils.torch_utils import strip_optimizer

    model = (SegmentationModel("yolov8n-seg.yaml", ch=3, nc=3, verbose=False) if task == "segment"
             else PoseModel("yolov8n-pose.yaml", ch=3, nc=1, verbose=False))
    torch.save({"epoch": 0, "best_fitness": None, "model": None, "ema": model.half(), "updates": 0,
                "optimizer": None, "train_args": {"task": task, "imgsz": 64}, "date": None, "version": "8"}, path)
    strip_optimizer(path)
    return path


# --- bad input --------------------------------------------------------------------------------------
def test_class_not_in_the_model_lists_its_classes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_run(out, "--forget", "class:scalpel", "--method", "finetune")) == 2
    line = _one_error_line(capsys)
    assert "class is not one of the model's classes: needle, sponge, clamp" in line and "scalpel" in line
    _assert_nothing_written(out)


def test_missing_instance_ids_name_the_first_one_and_the_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "wrong_objects.txt"
    listing.write_text("# two ids, the second does not exist\ntoy_0_00000.png@0\ntoy_0_00042.png@7\n")
    out = tmp_path / "out"
    assert main(_run(out, "--forget", f"instances:{listing}", "--method", "finetune")) == 2
    line = _one_error_line(capsys)
    assert str(listing) in line and "1 instance id(s) do not exist" in line and "toy_0_00042.png@7" in line
    _assert_nothing_written(out)


@pytest.mark.parametrize("task", ["segment", "pose"])
def test_checkpoint_of_another_task_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str], task: str) -> None:
    path = _save_like_ultralytics(tmp_path / f"{task}_best.pt", task)
    out = tmp_path / "out"
    assert main(_run(out, "--forget", "class:0", "--method", "finetune", model=f"yolo:{path}")) == 2
    line = _one_error_line(capsys)
    assert f"{task}_best.pt" in line and f"this is a {task} checkpoint" in line and "needs a detection model" in line
    _assert_nothing_written(out)


def test_missing_model_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "runs" / "best.pt"
    assert main(_run(tmp_path / "out", "--forget", "class:needle", "--method", "finetune",
                     model=f"yolo:{missing}")) == 2
    line = _one_error_line(capsys)
    assert str(missing) in line and "checkpoint not found" in line


@pytest.mark.parametrize(("extra", "field"), [
    (["--model-file", "original.pt"], "--model-file"),
    (["--resume"], "--resume"),
    (["--checkpoint-every", "5"], "--checkpoint-every"),
])
def test_classifier_flags_are_refused_with_a_detector(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                      extra: list[str], field: str) -> None:
    out = tmp_path / "out"
    assert main(_run(out, "--forget", "class:needle", "--method", "finetune", *extra)) == 2
    line = _one_error_line(capsys)
    assert field in line and "for classifiers" in line
    _assert_nothing_written(out)


def test_detector_flags_are_refused_with_a_classifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--model-file", str(tmp_path / "original.pt"), "--method", "finetune", "--forget", "class:3",
            "--out", str(tmp_path / "out"), "--imgsz", "64"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "--imgsz" in line and "for detectors" in line


@pytest.mark.parametrize(("argv", "expected"), [
    (["--model", "resnet18"], "expected yolo:PATH_OR_YAML"),
    (["--model", "yolo:yolov8n.yaml"], "--data"),
    ([], "--model-file"),
])
def test_model_and_data_are_required_in_one_form(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], expected: str) -> None:
    full = ["run", *argv, "--method", "finetune", "--forget", "class:needle", "--out", str(tmp_path / "out")]
    assert main(full) == 2
    assert expected in _one_error_line(capsys)


def test_unknown_method_field_is_refused_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_run(out, "--forget", "class:needle", "--method", "scrub", "--set", "temprature=2")) == 2
    line = _one_error_line(capsys)
    assert "temprature" in line and "--set" in line
    _assert_nothing_written(out)


@pytest.mark.parametrize(("argv", "expected"), [
    (["--model", "yolo:yolov8n.yaml", "--lira-shadows", "4"], "--lira-shadows"),
    (["--model", "yolo:yolov8n.yaml", "--data-seed", "1"], "--data-seed"),
    (["--model", "yolo:yolov8n.yaml", "--methods", "grad_ascent,nosuch"], "nosuch"),
    (["--model", "yolo:yolov8n.yaml", "--set", "scrub.temprature=2"], "temprature"),
    (["--model", "yolo:yolov8n.yaml", "--set", "salun.lr=0.1", "--methods", "scrub"], "salun"),
    (["--model", "yolo:yolov8n.yaml", "--forget", "patients"], "forget"),
    (["--model", "yolo:yolov8n.yaml", "--imgsz", "100"], "--imgsz"),
    (["--model", "yolo:best.pt"], "model yaml"),
    (["--model", "test_resnet", "--n-train", "8", "--forget", "class:3"], "--n-train"),
])
def test_bad_benchmark_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                     expected: str) -> None:
    out = tmp_path / "bench"
    assert main(["benchmark", *argv, "--seeds", "0-0", "--out", str(out)]) == 2
    assert expected in _one_error_line(capsys)
    assert not (out / "results.json").exists()


# --- runs -------------------------------------------------------------------------------------------
def test_detector_run_writes_checkpoint_audit_and_metrics_and_refuses_to_overwrite(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ultralytics import YOLO

    out = tmp_path / "out"
    argv = _run(out, "--forget", "class:clamp", "--method", "neggrad_plus", "--set", "epochs=1", "--set",
                "batch_size=4", "--set", "alpha=0.5", "--threads", "1")
    assert main(argv) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["method"] == "neggrad_plus" and summary["split"]["forgotten_classes"] == [2]
    record = json.loads((out / "audit.json").read_text())
    assert record["method"] == "neggrad_plus" and record["config"]["alpha"] == 0.5
    assert record["config"]["epochs"] == 1
    model = YOLO(str(out / "unlearned.pt"))
    assert model.task == "detect" and model.names == {0: "needle", 1: "sponge", 2: "clamp"}
    assert not (out / "steering.safetensors").exists()
    capsys.readouterr()
    assert main(argv) == 2
    assert "--overwrite" in _one_error_line(capsys)


def test_detector_steer_run_writes_the_steering_state_that_reloads(tmp_path: Path) -> None:
    from vision_unlearn.adapters.yolo import adapter_from_model_text
    from vision_unlearn.detection_benchmark import toy_detection_data
    from vision_unlearn.detection_forget import resolve_detection_forget
    from vision_unlearn.methods.steer import Steer

    out = tmp_path / "out"
    assert main(_run(out, "--forget", "patient:toy_0_p00000,toy_0_p00001", "--method", "steer",
                     "--test-data", "toy:4:9")) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["steering"] == str(out / "steering.safetensors")
    _assert_audit_hashes_steering(out)
    adapter = adapter_from_model_text(f"yolo:{out / 'unlearned.pt'}", image_size=64)
    data = toy_detection_data(6, 0, 64)
    forget_images = resolve_detection_forget("patient:toy_0_p00000,toy_0_p00001", data).forget_data(data).images
    with torch.no_grad():
        plain = adapter.model(forget_images)
    steer = Steer.from_file(out / "steering.safetensors", adapter)
    with torch.no_grad():
        steered = adapter.model(forget_images)
        steer.disable()
        switched_off = adapter.model(forget_images)
    assert not torch.allclose(steered, plain, atol=1e-4)  # the erasure acts on the forget images
    assert torch.equal(switched_off, plain)


def test_classifier_steer_run_writes_the_steering_state(tmp_path: Path) -> None:
    from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
    from vision_unlearn.checkpoint import save_model
    from vision_unlearn.steering import load_steering

    torch.manual_seed(0)
    adapter = TimmAdapter(TimmModelSpec("test_resnet", num_classes=10, in_chans=1))
    model_file = tmp_path / "original.pt"
    save_model(model_file, adapter.model.state_dict(), adapter.describe(),
               {"dataset": "digits", "image_size": None, "in_chans": 1, "data_seed": 0})
    out = tmp_path / "run"
    assert main(["run", "--model-file", str(model_file), "--method", "steer", "--forget", "class:3", "--out", str(out),
                 "--no-progress", "--no-eval", "--threads", "1"]) == 0
    state, extra = load_steering(out / "steering.safetensors")
    assert extra["forget"] == "class:3" and extra["method"] == "steer"
    assert json.loads((out / "metrics.json").read_text())["steering"] == str(out / "steering.safetensors")
    _assert_audit_hashes_steering(out)


def _assert_audit_hashes_steering(out: Path) -> None:
    """A steer run leaves the weights unchanged: the audit record must pin the steering file instead."""
    from toolkit_core.utils import sha256_file
    from vision_unlearn.audit import read_audit_record, verify_audit_record

    record = read_audit_record(out / "audit.json")
    assert record.artifacts_sha256 == {"steering.safetensors": sha256_file(out / "steering.safetensors")}
    assert verify_audit_record(out / "audit.json", out / "unlearned.pt").record_intact


def test_detector_benchmark_runs_through_vision_unlearn(tmp_path: Path) -> None:
    from vision_unlearn.detection_benchmark import DetectionBenchmarkConfig

    out = tmp_path / "bench"
    argv = ["benchmark", "--model", "yolo:yolov8n.yaml", "--imgsz", "64", "--n-train", "8", "--n-test", "4",
            "--original-epochs", "1", "--forget", "class:clamp", "--methods", "grad_ascent", "--seeds", "3-3",
            "--set", "grad_ascent.epochs=1", "--set", "original.batch_size=4", "--out", str(out),
            "--threads", "1"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert [(r["seed"], r["method"]) for r in results["rows"]] == [(3, "original"), (3, "retrain"),
                                                                  (3, "grad_ascent")]
    ga = results["rows"][2]
    assert ga["cpu_seconds"] > 0 and ga["cpu_time_ratio"] == pytest.approx(
        ga["cpu_seconds"] / results["rows"][1]["cpu_seconds"])
    preset = DetectionBenchmarkConfig().methods["grad_ascent"]
    assert results["config"]["methods"] == {"grad_ascent": {**preset, "epochs": 1}}
    # image requests layer their own preset on top; a --set reaches both
    sample = results["config"]["sample_methods"]["grad_ascent"]
    assert sample["epochs"] == 1 and sample["forget_loss_ceiling"] == "heldout_quantiles"
    assert results["config"]["original"]["batch_size"] == 4 and results["config"]["original"]["epochs"] == 1
    assert results["command"].startswith("vision-unlearn benchmark --model yolo:yolov8n.yaml")
    assert (out / "results.md").exists() and (out / "results.png").exists()


def test_benchmark_cell_detaches_steering_hooks_before_the_next_method() -> None:
    """The benchmark reuses one detector for every method: steer's hooks must not leak into the next one."""
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
    from vision_unlearn.detection_benchmark import _run_and_evaluate, toy_detection_data
    from vision_unlearn.detection_forget import resolve_detection_forget

    train, test = toy_detection_data(8, 0, 64), toy_detection_data(4, 1, 64)
    adapter = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=train.num_classes, in_chans=1,
                                        class_names=train.class_names, image_size=64))
    adapter.reset_parameters(0)
    split = resolve_detection_forget("class:clamp", train)
    adapter.model.eval()
    with torch.no_grad():
        plain = adapter.model(test.images)
    metrics, seconds, _cpu = _run_and_evaluate(adapter, "steer", {}, split.forget_data(train), split.retain_data(train),
                                               train, test, split, seed=0)
    assert "forget_ap50" in metrics and seconds >= 0
    assert not any(module._forward_hooks for module in adapter.model.modules())
    adapter.model.eval()
    with torch.no_grad():
        assert torch.equal(adapter.model(test.images), plain)


# --- image requests: ascent up to the held-out loss -----------------------------------------------------
def _image_ids(tmp_path: Path) -> Path:
    ids = tmp_path / "withdrawn.txt"
    ids.write_text("toy_0_00001.png\n")
    return ids


def test_heldout_ceiling_without_heldout_images_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    argv = _run(out, "--forget", f"images:{_image_ids(tmp_path)}", "--method", "neggrad_plus",
                "--set", "forget_loss_ceiling=heldout", "--threads", "1")
    assert main(argv) == 2
    assert "--heldout-data" in _one_error_line(capsys)
    _assert_nothing_written(out)


def test_heldout_data_is_refused_with_a_classifier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--model-file", str(tmp_path / "original.pt"), "--method", "neggrad_plus", "--forget", "class:3",
            "--out", str(tmp_path / "out"), "--heldout-data", "toy:4"]
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "--heldout-data" in line and "for detectors" in line


def test_image_request_follows_the_heldout_loss_and_freezes_batch_norm(tmp_path: Path) -> None:
    from vision_unlearn.adapters.yolo import adapter_from_model_text

    out = tmp_path / "out"
    argv = _run(out, "--forget", f"images:{_image_ids(tmp_path)}", "--method", "neggrad_plus",
                "--set", "forget_loss_ceiling=heldout", "--set", "freeze_norm_stats=true", "--set", "epochs=2",
                "--set", "batch_size=2", "--set", "optimizer=adam", "--set", "lr=1e-3",
                "--heldout-data", "toy:4:7", "--threads", "1")
    assert main(argv) == 0
    summary = json.loads((out / "metrics.json").read_text())
    ceiling = summary["forget_loss_ceiling"]
    assert ceiling["start"] > 0 and ceiling["end"] > 0
    record = json.loads((out / "audit.json").read_text())
    assert record["config"]["forget_loss_ceiling"] == "heldout" and record["config"]["freeze_norm_stats"] is True
    # frozen statistics: the weights moved, the batch-norm running statistics did not
    before = adapter_from_model_text(f"yolo:{out / 'original.pt'}", image_size=64).model.state_dict()
    after = adapter_from_model_text(f"yolo:{out / 'unlearned.pt'}", image_size=64).model.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in before if k.endswith(".weight") and before[k].dtype.is_floating_point]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in weights)


def test_class_request_ignores_the_heldout_ceiling(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = _run(out, "--forget", "class:clamp", "--method", "grad_ascent", "--set", "forget_loss_ceiling=heldout",
                "--set", "epochs=1", "--set", "batch_size=4", "--threads", "1")
    assert main(argv) == 0
    record = json.loads((out / "audit.json").read_text())
    assert record["config"]["forget_loss_ceiling"] is None
    assert "forget_loss_ceiling" not in json.loads((out / "metrics.json").read_text())


def test_benchmark_reuses_stored_detectors_and_averages_several_retrains(tmp_path: Path) -> None:
    """--models-dir keeps every trained detector; a second benchmark loads them and reproduces every row.
    With two reference retrains the gaps are taken to their mean."""
    models = tmp_path / "models"
    base = ["benchmark", "--model", "yolo:yolov8n.yaml", "--imgsz", "64", "--n-train", "8", "--n-test", "4",
            "--original-epochs", "1", "--forget", "class:clamp", "--methods", "finetune", "--seeds", "3-3",
            "--set", "finetune.epochs=1", "--set", "original.batch_size=4",
            "--reference-retrains", "2", "--models-dir", str(models), "--threads", "1"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    stored = sorted(p.name.split("_")[0] + "_" + p.name.split("_")[1] for p in models.glob("*.pt"))
    assert stored == ["original_seed3", "retrain_seed1003", "retrain_seed3"]
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    first = json.loads((tmp_path / "a" / "results.json").read_text())["rows"]
    second = json.loads((tmp_path / "b" / "results.json").read_text())["rows"]
    assert [(r["method"], r.get("retrain_seed")) for r in first] == [("original", None), ("retrain", 3),
                                                                    ("retrain", 1003), ("finetune", None)]
    assert all(r["reused_model"] is None for r in first[:3])
    assert all(str(models) in r["reused_model"] for r in second[:3])
    skip = {"reused_model", "seconds", "cpu_seconds", "time_ratio", "cpu_time_ratio"}
    for a, b in zip(first, second):
        assert {k: v for k, v in a.items() if k not in skip} == {k: v for k, v in b.items() if k not in skip}
    # the stored retraining times stay the denominators of the cost ratios
    assert [r["seconds"] for r in second[:3]] == [r["seconds"] for r in first[:3]]
    ft, retrains = first[3], first[1:3]
    assert ft["gap_retain_map50"] == pytest.approx(ft["retain_map50"] - np.mean([r["retain_map50"]
                                                                                 for r in retrains]))
    assert ft["time_ratio"] == pytest.approx(ft["seconds"] / np.mean([r["seconds"] for r in retrains]))
    assert ft["reference_retain_map50_spread"] == pytest.approx(abs(retrains[0]["retain_map50"]
                                                                    - retrains[1]["retain_map50"]))


def test_benchmark_refuses_zero_reference_retrains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["benchmark", "--model", "yolo:yolov8n.yaml", "--reference-retrains", "0", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "--reference-retrains" in capsys.readouterr().err


def test_benchmark_groups_per_method(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vision_unlearn.detection_benchmark import make_benchmark_config

    config = make_benchmark_config(methods=["finetune", "ofmu"], groups={"finetune": ["head"]})
    assert config.groups == {"ofmu": ("head",), "finetune": ("head",)}
    # only the benchmarked methods keep a preset entry
    assert make_benchmark_config(methods=["finetune"]).groups == {}
    base = ["benchmark", "--model", "yolo:yolov8n.yaml", "--methods", "finetune", "--out", str(tmp_path)]
    for bad, named in ((["--groups", "finetune=torso"], "torso"), (["--groups", "scrub=head"], "scrub"),
                       (["--groups", "finetune"], "finetune")):
        assert main([*base, *bad]) == 2
        assert named in capsys.readouterr().err


def test_a_damaged_stored_detector_is_trained_again(tmp_path: Path) -> None:
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
    from vision_unlearn.detection_benchmark import make_benchmark_config, toy_detection_data, train_detector

    models = tmp_path / "models"
    config = make_benchmark_config(image_size=64, overrides={"original": {"epochs": 1, "batch_size": 4}},
                                   models_dir=str(models))
    data = toy_detection_data(4, 0, 64)
    adapter = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=data.num_classes, in_chans=1,
                                        class_names=data.class_names, image_size=64))
    first = train_detector(adapter, config, data, 0, "original")
    (stored,) = models.glob("*.pt")
    stored.write_bytes(b"not a checkpoint")
    again = train_detector(adapter, config, data, 0, "original")
    assert again.reused is None and stored.stat().st_size > 100
    for key, value in first.state.items():
        assert torch.equal(value, again.state[key])  # training is deterministic per key
    assert train_detector(adapter, config, data, 0, "original").reused == str(stored)


def test_sweep_makes_the_detector_benchmark_choose_on_a_separate_seed(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    import vision_unlearn.detection_benchmark as detection_benchmark

    seen = {}

    def fake_run(config, out, command=None, progress=False):
        seen["select"] = config.select
        return {"summary": {}}

    monkeypatch.setattr(detection_benchmark, "run_detection_benchmark", fake_run)
    argv = ["benchmark", "--model", "yolo:yolov8n.yaml", "--imgsz", "64", "--forget", "class:clamp",
            "--methods", "grad_ascent", "--seeds", "0-0", "--out", str(tmp_path / "b"), "--threads", "1"]
    assert main([*argv, "--sweep"]) == 0 and seen["select"] is True
    assert main([*argv, "--overwrite"]) == 0 and seen["select"] is False


# --- old spellings of the benchmark: still work for one release, one warning line each ----------------
@pytest.fixture
def fake_detection_benchmark(monkeypatch: pytest.MonkeyPatch) -> dict:
    import vision_unlearn.detection_benchmark as detection_benchmark

    seen: dict = {}

    def fake_run(config, out, command=None, progress=False):
        seen.update(seeds=tuple(config.seeds), progress=progress)
        return {"summary": {}}

    monkeypatch.setattr(detection_benchmark, "run_detection_benchmark", fake_run)
    return seen


@pytest.mark.parametrize(("old", "seeds", "progress", "warned"), [
    (["--seeds", "2"], (0, 1), True, "--seeds 0-1"),
    (["--seeds", "2", "--seed-start", "3"], (3, 4), True, "--seed-start"),  # and "--seeds 3-4"
    (["--seed-start", "5"], (5, 6, 7), True, "--seeds S-(S+N-1)"),
    (["--seeds", "4-5", "--progress"], (4, 5), True, "--no-progress"),
    (["--seeds", "0,2", "--no-progress"], (0, 2), False, None),
    (["--seeds", "0"], (0,), True, None),  # never a valid count: seed 0
])
def test_benchmark_seeds_and_progress_old_and_new_spellings(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, fake_detection_benchmark: dict, old: list[str],
        seeds: tuple[int, ...], progress: bool, warned: str | None) -> None:
    argv = ["benchmark", "--model", "yolo:yolov8n.yaml", "--forget", "class:clamp", "--methods", "grad_ascent",
            "--out", str(tmp_path / "b"), "--threads", "1", *old]
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    assert fake_detection_benchmark == {"seeds": seeds, "progress": progress}
    deprecations = [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()]
    if warned is None:
        assert deprecations == []
    else:
        assert 1 <= len(deprecations) <= 2 and warned in deprecations[0]
        assert len(deprecations) == 1 + ("--seed-start" in old and "--seeds" in old)


def test_seed_start_with_a_list_of_seeds_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["benchmark", "--model", "yolo:yolov8n.yaml", "--seeds", "0-2", "--seed-start", "3",
            "--out", str(tmp_path / "b")]
    assert main(argv) == 2
    assert "--seed-start" in capsys.readouterr().err.strip().splitlines()[-1]

"""Training end to end (tiny): torchvision and YOLO families, reload, predict, CLI and bad input (exit code 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.detectors import TrainConfig, recipe_with_overrides
from rfo_bench.detectors.api import load_detector, train_detector
from rfo_bench.detectors.data import load_pixels
from rfo_bench.io.coco import read_coco
from rfo_toolkit.cli import rfo_bench_main as main
from tests.rfo_bench.test_detectors_data import write_tiny_coco
from toolkit_core.output_dirs import OWNER_MARKER

TINY = {"epochs": 1, "imgsz": 64, "batch_size": 2, "warmup_iters": 0}


def test_fcos_trains_saves_reloads_and_predicts_in_image_coordinates(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=44, width=68))
    config = TrainConfig(model="fcos", recipe=recipe_with_overrides("cpu-tiny", TINY), seed=3, backbone="test_resnet")
    result = train_detector(config, [dataset], tmp_path / "run", progress=False)
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["model"] == "fcos" and record["config"]["seed"] == 3 and len(record["history"]) == 1
    assert record["categories"] == [{"id": 3, "name": "needle", "critical": True}]
    assert record["train_positive_images"] == 2 and result.train_seconds > 0
    assert np.isfinite(record["history"][0]["loss"])
    detections = load_detector(result.run_dir).predict(load_pixels(dataset, dataset.images[0]))
    assert len(detections) > 0  # score threshold 0.001 keeps the low-score tail for AP / FROC
    assert set(detections.category_ids.tolist()) == {3}
    assert detections.boxes_xyxy[:, [0, 2]].max() <= 68 + 1e-3 and detections.boxes_xyxy[:, [1, 3]].max() <= 44 + 1e-3


def test_same_seed_same_weights(tmp_path: Path) -> None:
    import torch

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2))
    config = TrainConfig(model="fcos", recipe=recipe_with_overrides("cpu-tiny", TINY), seed=1,
                         backbone="test_resnet")
    states = []
    for name in ("a", "b"):
        train_detector(config, [dataset], tmp_path / name, progress=False)
        states.append(torch.load(tmp_path / name / "model.pt", weights_only=True))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_yolo_trains_through_ultralytics_and_predicts(tmp_path: Path) -> None:
    import torch

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=44, width=68))
    config = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", TINY), seed=0)
    mine = tmp_path / "run" / "yolo_data"  # a user's folder named like the training layout is not touched
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    result = train_detector(config, [dataset], tmp_path / "run", val_set=dataset, progress=False)
    assert (tmp_path / "run" / result.record["weights"]).is_file()
    assert (mine / "notes.txt").read_text() == "keep"
    assert not list((tmp_path / "run").glob(".yolo_data*"))  # the 8-bit training layout is removed
    detections = load_detector(result.run_dir).predict(load_pixels(dataset, dataset.images[0]))
    assert detections.boxes_xyxy.shape[1] == 4
    assert set(detections.category_ids.tolist()) <= {3}
    # a checkpoint written by the Ultralytics trainer passes the restricted loader as --weights too
    weights = str(tmp_path / "run" / result.record["weights"])
    from ultralytics.utils import NUM_THREADS  # the trainer's own choice: one fewer than the cores, at most 8

    tuned = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", TINY), seed=0, weights=weights,
                        threads=NUM_THREADS + 1)
    before = torch.get_num_threads()
    try:
        again = train_detector(tuned, [dataset], tmp_path / "tuned", progress=False)
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "tuned" / again.record["weights"]).is_file()
    # the trainer's own choice does not override the count asked for; the segment states the count it ran on
    assert [s["torch_threads"] for s in again.record["compute"]["segments"]] == [NUM_THREADS + 1]


def test_cli_train_on_yolo_layout_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rfo_bench.io.yolo_format import write_yolo

    gt = write_tiny_coco(tmp_path / "d", n=4)
    data_yaml = write_yolo(read_coco(gt), tmp_path / "yolo")
    code = main(["train", "--model", "retinanet", "--data", str(data_yaml), "--out", str(tmp_path / "run"),
                 "--backbone", "test_resnet", "--epochs", "1", "--imgsz", "64", "--no-progress"])
    assert code == 0
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["train_images"] == 4 and record["train_positive_images"] == 2
    code = main(["predict", "--model-dir", str(tmp_path / "run"), "--data", str(gt), "--out", str(tmp_path / "p"),
                 "--no-progress"])
    assert code == 0
    assert {p.name for p in (tmp_path / "p").iterdir()} == {"predictions.json", "localization.csv",
                                                            "classification.csv", OWNER_MARKER}


def test_cli_train_into_a_trained_run_is_refused_unless_overwrite(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    gt = write_tiny_coco(tmp_path / "d", n=4)
    out = tmp_path / "run"
    argv = ["train", "--model", "retinanet", "--data", str(gt), "--out", str(out), "--backbone", "test_resnet",
            "--epochs", "1", "--imgsz", "64", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    weights = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main([*argv, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err and "--resume" in err and str(out) in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == weights  # the trained model is untouched
    assert main([*argv, "--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "detector.json").read_text())["config"]["seed"] == 1
    # a folder the toolkit did not write is never replaced, even with --overwrite
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    capsys.readouterr()
    assert main([*argv[:6], str(foreign), *argv[7:], "--overwrite"]) == 2
    assert "refusing to replace" in capsys.readouterr().err and (foreign / "notes.txt").read_text() == "keep"


def test_bad_input_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    positives = write_tiny_coco(tmp_path / "d", n=2)
    negatives = write_tiny_coco(tmp_path / "neg", n=2, positives=False)
    out = str(tmp_path / "run")
    assert main(["train", "--model", "detr", "--data", str(positives), "--out", out]) == 2
    assert "unknown detector" in capsys.readouterr().err
    assert main(["train", "--model", "fcos", "--data", str(negatives), "--out", out]) == 2
    assert "no positive image" in capsys.readouterr().err
    yolo = tmp_path / "yolo"
    (yolo / "images" / "train").mkdir(parents=True)
    (yolo / "data.yaml").write_text(f"path: {yolo}\ntrain: images/train\nval: images/val\nnames:\n  0: needle\n")
    assert main(["train", "--model", "yolov8n", "--data", str(yolo / "data.yaml"), "--val", str(yolo / "data.yaml"),
                 "--out", out]) == 2
    err = capsys.readouterr().err
    assert "'val' folder does not exist" in err and err.count("\n") == 1
    (yolo / "data.yaml").write_text("path: /nonexistent/rfo\ntrain: images/train\nnames:\n  0: needle\n")
    assert main(["train", "--model", "yolov8n", "--data", str(yolo), "--out", out]) == 2
    assert "dataset root folder does not exist" in capsys.readouterr().err
    assert main(["predict", "--model-dir", str(tmp_path), "--data", str(positives), "--out", out]) == 2
    assert "not a trained detector directory" in capsys.readouterr().err


class _StopTraining(Exception):
    pass


@pytest.mark.parametrize("optimizer, expected", [("sgd", "SGD"), ("adamw", "AdamW")])
def test_yolo_trainer_receives_the_whole_recipe(tmp_path: Path, monkeypatch, optimizer: str, expected: str) -> None:
    import ultralytics

    from toolkit_core.offline import prepare_offline

    prepare_offline()
    seen: dict = {}

    class FakeYOLO:
        def __init__(self, source: str) -> None:
            seen["source"] = source

        def add_callback(self, event: str, callback) -> None:
            seen.setdefault("callbacks", []).append(event)

        def train(self, **kwargs) -> None:
            seen.update(kwargs)
            raise _StopTraining

    monkeypatch.setattr(ultralytics, "YOLO", FakeYOLO)
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4))
    recipe = recipe_with_overrides("cpu-tiny", {**TINY, "optimizer": optimizer, "momentum": 0.8,
                                                "weight_decay": 0.001, "lr": 0.003, "mosaic": 0.0,
                                                "close_mosaic": 2})
    with pytest.raises(_StopTraining):
        train_detector(TrainConfig(model="yolov8n", recipe=recipe, seed=3), [dataset], tmp_path / "run",
                       progress=False)
    assert seen["source"] == "yolov8n.yaml"
    assert (seen["optimizer"], seen["lr0"], seen["momentum"], seen["weight_decay"]) == (expected, 0.003, 0.8, 0.001)
    assert (seen["epochs"], seen["imgsz"], seen["batch"], seen["seed"], seen["mosaic"]) == (1, 64, 2, 3, 0.0)
    assert seen["close_mosaic"] == 2  # stated by the recipe, never Ultralytics' default by omission


def test_torchvision_loop_trains_with_adamw(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2))
    recipe = recipe_with_overrides("cpu-tiny", {**TINY, "optimizer": "adamw", "lr": 1e-3})
    result = train_detector(TrainConfig(model="fcos", recipe=recipe, backbone="test_resnet"), [dataset],
                            tmp_path / "run", progress=False)
    assert result.record["config"]["recipe"]["optimizer"] == "adamw"
    history = result.record["history"]
    assert np.isfinite(history[0]["loss"]) and history[0]["lr"] > 0


def test_threads_flag_limits_torch_threads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the suite runs on one thread; start from another count
    try:
        assert main(["benchmark", "--config", str(tmp_path / "missing.yaml"), "--threads", "1"]) == 2
        assert torch.get_num_threads() == 1
        with pytest.raises(SystemExit) as info:  # refused by the parser: 0 is not a thread count
            main(["predict", "--model-dir", str(tmp_path), "--data", "x", "--out", "y", "--threads", "0"])
        assert info.value.code == 2 and "--threads" in capsys.readouterr().err
    finally:
        torch.set_num_threads(before)


def test_yolo_refuses_missing_images_instead_of_training_on_fewer(tmp_path: Path) -> None:
    from toolkit_core.errors import UserInputError

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4))
    (tmp_path / "d" / "images" / "3.png").unlink()
    config = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", TINY), seed=0)
    with pytest.raises(UserInputError, match="image file does not exist") as info:
        train_detector(config, [dataset], tmp_path / "run", progress=False)
    assert str(info.value.file).endswith("3.png")


@pytest.mark.parametrize("model", ["retinanet", "yolov8n"])
def test_cli_train_shows_every_epoch_unless_no_progress(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        model: str) -> None:
    gt = write_tiny_coco(tmp_path / "d", n=4)
    argv = ["train", "--model", model, "--data", str(gt), "--backbone", "test_resnet", "--epochs", "2",
            "--imgsz", "64", "--batch", "2"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/2" in captured.err and "epoch 2/2" in captured.err  # tqdm bars on stderr
    assert "epoch" not in captured.out and json.loads(captured.out)["model"] == model
    assert main([*argv, "--out", str(tmp_path / "b"), "--no-progress"]) == 0
    assert "epoch 1/2" not in capsys.readouterr().err


def test_resume_refuses_settings_other_than_the_run_started_with(tmp_path: Path) -> None:
    """The Ultralytics trainer finishes the schedule stored in its checkpoint whatever it is told: a resume
    with another recipe would have produced the old weights under a record stating the new recipe."""
    from toolkit_core.errors import UserInputError

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2))
    config = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", TINY), seed=0)
    first = train_detector(config, [dataset], tmp_path / "run", progress=False)
    longer = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", {**TINY, "epochs": 2}), seed=0)
    with pytest.raises(UserInputError) as info:
        train_detector(longer, [dataset], tmp_path / "run", progress=False, resume=True)
    message = str(info.value)
    assert "settings.json: recipe.epochs:" in message and "recipe.epochs=1" in message and "\n" not in message
    assert json.loads((tmp_path / "run" / "detector.json").read_text()) == first.record  # left as it was
    # where and how fast it runs is not a setting: the same run on more threads is the finished run
    again = TrainConfig(**{**config.__dict__, "threads": 1, "checkpoint_every": 5})
    assert train_detector(again, [dataset], tmp_path / "run", progress=False, resume=True).record == first.record


def test_yolo_without_a_validation_set_never_validates_on_its_training_images(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trainer's end-of-run passes (last epoch, best.pt) would score the training split: they are skipped."""
    from ultralytics.models.yolo.detect import DetectionValidator

    def refuse(*args, **kwargs):
        raise AssertionError("validated without a validation set")

    monkeypatch.setattr(DetectionValidator, "__call__", refuse)
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=44, width=68))
    config = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", {**TINY, "epochs": 2}), seed=0)
    result = train_detector(config, [dataset], tmp_path / "run", progress=False)
    weights = tmp_path / "run" / result.record["weights"]
    assert weights.name == "best.pt" and weights.is_file()
    assert [row["epoch"] for row in result.record["history"]] == [1, 2]  # one row an epoch, as with validation
    header = (tmp_path / "run" / "ultralytics" / "results.csv").read_text().splitlines()[0]
    assert "metrics/mAP50(B)" in header  # the table keeps its columns (zeros)

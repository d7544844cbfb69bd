"""Bad input to ``vision-unlearn run --method steer``: one line, exit code 2, nothing written."""

from __future__ import annotations

import time

import pytest
import torch

from rfo_toolkit.cli import vision_unlearn_main as main
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.checkpoint import save_model


@pytest.fixture()
def model_file(tmp_path):
    torch.manual_seed(0)
    adapter = TimmAdapter(TimmModelSpec("test_resnet", num_classes=10, in_chans=1))
    path = tmp_path / "original.pt"
    save_model(path, adapter.model.state_dict(), adapter.describe(),
               {"dataset": "digits", "image_size": None, "in_chans": 1, "data_seed": 0})
    return path


@pytest.mark.parametrize(("overrides", "forget", "expected"), [
    (["layer=layer9"], "class:3", "layer"),
    ([], "ids:{empty}", "forget"),
])
def test_bad_steer_input_exits_2_with_one_line(model_file, tmp_path, capsys, overrides, forget, expected) -> None:
    empty = tmp_path / "empty_ids.txt"
    empty.write_text("# nobody\n")
    out = tmp_path / "run"
    argv = ["run", "--model-file", str(model_file), "--method", "steer", "--forget", forget.format(empty=empty),
            "--out", str(out), "--no-progress", "--no-eval"]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
    assert not (out / "unlearned.pt").exists() and not (out / "audit.json").exists()


def test_benchmark_with_an_unknown_steering_layer_exits_2_before_training(tmp_path, capsys) -> None:
    out = tmp_path / "bench"
    started = time.perf_counter()
    code = main(["benchmark", "--methods", "steer", "--forget", "class:3", "--seeds", "0-0", "--set",
                 "steer.layer=layer3,stage9", "--out", str(out), "--threads", "1"])
    assert code == 2 and time.perf_counter() - started < 30  # no model was trained
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "steer.layer" in err and "stage9" in err and "layer3" in err and "layer3.0" in err
    assert not (out / "results.json").exists()


def test_detector_steering_with_an_unknown_layer_exits_2_naming_the_neck_maps(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    code = main(["run", "--model", "yolo:yolov8n.yaml", "--data", "toy:6", "--forget", "class:clamp",
                 "--method", "steer", "--set", "layer=detector.model.99", "--imgsz", "64", "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "detector.model.99" in err and "detector.model.15, detector.model.18, detector.model.21" in err
    assert not (out / "unlearned.pt").exists()

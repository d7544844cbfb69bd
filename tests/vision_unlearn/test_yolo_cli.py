"""The detector unlearning command line: bad input exits 2 with one clear line; a run writes an
Ultralytics checkpoint and an audit record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rfo_toolkit.cli import vision_unlearn_main as main
from vision_unlearn.detection_data import make_toy_detection_set, toy_detection_data


def _run(tmp_path: Path, *extra: str) -> list[str]:
    return ["run", "--model", "yolo:yolov8n.yaml", "--method", "ofmu", "--data", "toy:6", "--imgsz", "64", "--out",
            str(tmp_path / "out"), *extra]


def test_unknown_class_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_run(tmp_path, "--forget", "class:scalpel")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "class is not one of the model's classes: needle, sponge, clamp" in err[0]
    assert "scalpel" in err[0] and "Traceback" not in err[0]


def test_unknown_instance_ids_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    listing = tmp_path / "wrong_objects.txt"
    listing.write_text("toy_0_00000.png@0\ntoy_0_00099.png@4\n")
    assert main(_run(tmp_path, "--forget", f"instances:{listing}")) == 2
    err = capsys.readouterr().err
    assert "wrong_objects.txt" in err and "instance id(s) do not exist" in err and "toy_0_00099.png@4" in err


def test_segmentation_checkpoint_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from ultralytics.nn.tasks import SegmentationModel

    path = tmp_path / "seg.pt"
    torch.save({"model": SegmentationModel("yolov8n-seg.yaml", ch=1, nc=3, verbose=False).half()}, path)
    argv = ["run", "--model", f"yolo:{path}", "--method", "ofmu", "--data", "toy:4", "--imgsz", "64", "--forget", "class:needle",
            "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "seg.pt" in err and "segment checkpoint" in err and "needs a detection model" in err


def test_toy_set_is_seeded_and_boxes_cover_the_drawn_objects() -> None:
    first = make_toy_detection_set(5, seed=3)
    second = make_toy_detection_set(5, seed=3)
    for a, b in zip(first[0], second[0]):
        assert (a == b).all()
    images, boxes, labels, _, patients = first
    assert images[0].shape == (144, 176) and patients[0] == patients[1] != patients[2]
    for image, image_boxes in zip(images, boxes):
        for x1, y1, x2, y2 in image_boxes.astype(int):
            assert image[y1:y2, x1:x2].max() > 0.7  # an object is drawn inside each box
    data = toy_detection_data(5, 3, 64)
    assert data.image_size == (64, 64) and data.class_names == ("needle", "sponge", "clamp")


@pytest.mark.slow
def test_run_writes_a_loadable_checkpoint_and_an_audit_record(tmp_path: Path) -> None:
    from ultralytics import YOLO

    argv = _run(tmp_path, "--forget", "class:clamp", "--method", "finetune", "--set", "epochs=1", "--set", "batch_size=4",
                "--test-data", "toy:4:9")
    assert main(argv) == 0
    out = tmp_path / "out"
    record = json.loads((out / "audit.json").read_text())
    assert record["method"] == "finetune" and record["forgotten"]["request_value"] == "clamp"
    assert "forget_ap50" in record["metrics"]
    model = YOLO(str(out / "unlearned.pt"))
    assert model.task == "detect" and model.names[2] == "clamp"

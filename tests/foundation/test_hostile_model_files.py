"""Model and data files a user passes in never run code, and a damaged one is one line with exit code 2.

Every crafted file here would create a marker file when un-pickled the ordinary way (the first test
shows that it does); on every load path of the toolkit the marker must stay absent and the command
must fail with one line naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit_core.errors import UserInputError


class OpenMarker:
    """Un-pickling this calls ``open(marker, "w")``: the file appears."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class SystemMarker:
    """Un-pickling this runs a shell command that creates the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


PAYLOADS = {"open": OpenMarker, "system": SystemMarker}


def crafted_checkpoint(path: Path, marker: Path, *, container: str = "torch", payload: str = "open") -> Path:
    """A ``.pt`` that runs code when loaded with ``weights_only=False``.

    ``container``: ``"torch"`` (the zip archive of ``torch.save``), ``"legacy"`` (torch's old
    format), ``"pickle"`` (a bare pickle) or ``"ultralytics"`` (a real detection model whose
    ``train_args`` hide the payload, the shape of a genuine checkpoint).
    """
    evil = PAYLOADS[payload](marker)
    if container == "torch":
        torch.save({"model": evil}, path)
    elif container == "legacy":
        torch.save({"model": evil}, path, _use_new_zipfile_serialization=False)
    elif container == "pickle":
        with open(path, "wb") as handle:
            pickle.dump({"model": evil}, handle, protocol=2)
    else:
        from toolkit_core.offline import prepare_offline

        prepare_offline()
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel("yolov8n.yaml", ch=1, nc=1, verbose=False).half()
        torch.save({"model": model, "train_args": {"task": "detect", "note": evil}}, path)
    return path


def one_error_line(err: str, name: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert name in lines[0] and "Traceback" not in err
    return lines[0]


def test_the_crafted_files_are_live(tmp_path: Path) -> None:
    """Control: the ordinary un-pickling of each crafted file does create the marker."""
    for name in PAYLOADS:
        marker = tmp_path / f"control-{name}"
        path = crafted_checkpoint(tmp_path / f"{name}.pt", marker, container="pickle", payload=name)
        with open(path, "rb") as handle:
            pickle.load(handle)
        assert marker.exists()


# --- YOLO checkpoints -------------------------------------------------------------------------------
@pytest.mark.parametrize(("container", "payload"), [("torch", "open"), ("torch", "system"), ("legacy", "open"),
                                                    ("pickle", "system"), ("ultralytics", "open")])
def test_yolo_adapter_refuses_a_crafted_checkpoint(tmp_path: Path, container: str, payload: str) -> None:
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec

    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker, container=container, payload=payload)
    with pytest.raises(UserInputError) as info:
        YoloAdapter(YoloModelSpec(str(path)))
    assert not marker.exists()
    assert info.value.file == str(path) and "refused" in info.value.message and "\n" not in str(info.value)


def test_yolo_model_yaml_cannot_run_code(tmp_path: Path) -> None:
    """Ultralytics ``eval``s a yaml's ``activation`` unless restricted loading is on."""
    import yaml

    from rfo_bench.detectors.ultralytics_setup import import_ultralytics
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec

    import_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    marker = tmp_path / "marker"
    cfg = {k: v for k, v in yaml_model_load("yolov8n.yaml").items() if k in ("nc", "scales", "backbone", "head")}
    cfg["activation"] = f"__import__('os').system(\"touch '{marker}'\")"
    path = tmp_path / "evil.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    with pytest.raises(UserInputError) as info:
        YoloAdapter(YoloModelSpec(str(path), num_classes=2))
    assert not marker.exists()
    assert "cannot build a detection model from this yaml" in info.value.message


def test_our_own_yolo_checkpoint_still_loads(tmp_path: Path) -> None:
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec

    torch.manual_seed(0)
    adapter = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=2, in_chans=1, image_size=64,
                                        class_names=("needle", "sponge")))
    path = adapter.save(tmp_path / "model.pt", record={"method": "test"})
    again = YoloAdapter(YoloModelSpec(str(path), image_size=64))
    assert again.class_names == ("needle", "sponge")
    for name, value in adapter.detector.state_dict().items():  # saved in half precision, as Ultralytics does
        expected = value.half().float() if value.is_floating_point() else value
        torch.testing.assert_close(again.detector.state_dict()[name], expected)


def test_vision_unlearn_run_refuses_a_crafted_checkpoint(tmp_path: Path) -> None:
    """The installed console script, in a fresh process: exit 2, one line naming the file, no marker."""
    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "evil.pt", marker, payload="system")
    script = Path(sys.executable).with_name("vision-unlearn")
    out = tmp_path / "out"
    result = subprocess.run([str(script), "run", "--model", f"yolo:{path}", "--method", "finetune", "--data", "toy:4",
                             "--imgsz", "64",
                             "--forget", "class:needle", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert not marker.exists()
    assert result.returncode == 2, result.stderr
    assert "refused" in one_error_line(result.stderr, str(path))
    assert not out.exists()


def _detector_dir(root: Path, model: str, weights_name: str, **config_extra) -> Path:
    from rfo_bench.detectors import TrainConfig, recipe_with_overrides

    config = TrainConfig(model=model, recipe=recipe_with_overrides("cpu-tiny", {"imgsz": 64}), **config_extra)
    root.mkdir(parents=True)
    record = {"format": "rfo-detector/1", "model": model, "family": "ultralytics" if "yolo" in model else "torchvision",
              "config": config.to_dict(), "categories": [{"id": 3, "name": "needle", "critical": True}],
              "weights": weights_name}
    (root / "detector.json").write_text(json.dumps(record), encoding="utf-8")
    return root


@pytest.fixture
def coco(tmp_path: Path) -> Path:
    from tests.rfo_bench.test_detectors_data import write_tiny_coco

    return write_tiny_coco(tmp_path / "data", n=2)


def test_rfo_bench_predict_refuses_a_crafted_yolo_checkpoint(tmp_path: Path, coco: Path, capsys) -> None:
    from rfo_toolkit.cli import rfo_bench_main as main

    marker = tmp_path / "marker"
    run = _detector_dir(tmp_path / "run", "yolov8n", "best.pt")
    crafted_checkpoint(run / "best.pt", marker, container="ultralytics")
    out = tmp_path / "pred"
    code = main(["predict", "--model-dir", str(run), "--data", str(coco), "--out", str(out)])
    assert not marker.exists()
    assert code == 2
    assert "refused" in one_error_line(capsys.readouterr().err, str(run / "best.pt"))
    assert not out.exists()


def test_rfo_bench_predict_refuses_an_exported_yolo_format(tmp_path: Path, coco: Path, capsys) -> None:
    from rfo_toolkit.cli import rfo_bench_main as main

    run = _detector_dir(tmp_path / "run", "yolov8n", "best.torchscript")
    (run / "best.torchscript").write_bytes(b"\0" * 16)
    assert main(["predict", "--model-dir", str(run), "--data", str(coco), "--out", str(tmp_path / "p")]) == 2
    assert ".pt file" in one_error_line(capsys.readouterr().err, "best.torchscript")


def test_rfo_bench_train_refuses_crafted_yolo_weights(tmp_path: Path, coco: Path, capsys) -> None:
    from rfo_toolkit.cli import rfo_bench_main as main

    marker = tmp_path / "marker"
    weights = crafted_checkpoint(tmp_path / "evil.pt", marker, payload="system")
    out = tmp_path / "run"
    code = main(["train", "--model", "yolov8n", "--data", str(coco), "--weights", str(weights), "--out", str(out),
                 "--epochs", "1", "--imgsz", "64"])
    assert not marker.exists()
    assert code == 2
    assert "refused" in one_error_line(capsys.readouterr().err, str(weights))
    assert not out.exists() or not any(out.iterdir())  # refused before anything was written


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", b"\x80\x02}q\x00."])
def test_rfo_bench_predict_with_damaged_torchvision_weights_exits_2(tmp_path: Path, coco: Path, capsys,
                                                                  content: bytes) -> None:
    from rfo_toolkit.cli import rfo_bench_main as main

    run = _detector_dir(tmp_path / "run", "fcos", "model.pt", backbone="test_resnet")
    (run / "model.pt").write_bytes(content)
    assert main(["predict", "--model-dir", str(run), "--data", str(coco), "--out", str(tmp_path / "p")]) == 2
    one_error_line(capsys.readouterr().err, str(run / "model.pt"))


def test_rfo_bench_predict_with_weights_of_another_model_exits_2(tmp_path: Path, coco: Path, capsys) -> None:
    from rfo_toolkit.cli import rfo_bench_main as main

    run = _detector_dir(tmp_path / "run", "fcos", "model.pt", backbone="test_resnet")
    torch.save({"backbone.weight": torch.zeros(3)}, run / "model.pt")
    assert main(["predict", "--model-dir", str(run), "--data", str(coco), "--out", str(tmp_path / "p")]) == 2
    assert "do not fit" in one_error_line(capsys.readouterr().err, str(run / "model.pt"))


# --- CIFAR batches ----------------------------------------------------------------------------------
def _write_cifar10(directory: Path, protocol: int) -> None:
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"batch_label": b"a batch", b"labels": [1, 2], b"filenames": [b"a.png", b"b.png"],
                 b"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8)}
        with open(directory / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=protocol)
    with open(directory / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)], b"num_vis": 3072}, handle,
                    protocol=protocol)


@pytest.mark.parametrize("protocol", [2, 4, 5])  # 2: how the CIFAR distribution is written
def test_cifar_batches_of_every_protocol_load(tmp_path: Path, protocol: int) -> None:
    from vision_unlearn.data import load_classification_data

    _write_cifar10(tmp_path / "cifar-10-batches-py", protocol)
    data = load_classification_data(f"cifar10:{tmp_path}", in_chans=3)
    assert len(data["train"]) == 10 and data["train"].class_names[9] == "c9"


@pytest.mark.parametrize("payload", ["open", "system"])
def test_cifar_loader_refuses_a_crafted_batch(tmp_path: Path, payload: str) -> None:
    from vision_unlearn.data import load_classification_data

    directory = tmp_path / "cifar-10-batches-py"
    _write_cifar10(directory, 2)
    marker = tmp_path / "marker"
    with open(directory / "data_batch_3", "wb") as handle:
        pickle.dump({b"data": PAYLOADS[payload](marker), b"labels": [1]}, handle, protocol=2)
    with pytest.raises(UserInputError) as info:
        load_classification_data(f"cifar10:{tmp_path}")
    assert not marker.exists()
    assert info.value.file == str(directory / "data_batch_3") and "refused" in info.value.message


def test_vision_unlearn_train_on_a_crafted_cifar_batch_exits_2(tmp_path: Path, capsys) -> None:
    from rfo_toolkit.cli import vision_unlearn_main as main

    directory = tmp_path / "cifar-10-batches-py"
    _write_cifar10(directory, 2)
    marker = tmp_path / "marker"
    with open(directory / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": SystemMarker(marker)}, handle, protocol=2)
    out = tmp_path / "model.pt"
    code = main(["train", "--dataset", f"cifar10:{tmp_path}", "--out", str(out), "--threads", "1", "--no-progress"])
    assert not marker.exists()
    assert code == 2
    assert "refused" in one_error_line(capsys.readouterr().err, str(directory / "batches.meta"))
    assert not out.exists()


@pytest.mark.parametrize("content", [b"", b"\x80\x02]q\x00(K\x01", b"not a pickle at all"])
def test_damaged_cifar_batch_is_a_user_error(tmp_path: Path, content: bytes) -> None:
    from vision_unlearn.data import load_classification_data

    directory = tmp_path / "cifar-10-batches-py"
    _write_cifar10(directory, 2)
    (directory / "test_batch").write_bytes(content)
    with pytest.raises(UserInputError) as info:
        load_classification_data(f"cifar10:{tmp_path}")
    assert info.value.file == str(directory / "test_batch")


# --- classifier model files (weights_only) ---------------------------------------------------------
def test_vision_unlearn_model_file_with_code_is_refused(tmp_path: Path, capsys) -> None:
    from rfo_toolkit.cli import vision_unlearn_main as main

    marker = tmp_path / "marker"
    path = crafted_checkpoint(tmp_path / "model.pt", marker, payload="system")
    out = tmp_path / "run"
    code = main(["run", "--model-file", str(path), "--method", "finetune", "--forget", "class:3", "--out", str(out),
                 "--threads", "1", "--no-progress"])
    assert not marker.exists()
    assert code == 2
    assert "refused" in one_error_line(capsys.readouterr().err, str(path))


def test_detection_data_cache_damaged_or_foreign(tmp_path: Path) -> None:
    from vision_unlearn.adapters.yolo_data import load_detection_cache

    damaged = tmp_path / "cache.pt"
    damaged.write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(UserInputError, match="damaged") as info:
        load_detection_cache(damaged)
    assert info.value.file == str(damaged)
    foreign = tmp_path / "foreign.pt"
    torch.save({"images": torch.zeros(1)}, foreign)
    with pytest.raises(UserInputError, match="not a detection-data cache"):
        load_detection_cache(foreign)

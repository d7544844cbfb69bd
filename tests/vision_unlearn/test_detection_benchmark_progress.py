"""The detector benchmark shows its progress by default (a bar over its detector runs on stderr) and
writes its trade-off plot; progress=False keeps stderr free of the bar."""

from __future__ import annotations

from vision_unlearn.detection_benchmark import make_benchmark_config, run_detection_benchmark


def _config():
    return make_benchmark_config(image_size=64, n_train=8, n_test=4, seeds=(0,), methods=["finetune"],
                                 scenarios=["class:clamp"],
                                 overrides={"original": {"epochs": 1, "batch_size": 4}, "finetune": {"epochs": 1}})


def test_detector_benchmark_bar_by_default_and_quiet_without_progress(tmp_path, capsys) -> None:
    run_detection_benchmark(_config(), tmp_path / "on")
    err = capsys.readouterr().err
    assert "detector benchmark" in err and "3/3" in err  # original + 1 retrain + finetune
    assert (tmp_path / "on" / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    run_detection_benchmark(_config(), tmp_path / "off", progress=False)
    assert "detector benchmark" not in capsys.readouterr().err

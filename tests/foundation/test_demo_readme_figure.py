"""The README's demo figure is composed from a finished demo's own files, names its held-out figures, and
refuses a folder that is not a finished demo in one line (exit 2)."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _script(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as when run: it imports its neighbour's PNG shrinker
    spec = importlib.util.spec_from_file_location("render_demo_figure", REPO / "benchmarks" / "render_demo_figure.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _finished_demo(root: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(0)
    for name, shape in (("detector/eval/froc.png", (120, 360, 3)), ("detector/eval/errors.png", (200, 300, 3)),
                        ("unlearn/detections_class.png", (500, 220, 3))):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        plt.imsave(root / name, rng.random(shape))
    stage = {"coco": {"AP50": 0.61}, "froc": {"score": 0.9}, "auroc": 0.97, "n_test": 36,
             "ci95": {"AP50": [0.5, 0.7], "froc": [0.85, 0.95], "auroc": None},
             "detector": {"dir": "/home/someone/rfo_bench/assets/shipped_detector", "recipe": "shipped-yolov8n-320",
                          "weights_sha256": "ab" * 32}}
    (root / "detector" / "stage.json").write_text(json.dumps(stage))
    (root / "run.json").write_text(json.dumps({"config": {"seed": 0}}))
    return root


def test_the_figure_is_a_small_png_of_the_demo_s_own_figures(tmp_path: Path, monkeypatch) -> None:
    script = _script(monkeypatch)
    demo = _finished_demo(tmp_path / "demo")
    out = tmp_path / "docs" / "demo_report.png"
    assert script.main(["--demo", str(demo), "--out", str(out)]) == 0
    data = out.read_bytes()
    width, _ = struct.unpack(">II", data[16:24])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) <= script.MAX_BYTES and width <= script.WIDTH_PX
    stage = json.loads((demo / "detector" / "stage.json").read_text())
    # the title names the detector by its recipe and weights hash (never a machine's path) and its figures
    assert script.figure_title(stage, {"seed": 0}) == (
        "vision-unlearn demo, seed 0, detector shipped-yolov8n-320 @ abababababab\n"
        "36 held-out films: AP50 0.610 [0.500, 0.700], FROC 0.900 [0.850, 0.950], AUROC 0.970 –")
    assert "trained from scratch" in script.figure_title({**stage, "detector": None}, {"seed": 1})


def test_a_folder_that_is_not_a_finished_demo_is_one_line(tmp_path: Path, capsys, monkeypatch) -> None:
    script = _script(monkeypatch)
    (tmp_path / "half").mkdir()
    with pytest.raises(SystemExit) as stop:
        script.main(["--demo", str(tmp_path / "half"), "--out", str(tmp_path / "x.png")])
    assert stop.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "not a finished demo" in error and "stage.json" in error
    assert not (tmp_path / "x.png").exists()

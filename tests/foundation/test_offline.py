"""Offline set-up: building, training and running a YOLO model makes no network attempt."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from toolkit_core.offline import prepare_offline

SCRIPT = textwrap.dedent(
    r"""
    import json, socket, sys
    from pathlib import Path

    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled by test")

    socket.create_connection = refuse
    socket.getaddrinfo = refuse
    socket.socket.connect = lambda self, *a, **k: refuse(*a)
    socket.socket.connect_ex = lambda self, *a, **k: refuse(*a)

    from toolkit_core.offline import prepare_offline
    cache = Path(sys.argv[1])
    prepare_offline(cache)

    import numpy as np
    from PIL import Image
    from ultralytics import YOLO

    data = cache / "tiny"
    for split in ("train", "val"):
        (data / "images" / split).mkdir(parents=True, exist_ok=True)
        (data / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            img = np.full((64, 64, 3), 30, dtype=np.uint8)
            img[20:40, 24:36] = 220
            Image.fromarray(img).save(data / "images" / split / f"{i}.png")
            (data / "labels" / split / f"{i}.txt").write_text("0 0.46875 0.46875 0.1875 0.3125\n")
    (data / "data.yaml").write_text(
        f"path: {data}\ntrain: images/train\nval: images/val\nnames:\n  0: needle\n"
    )
    model = YOLO("yolov8n.yaml")
    model.train(data=str(data / "data.yaml"), epochs=1, imgsz=64, batch=2, workers=0, device="cpu",
                project=str(cache / "runs"), name="t", exist_ok=True, plots=True, amp=False, verbose=False)
    results = model.predict(np.zeros((64, 64, 3), dtype=np.uint8), imgsz=64, verbose=False)
    print(json.dumps({"attempts": attempts, "n_results": len(results)}))
    """
)


def test_prepare_offline_sets_env_and_font(tmp_path: Path, monkeypatch) -> None:
    for key in ("HF_HUB_OFFLINE", "YOLO_OFFLINE", "YOLO_AUTOINSTALL", "YOLO_CONFIG_DIR", "MPLCONFIGDIR"):
        monkeypatch.delenv(key, raising=False)
    base = prepare_offline(tmp_path)
    assert base == tmp_path.resolve()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["YOLO_OFFLINE"] == "true" and os.environ["YOLO_AUTOINSTALL"] == "false"
    font = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics" / "Arial.ttf"
    assert font.stat().st_size > 100_000  # a real TrueType font, so Ultralytics never downloads one


def test_import_has_no_side_effects() -> None:
    code = (
        "import os, sys; before = dict(os.environ);"
        "import vision_unlearn, rfo_bench, synth, rfo_bench.io, toolkit_core.offline, vision_unlearn.cli;"
        "import synth.cli, rfo_bench.cli, rfo_toolkit.cli, rfo_toolkit.leaderboard;"
        "import rfo_toolkit.report, rfo_toolkit.demo.pipeline, toolkit_core.extras;"
        "assert dict(os.environ) == before, 'environment changed at import';"
        "assert 'ultralytics' not in sys.modules, 'ultralytics imported at package import';"
        # the optional extras and test-only packages stay unimported until a job needs them
        "heavy = [m for m in ('diffusers', 'albumentations', 'transformers', 'monai') if m in sys.modules];"
        "assert not heavy, f'{heavy} imported at package import'"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "HF_"))}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


def test_yolo_build_train_predict_makes_no_network_attempt(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("YOLO_", "HF_", "MPLCONFIGDIR"))}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "cache")],
        capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["n_results"] == 1

"""Every command that writes: an ``--out`` that cannot be written is one line naming it and exit 2.

Three kinds of bad ``--out``: an existing file where a folder is expected (or the reverse), a path
below a file, and a folder that cannot be written (read-only for a normal user; for root, who ignores
permission bits, a path under ``/proc`` that nobody can create). Each command runs in a subprocess, as a
user would run it, and must neither print a traceback nor leave the file it was given changed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-image COCO dataset (8-bit PNGs) with one needle."""
    root = tmp_path_factory.mktemp("data")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64), dtype=np.uint8)).save(root / "images" / f"{i}.png")
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "width": 64, "height": 48})
    coco = {"images": images, "categories": [{"id": 1, "name": "needle"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 4], "area": 32,
                             "iscrowd": 0}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    (root / "predictions.json").write_text(json.dumps(
        [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 8, 4], "score": 0.9}]))
    return root


def _read_only_dir(tmp_path: Path) -> Path:
    if os.geteuid() == 0:
        return Path("/proc/rfo-toolkit-no-such-entry")
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _commands(data: Path) -> dict[str, list[str]]:
    gt = str(data / "annotations.json")
    return {
        "synth-physics": ["rfo-synth", "physics", "--n", "1", "--size", "64", "--no-progress", "--out"],
        "bench-convert": ["rfo-bench", "convert", gt, "--to", "coco", "--out"],
        "bench-split": ["rfo-bench", "split", gt, "--out"],
        "bench-eval": ["rfo-bench", "eval", "--gt", gt, "--pred", str(data / "predictions.json"), "--no-plots",
                       "--bootstrap", "0", "--out"],
        "bench-train": ["rfo-bench", "train", "--model", "fasterrcnn", "--data", gt, "--epochs", "1", "--imgsz",
                        "64", "--no-progress", "--out"],
        "bench-predict": ["rfo-bench", "predict", "--model-dir", str(data / "no-model-here"), "--data", gt,
                          "--no-progress", "--out"],
        "unlearn-train": ["vision-unlearn", "train", "--dataset", "digits", "--set", "epochs=1", "--no-progress",
                          "--out"],
        "diffusion-train": ["rfo-synth", "diffusion", "train", "--data", str(data), "--preset", "tiny", "--size",
                            "32", "--steps", "1", "--out"],
    }


BAD_KINDS = ("existing-file", "below-a-file", "read-only")


def _bad_out(kind: str, tmp_path: Path, command: str) -> tuple[Path, bytes | None]:
    if kind == "existing-file":
        target = tmp_path / "taken"
        # A folder where a file is expected (a model file, a converted annotation file), else a file.
        if command in ("unlearn-train", "bench-convert"):
            target.mkdir()
            (target / "keep.txt").write_text("user data")
            return target, None
        target.write_bytes(b"user data")
        return target, b"user data"
    if kind == "below-a-file":
        (tmp_path / "plain").write_bytes(b"user data")
        return tmp_path / "plain" / "out", None
    return _read_only_dir(tmp_path) / "out", None


@pytest.mark.parametrize("kind", BAD_KINDS)
@pytest.mark.parametrize("command", sorted(_commands(Path("."))))
def test_unwritable_out_is_one_line_and_exit_2(dataset: Path, tmp_path: Path, command: str, kind: str) -> None:
    out, content = _bad_out(kind, tmp_path, command)
    argv = _commands(dataset)[command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([str(BIN / argv[0]), *argv[1:], str(out)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path, env=env)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, result.stderr[-2000:]
    assert str(out.name) in errors[0] or str(out.parent.name) in errors[0]
    if content is not None:
        assert out.read_bytes() == content

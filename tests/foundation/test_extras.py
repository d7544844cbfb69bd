"""The optional extras: without them the core commands work, and a job that needs one names it.

A driver script, run in a fresh interpreter, hides ``ultralytics``, ``diffusers`` and ``albumentations``
behind a ``sys.meta_path`` finder (as if ``pip install rfo-toolkit`` had been run without extras) and
then runs ``rfo-bench validate`` and ``rfo-bench eval`` on a tiny COCO set, and a YOLO training, which
must stop with one line naming the ``[yolo]`` extra.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from toolkit_core.extras import OPTIONAL_DEPENDENCIES, install_hint, missing_extra_message

ROOT = Path(__file__).resolve().parents[2]
HIDDEN = ("ultralytics", "diffusers", "albumentations")

DRIVER = textwrap.dedent(
    r"""
    import json, sys
    from pathlib import Path

    HIDDEN = set(sys.argv[2].split(","))

    class Uninstalled:
        # what Python's own path finder does for a package that is not installed
        @staticmethod
        def find_spec(name, path=None, target=None):
            if name.partition(".")[0] in HIDDEN:
                raise ModuleNotFoundError(f"No module named {name.partition('.')[0]!r}", name=name.partition(".")[0])
            return None

    sys.meta_path.insert(0, Uninstalled)

    import numpy as np
    from rfo_bench.io.images import write_png16
    from rfo_toolkit.cli import rfo_bench_main

    root = Path(sys.argv[1])
    rng = np.random.default_rng(0)
    images, anns, preds = [], [], []
    for i in range(4):
        write_png16(root / f"im{i}.png", rng.random((11, 17)))
        images.append({"id": i + 1, "file_name": f"im{i}.png", "width": 17, "height": 11})
        if i % 2:
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [2, 1, 6, 5],
                         "area": 30, "iscrowd": 0})
            preds.append({"image_id": i + 1, "category_id": 1, "bbox": [2, 1, 6, 5], "score": 0.9})
        preds.append({"image_id": i + 1, "category_id": 1, "bbox": [12, 6, 3, 3], "score": 0.2})
    gt = {"images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "sponge", "supercategory": "critical"}]}
    (root / "gt.json").write_text(json.dumps(gt))
    (root / "pred.json").write_text(json.dumps(preds))

    out = {}
    out["validate"] = rfo_bench_main(["validate", str(root / "gt.json")])
    out["eval"] = rfo_bench_main(["eval", "--gt", str(root / "gt.json"), "--pred", str(root / "pred.json"),
                                  "--out", str(root / "eval"), "--bootstrap", "20", "--no-plots"])
    yolo = ["train", "--model", "yolov8n", "--data", str(root / "gt.json"), "--out", str(root / "yolo"),
            "--no-progress"]
    out["yolo_exit"] = rfo_bench_main(yolo)
    out["loaded"] = sorted(m for m in sys.modules if m.partition(".")[0] in HIDDEN)
    print("RESULT " + json.dumps(out))
    """
)


def test_core_commands_run_without_extras_and_yolo_names_its_extra(tmp_path: Path) -> None:
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    data = tmp_path / "data"
    data.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(driver), str(data), ",".join(HIDDEN)], capture_output=True,
                          text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    assert result["validate"] == 0 and result["eval"] == 0
    assert (data / "eval" / "report.json").is_file()
    assert result["loaded"] == []  # the blocker held: none of the hidden packages was imported
    # the CLI convention (toolkit_core.cli_support) turns the missing package into one line and exit code 2
    assert result["yolo_exit"] == 2
    errors = [x for x in proc.stderr.splitlines() if x.startswith("rfo-bench: error:")]
    assert errors == ["rfo-bench: error: `rfo-bench train` needs the optional dependency ultralytics: "
                      "pip install 'rfo-toolkit[yolo]'"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(("name", "command", "expected"), [
    ("ultralytics", "rfo-bench train --model yolov8n",
     "`rfo-bench train --model yolov8n` needs the optional dependency ultralytics: pip install 'rfo-toolkit[yolo]'"),
    ("diffusers", None, "this command needs the optional dependency diffusers: pip install 'rfo-toolkit[diffusion]'"),
    ("albumentations", "  rfo-bench   train --model fasterrcnn ",
     "`rfo-bench train --model fasterrcnn` needs the optional dependency albumentations: "
     "pip install 'rfo-toolkit[detectors]'"),
])
def test_missing_extra_message_names_the_extra(name: str, command: str | None, expected: str) -> None:
    assert missing_extra_message(ModuleNotFoundError(f"No module named {name!r}", name=name), command) == expected


@pytest.mark.parametrize("err", [
    ModuleNotFoundError("No module named 'ultralytics.nn.foo'", name="ultralytics.nn.foo"),  # broken install
    ModuleNotFoundError("No module named 'polars'", name="polars"),  # not ours to name
    ModuleNotFoundError("custom"),  # no name
    ImportError("cannot import name 'YOLO'", name="ultralytics"),  # installed, but the wrong version
    ValueError("ultralytics"),
])
def test_other_errors_are_not_missing_extras(err: BaseException) -> None:
    assert missing_extra_message(err) is None


def test_every_mapped_extra_installs_its_package() -> None:
    """The map in toolkit_core.extras and pyproject.toml's extras say the same thing."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project["optional-dependencies"]
    core = " ".join(project["dependencies"])
    for dep in OPTIONAL_DEPENDENCIES.values():
        assert any(req.startswith(dep.distribution) for req in extras[dep.extra]), dep
        assert dep.distribution not in core, f"{dep.distribution} is optional, not core"
        assert f"[{dep.extra}]" in install_hint(dep.extra)
    everything = " ".join(extras["all"])
    assert all(dep.extra in everything for dep in OPTIONAL_DEPENDENCIES.values())

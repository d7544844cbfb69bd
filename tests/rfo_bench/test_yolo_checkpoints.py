"""A YOLO run stopped inside an epoch resumes from its mid-epoch checkpoint and runs only what is left.

Also: the compute ledger adds every segment (child processes included) and is written while a run goes,
so a run killed outright still counts what it spent.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rfo_bench.detectors.api import COMPUTE_LEDGER, train_detector
from rfo_bench.detectors.provenance import ComputeMeter
from rfo_bench.detectors.yolo import copy_resume_state
from rfo_bench.detectors.yolo_checkpoints import PARTIAL_NAME, PARTIAL_RECORD, clear_partial, read_partial
from rfo_bench.io.coco import read_coco
from tests.rfo_bench.test_detectors_data import write_tiny_coco
from tests.rfo_bench.test_tiling_train import HEIGHT, WIDTH, tiled_config
from toolkit_core.errors import UserInputError
from toolkit_core.utils import sha256_file


def _three_epochs(**fields):
    config = tiled_config("yolov8n", checkpoint_every=1, **fields)
    recipe = config.recipe.__class__(**{**config.recipe.__dict__, "epochs": 3})
    return config.__class__(**{**config.__dict__, "recipe": recipe})


def _count_batches(monkeypatch, stop_at: int | None = None) -> list[int]:
    from ultralytics.models.yolo.detect import DetectionTrainer

    real, seen = DetectionTrainer.preprocess_batch, []

    def counting(self, batch):
        seen.append(self.epoch)
        if stop_at is not None and len(seen) == stop_at:
            raise KeyboardInterrupt  # a stop in the middle of a batch
        return real(self, batch)

    monkeypatch.setattr(DetectionTrainer, "preprocess_batch", counting)
    return seen


def test_a_yolo_run_stopped_inside_an_epoch_resumes_there(tmp_path: Path, monkeypatch) -> None:
    from rfo_bench.detectors.ultralytics_setup import import_ultralytics

    import_ultralytics()
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))
    config = _three_epochs()  # 7 tiles (2 positive, 1 object-free, 4 whole films), batch 2: 4 batches an epoch
    weights = tmp_path / "run" / "ultralytics" / "weights"

    first = _count_batches(monkeypatch, stop_at=4 + 3)  # epoch 2 stops in its third batch
    with pytest.raises(KeyboardInterrupt):
        train_detector(config, [dataset], tmp_path / "run", progress=False)
    assert first == [0, 0, 0, 0, 1, 1, 1]
    partial = read_partial(weights, last_epoch=0)
    assert partial is not None and (partial.epoch, partial.batches_done) == (1, 2)
    assert partial.sha256 == sha256_file(weights / PARTIAL_NAME)
    ledger = json.loads((tmp_path / "run" / COMPUTE_LEDGER).read_text())
    assert ledger["cpu_seconds"] > 0 and len(ledger["segments"]) == 1

    # Carried to another machine: the copy leaves out the tiles and data layout (made again) and best.pt.
    with pytest.raises(UserInputError, match="no checkpoint"):
        copy_resume_state(tmp_path / "d", tmp_path / "nothing")
    assert copy_resume_state(tmp_path / "run", tmp_path / "moved") == "1 epoch done, 2 batches of epoch 2"
    with pytest.raises(UserInputError, match="already exists"):
        copy_resume_state(tmp_path / "run", tmp_path / "moved")
    damaged = tmp_path / "damaged"
    copy_resume_state(tmp_path / "run", damaged)
    (damaged / "ultralytics" / "weights" / "last.pt").write_bytes(b"half a checkpoint")
    with pytest.raises(UserInputError):
        copy_resume_state(damaged, tmp_path / "from_damaged")
    assert not (tmp_path / "from_damaged").exists()
    assert not [p for p in (tmp_path / "moved").iterdir() if p.name.startswith((".tiles", ".yolo_data"))]
    assert {p.name for p in (tmp_path / "moved" / "ultralytics" / "weights").iterdir()} == {
        "last.pt", PARTIAL_NAME, PARTIAL_RECORD}

    left = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}

    monkeypatch.undo()
    second = _count_batches(monkeypatch)
    result = train_detector(config, [dataset], tmp_path / "moved", progress=False, resume=True)
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == left  # nothing written where it came from
    assert second == [1, 1, 2, 2, 2, 2]  # the rest of epoch 2, then epoch 3: no batch is done twice
    assert [row["epoch"] for row in result.record["history"]] == [1, 2, 3]
    moved = tmp_path / "moved" / "ultralytics" / "weights"
    assert not (moved / PARTIAL_NAME).exists() and not (moved / PARTIAL_RECORD).exists()
    compute = result.record["compute"]
    assert len(compute["segments"]) == 2 and compute["accelerator_seconds"] == 0
    assert compute["cpu_seconds"] == pytest.approx(sum(s["cpu_seconds"] for s in compute["segments"]), abs=0.05)
    assert [s["data_sha256"] for s in compute["segments"]] == [result.record["data_sha256"]] * 2
    # the run's training time spans both segments, not the resumed one alone
    assert result.train_seconds == result.record["train_seconds"] > compute["segments"][0]["wall_seconds"]


def test_a_stale_or_damaged_partial_checkpoint_is_ignored(tmp_path: Path) -> None:
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / PARTIAL_NAME).write_bytes(b"checkpoint bytes")
    record = {"epoch": 3, "batches_done": 5, "sha256": sha256_file(weights / PARTIAL_NAME)}
    (weights / PARTIAL_RECORD).write_text(json.dumps(record))
    assert read_partial(weights, last_epoch=2) is not None
    assert read_partial(weights, last_epoch=3) is None  # last.pt already holds epoch 4: stale
    (weights / PARTIAL_NAME).write_bytes(b"other bytes")  # killed between the two writes
    assert read_partial(weights, last_epoch=2) is None
    (weights / PARTIAL_RECORD).write_text("{not json")
    assert read_partial(weights, last_epoch=2) is None
    clear_partial(weights)
    assert list(weights.iterdir()) == []


def test_the_compute_meter_counts_child_processes_and_adds_segments_by_device() -> None:
    meter = ComputeMeter("cpu")
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass"],
                   check=True)
    own = meter.report()
    assert own["cpu_seconds"] >= 0.4  # the child's half second, which process_time alone does not see
    earlier = {"segments": [{"device": "cuda:0", "cpu_seconds": 10.0, "wall_seconds": 20.0},
                            {"device": "cpu", "cpu_seconds": 100.0, "wall_seconds": 110.0}]}
    total = ComputeMeter("cpu").report(earlier)
    assert total["accelerator_seconds"] == pytest.approx(20.0)  # CPU segments are not accelerator time
    assert total["wall_seconds"] >= 130.0 and total["cpu_seconds"] >= 110.0 and len(total["segments"]) == 3
    legacy = ComputeMeter("cpu").report({"device": "cpu", "cpu_seconds": 7.0, "wall_seconds": 9.0})
    assert legacy["segments"][0]["cpu_seconds"] == 7.0 and legacy["cpu_seconds"] >= 7.0


def test_each_segment_states_the_software_and_machine_that_ran_it() -> None:
    import platform
    from importlib.metadata import version

    earlier = {"segments": [{"device": "cpu", "cpu_seconds": 1.0, "wall_seconds": 2.0,
                             "software": {"rfo-toolkit": "0.0.1", "commit": "a" * 40}}]}
    segments = ComputeMeter("cpu").report(earlier)["segments"]
    assert segments[0]["software"] == earlier["segments"][0]["software"]  # an earlier release's segment is kept as written
    now = segments[1]["software"]
    assert now["torch"] == version("torch") and now["python"] == platform.python_version()
    assert {"machine", "commit", "rfo-toolkit", "ultralytics"} <= set(now)


def test_a_running_segment_writes_its_compute_every_interval(tmp_path: Path, monkeypatch) -> None:
    import rfo_bench.detectors.api as api

    monkeypatch.setattr(api, "LEDGER_SECONDS", 0.05)
    with api._ledger_kept(tmp_path, ComputeMeter("cpu"), {}):
        deadline = time.monotonic() + 5
        while not (tmp_path / COMPUTE_LEDGER).is_file() and time.monotonic() < deadline:
            time.sleep(0.02)
    assert json.loads((tmp_path / COMPUTE_LEDGER).read_text())["segments"][0]["device"] == "cpu"

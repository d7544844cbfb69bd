"""``rfo-bench convert | split | eval`` never overwrite silently: refused without --overwrite, and
--overwrite replaces only what the same command wrote."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from rfo_toolkit.cli import rfo_bench_main as main
from tests.rfo_bench.test_detectors_data import write_tiny_coco


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def gt(tmp_path: Path) -> Path:
    return write_tiny_coco(tmp_path / "d", n=8)


def _predictions(gt: Path, tmp_path: Path) -> Path:
    doc = json.loads(gt.read_text())
    preds = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
             for a in doc["annotations"]]
    path = tmp_path / "preds.json"
    path.write_text(json.dumps(preds))
    return path


@pytest.mark.parametrize("command", ["convert-coco", "convert-yolo", "split", "eval"])
def test_an_existing_output_is_refused_then_replaced_with_overwrite(
        gt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    out = tmp_path / ("out.json" if command == "convert-coco" else "out")
    argv = {
        "convert-coco": ["convert", str(gt), "--to", "coco"],
        "convert-yolo": ["convert", str(gt), "--to", "yolo"],
        "split": ["split", str(gt), "--fractions", "0.5,0.5"],
        "eval": ["eval", "--gt", str(gt), "--pred", str(_predictions(gt, tmp_path)), "--bootstrap", "0",
                 "--no-plots"],
    }[command] + ["--out", str(out)]
    assert main(argv) == 0
    capsys.readouterr()
    before = out.read_bytes() if out.is_file() else sorted(p.name for p in out.iterdir())
    assert main(argv) == 2
    line = _one_error_line(capsys)
    assert "--overwrite" in line and str(out) in line
    assert (out.read_bytes() if out.is_file() else sorted(p.name for p in out.iterdir())) == before
    assert main([*argv, "--overwrite"]) == 0


@pytest.mark.parametrize("command", ["split", "eval"])
def test_overwrite_leaves_a_folder_of_another_command_or_a_user_alone(
        gt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    split_out = tmp_path / "splits"
    assert main(["split", str(gt), "--out", str(split_out)]) == 0
    capsys.readouterr()
    argv = (["split", str(gt)] if command == "split" else
            ["eval", "--gt", str(gt), "--pred", str(_predictions(gt, tmp_path)), "--bootstrap", "0", "--no-plots"])
    for target in (mine, split_out if command == "eval" else None):
        if target is None:
            continue
        assert main([*argv, "--out", str(target), "--overwrite"]) == 2
        assert "refusing to replace" in _one_error_line(capsys)
    assert (mine / "notes.txt").read_text() == "keep"
    assert (split_out / "splits.json").is_file()


def test_benchmark_prints_only_the_leaderboard_on_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import rfo_toolkit.leaderboard as leaderboard

    markdown = tmp_path / "leaderboard.md"
    markdown.write_text("| model | AP50 |\n|---|---|\n| yolov8n | 0.5 |\n")
    seen = {}

    def fake_run(config, *, out_dir, force, progress, command, threads):
        print('{"n_images": 4}')  # what an in-process generator prints
        seen.update(force=force, progress=progress, command=command, seeds=config.seeds, device=config.device,
                    threads=threads)
        return type("Result", (), {"markdown_path": markdown})()

    @dataclasses.dataclass(frozen=True)
    class Config:  # the two fields the command sets
        seeds: tuple[int, ...] = (0, 1, 2)
        device: str = "cpu"

    monkeypatch.setattr(leaderboard, "load_benchmark_config", lambda path: Config())
    monkeypatch.setattr(leaderboard, "with_seeds", lambda c, seeds: dataclasses.replace(c, seeds=tuple(seeds)))
    monkeypatch.setattr(leaderboard, "run_benchmark", fake_run)
    assert main(["benchmark", "--config", "b.yaml", "--seeds", "0-1", "--device", "cuda", "--threads", "1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == markdown.read_text() + "\n"
    assert '{"n_images": 4}' in captured.err
    assert seen == {"force": False, "progress": True, "seeds": (0, 1), "device": "cuda", "threads": 1,
                    "command": "rfo-bench benchmark --config b.yaml --seeds 0,1 --device cuda --threads 1"}

"""README.md runs as written: its marked shell blocks in order, its Python snippets in an empty folder.

The shell blocks marked ``<!-- readme-test -->`` form one session: each command reads what an earlier
one wrote. They run here in that order, in an empty folder, through the virtual environment's entry
points on one thread and offline, shrunk by :data:`SHRINK` (fewer images, epochs and pixels; every
entry must still match the README, so the table cannot drift from it). Before each command the
``runs/...`` paths it reads must exist; each must exit 0.

The whole session trains a detector and a classifier (about a minute on two cores): ``slow``. The
default suite runs its cheapest part, the data chain (physics -> inspect -> validate -> convert ->
split -> eval), with the detector's predictions stood in for by the test split's own boxes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.markdown_snippets import python_snippets, run_snippets

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
BIN = Path(sys.executable).parent
MARK = "<!-- readme-test -->"

SHRINK: tuple[tuple[str, str], ...] = (
    ("physics --n 16 --imgsz 512", "physics --n 12 --imgsz 128 --no-progress"),
    ("--recipe cpu-tiny", "--recipe cpu-tiny --epochs 1 --imgsz 64 --no-progress"),
    ("--out runs/yolo/pred", "--out runs/yolo/pred --no-progress"),
    ("--bootstrap 1000", "--bootstrap 20 --no-plots"),
    ("--method ofmu --out runs/forget_clamp", "--method ofmu --set epochs=1 --out runs/forget_clamp --no-progress"),
    ("--model test_resnet --out runs/digits_model.pt", "--model test_resnet --set epochs=1 --out runs/digits_model.pt"),
    ("--forget class:3 --out runs/forget3", "--forget class:3 --set epochs=1 --out runs/forget3"),
    ("--methods all --seeds 0-2", "--methods finetune --seeds 0 --lira-shadows 0 --no-relearn --reference-retrains 1 "
                                  "--set original.epochs=1 --set finetune.epochs=1"),
)
"""README text -> what the test runs instead (each README text must occur in a marked block)."""

FAST = ("rfo-synth physics", "rfo-bench inspect", "rfo-bench validate", "rfo-bench convert", "rfo-bench split",
        "rfo-bench eval")
"""The commands of the default-suite variant (the data chain); ``rfo-bench eval`` reads stand-in predictions."""

BLOCK = re.compile(re.escape(MARK) + r"\s*\n```bash\n(.*?)```", re.DOTALL)


def marked_commands() -> list[str]:
    """The commands of the marked shell blocks, in README order (``\\`` continuations joined)."""
    commands: list[str] = []
    for block in BLOCK.findall(README.read_text(encoding="utf-8")):
        commands += [line.strip() for line in block.replace("\\\n", " ").splitlines() if line.strip()]
    return commands


def shrink(command: str) -> str:
    for old, new in SHRINK:
        command = command.replace(old, new)
    return command


def _inputs(words: list[str]) -> list[str]:
    """The ``runs/...`` paths a command reads: every one that is not the value of ``--out``."""
    found = []
    for before, word in zip(["", *words], words):
        path = word.removeprefix("yolo:")
        if path.startswith("runs/") and before != "--out":
            found.append(path)
    return found


def _env() -> dict[str, str]:
    cache = REPO / ".cache"
    return {**os.environ, "RFO_CACHE_DIR": str(cache), "YOLO_CONFIG_DIR": str(cache / "ultralytics"),
            "YOLO_OFFLINE": "true", "YOLO_AUTOINSTALL": "false", "HF_HUB_OFFLINE": "1", "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(cache / "matplotlib"), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "RFO_PSEUDONYM_KEY": "5a" * 32}


def run_command(command: str, cwd: Path) -> None:
    """Run one README command in ``cwd``; its inputs must exist and it must exit 0."""
    words = shlex.split(shrink(command))
    assert words[0].startswith(".venv/bin/"), f"a README command that is not an entry point: {command}"
    missing = [p for p in _inputs(words) if not (cwd / p).exists()]
    assert not missing, f"{command!r} reads {missing}, which no earlier command wrote"
    words[0] = str(BIN / words[0].removeprefix(".venv/bin/"))
    done = subprocess.run(words, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{command!r} exited {done.returncode}:\n{done.stderr[-3000:]}"


def test_the_marked_blocks_and_the_shrink_table_match_the_readme() -> None:
    commands = marked_commands()
    text = "\n".join(commands)
    assert len(commands) >= 10 and all(c.startswith(".venv/bin/") for c in commands)
    for old, _ in SHRINK:
        assert old in text, f"SHRINK entry {old!r} no longer matches a README command"
    for name in FAST:
        assert any(name in c for c in commands), name
    assert "make demo" not in text  # minutes of work: listed, never run here


def _stand_in_predictions(cwd: Path) -> None:
    """What ``rfo-bench predict`` writes, made from the test split's own boxes (score 0.9)."""
    test = json.loads((cwd / "runs" / "splits" / "test.json").read_text())
    results = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 0.9}
               for a in test["annotations"]]
    pred = cwd / "runs" / "yolo" / "pred"
    pred.mkdir(parents=True)
    (pred / "predictions.json").write_text(json.dumps(results))


def test_the_data_chain_runs_as_written(tmp_path: Path) -> None:
    commands = [c for c in marked_commands() if any(name in c for name in FAST)]
    assert [c for c in commands if "rfo-bench eval" in c], "the eval command left the README"
    for command in commands:
        if "rfo-bench eval" in command:
            _stand_in_predictions(tmp_path)
        run_command(command, tmp_path)
    assert (tmp_path / "runs" / "synth_yolo").is_dir()
    assert (tmp_path / "runs" / "eval" / "report.json").is_file()


@pytest.mark.slow
def test_the_whole_session_runs_in_order(tmp_path: Path) -> None:
    pytest.importorskip("ultralytics")
    for command in marked_commands():
        run_command(command, tmp_path)
    for written in ("runs/eval/report.json", "runs/forget_clamp/audit.json", "runs/forget3/audit.json",
                    "runs/unlearn_digits/results.json"):
        assert (tmp_path / written).is_file(), written


# --------------------------------------------------------------------------- Python snippets


def readme_snippets() -> list[str]:
    return python_snippets(README)


def test_the_python_snippets_are_the_three_jobs_and_short() -> None:
    snippets = readme_snippets()
    assert len(snippets) == 3
    assert all(len(code.strip().splitlines()) <= 10 for code in snippets), [len(c.splitlines()) for c in snippets]
    assert "evaluate(" in snippets[0] and "vision_unlearn.unlearn(" in snippets[1]
    assert "generate_dataset(" in snippets[2]


def test_the_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    namespace = run_snippets(README, "readme")
    assert namespace["report"]["coco"]["AP50"] > 0.99
    assert namespace["unlearned"] is not namespace["model"] and namespace["record"].steps > 0
    assert (tmp_path / "synthetic" / "annotations.json").is_file() and namespace["manifest"]["n_images"] == 2

"""The toolkit replaces or deletes only what it wrote itself (``toolkit_core.output_dirs``).

The destructive cases are checked through the pure predicates only (``/`` and the home folder are
never handed to a command that could delete them); the CLI cases use folders in ``tmp_path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rfo_toolkit.cli import rfo_synth_main as synth_main
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import (
    OWNER_MARKER,
    check_output_dir,
    claim_output_dir,
    release_output_dir,
    remove_owned,
    remove_stale_staging,
    staged_output_dir,
    why_not_replaceable,
)

SYNTH = [str(Path(sys.executable).parent / "rfo-synth"), "physics", "--n", "1", "--size", "64", "--no-progress"]


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("protected", ["/", "~", "."])
def test_root_home_and_working_directory_are_never_replaceable(protected: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x").write_text("x")
    path = Path(protected).expanduser()
    assert why_not_replaceable(path) is not None
    with pytest.raises(UserInputError, match="refusing to replace"):
        check_output_dir(path, overwrite=True)


def test_overwrite_of_a_foreign_folder_is_refused_and_the_folder_is_intact(tmp_path: Path) -> None:
    foreign = tmp_path / "patients"
    (foreign / "scans").mkdir(parents=True)
    (foreign / "scans" / "004711.dcm").write_bytes(b"DICM" * 10)
    (foreign / "notes.txt").write_text("keep me")
    before = _tree(foreign)
    result = subprocess.run([*SYNTH, "--out", str(foreign), "--overwrite"], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "refusing to replace" in result.stderr and str(foreign) in result.stderr
    assert _tree(foreign) == before
    assert not list(tmp_path.glob(".patients.tmp-*"))  # the staging folder is gone too


def test_own_output_is_replaced_but_not_once_a_user_file_is_added(tmp_path: Path) -> None:
    out = tmp_path / "synthetic"
    assert synth_main(["physics", "--n", "1", "--size", "64", "--no-progress", "--out", str(out)]) == 0
    marker = json.loads((out / OWNER_MARKER).read_text())
    assert marker["tool"].startswith("rfo-synth") and "annotations.json" in marker["entries"]
    assert synth_main(["physics", "--n", "1", "--size", "64", "--seed", "1", "--no-progress", "--out", str(out),
                       "--overwrite"]) == 0
    (out / "my_labels.csv").write_text("user work")
    assert synth_main(["physics", "--n", "1", "--size", "64", "--no-progress", "--out", str(out),
                       "--overwrite"]) == 2
    assert (out / "my_labels.csv").read_text() == "user work"


def test_a_link_to_an_own_output_is_not_followed(tmp_path: Path) -> None:
    real = tmp_path / "real"
    with staged_output_dir(real, "test") as staging:
        (staging / "a.txt").write_text("a")
    link = tmp_path / "link"
    link.symlink_to(real)
    assert why_not_replaceable(link) == "it is a symbolic link"
    with pytest.raises(UserInputError):
        check_output_dir(link, overwrite=True)
    assert (real / "a.txt").read_text() == "a"


def test_a_forged_marker_does_not_cover_unlisted_entries(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "study.dcm").write_bytes(b"x")
    (folder / OWNER_MARKER).write_text(json.dumps({"tool": "rfo-synth", "entries": []}))
    assert "did not write: study.dcm" in why_not_replaceable(folder)


def test_a_failed_run_leaves_no_staging_and_the_old_output(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with staged_output_dir(out, "test") as staging:
        (staging / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_output_dir(out, "test", overwrite=True) as staging:
        (staging / "new.txt").write_text("new")
        raise RuntimeError("killed")
    assert (out / "old.txt").read_text() == "old" and not (out / "new.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_staging_of_a_dead_run_is_removed_by_the_next_run(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale, live, foreign = (tmp_path / f".out.tmp-{k}" for k in ("stale", "live", "foreign"))
    for folder, pid in ((stale, dead_pid), (live, os.getpid())):
        folder.mkdir()
        (folder / "0000001.png").write_bytes(b"x")
        (folder / OWNER_MARKER).write_text(json.dumps({"tool": "t", "state": "staging", "pid": pid,
                                                       "entries": []}))
    foreign.mkdir()  # looks like ours by name only: kept
    assert remove_stale_staging(tmp_path, "out") == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()


def test_claimed_folder_refuses_foreign_content_and_deletes_only_below_itself(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x.txt").write_text("x")
    with pytest.raises(UserInputError, match="did not write"):
        claim_output_dir(foreign, "rfo-bench benchmark")
    run = claim_output_dir(tmp_path / "run", "rfo-bench benchmark")
    assert claim_output_dir(run, "rfo-bench benchmark") == run  # a resumed run
    with pytest.raises(UserInputError):
        claim_output_dir(run, "vision-unlearn demo")  # another tool's folder
    (run / "cache").mkdir()
    (run / "cache" / "a.bin").write_bytes(b"a")
    remove_owned(run / "cache")
    assert not (run / "cache").exists()
    with pytest.raises(UserInputError, match="refusing to delete"):
        remove_owned(foreign / "x.txt")
    with pytest.raises(UserInputError, match="refusing to delete"):
        remove_owned(run)  # never the claimed folder itself
    release_output_dir(run, "rfo-bench benchmark")
    assert why_not_replaceable(run) is None


def test_demo_refuses_a_folder_it_did_not_write(tmp_path: Path) -> None:
    foreign = tmp_path / "study"
    (foreign / "data").mkdir(parents=True)
    (foreign / "data" / "scan.png").write_bytes(b"x")
    exe = Path(sys.executable).parent / "vision-unlearn"
    result = subprocess.run([str(exe), "demo", "--out", str(foreign)], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (foreign / "data" / "scan.png").read_bytes() == b"x"


def test_a_demo_run_of_an_earlier_release_is_taken_up_but_a_lookalike_is_not(tmp_path: Path) -> None:
    from rfo_toolkit.demo.pipeline import DEMO_TOOL, STAGES, _adopt_earlier_run

    stages = [s.name for s in STAGES]
    earlier = tmp_path / "earlier"
    (earlier / stages[0]).mkdir(parents=True)
    (earlier / "run.json").write_text(json.dumps({"config": {}, "stages": stages}))
    _adopt_earlier_run(earlier)
    assert claim_output_dir(earlier, DEMO_TOOL) == earlier
    lookalike = tmp_path / "lookalike"
    lookalike.mkdir()
    (lookalike / "run.json").write_text(json.dumps({"config": {}, "stages": stages}))
    (lookalike / "thesis.tex").write_text("user work")
    _adopt_earlier_run(lookalike)
    with pytest.raises(UserInputError):
        claim_output_dir(lookalike, DEMO_TOOL)


_WRITER = """
import os, signal, sys, time
from toolkit_core.output_dirs import owned_output_dir
with owned_output_dir(sys.argv[1], "rfo-bench train", overwrite=False, resume=True) as out:
    (out / "last.pt").write_bytes(b"w")
    print("writing", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)  # killed outright: no code of ours runs after this
    time.sleep(60)
"""


def _start_writer(out: Path, how: str) -> subprocess.Popen:
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(out), how], stdout=subprocess.PIPE, text=True)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
    return writer


def test_a_run_killed_outright_is_still_known_as_the_commands_and_can_be_resumed_or_replaced(tmp_path: Path) -> None:
    from toolkit_core.output_dirs import prepare_output_dir

    out = tmp_path / "run"
    _start_writer(out, "kill").wait(timeout=30)
    assert json.loads((out / OWNER_MARKER).read_text())["state"] == "in-use"
    assert prepare_output_dir(out, "rfo-bench train", overwrite=False, resume=True) == out  # taken up as it is
    assert (out / "last.pt").exists()
    with pytest.raises(UserInputError, match="not written by rfo-synth"):
        prepare_output_dir(out, "rfo-synth physics", overwrite=True)
    prepare_output_dir(out, "rfo-bench train", overwrite=True, resume=False)
    assert not out.exists()


def test_a_folder_another_live_run_writes_is_neither_resumed_nor_replaced(tmp_path: Path) -> None:
    from toolkit_core.output_dirs import prepare_output_dir

    out = tmp_path / "run"
    writer = _start_writer(out, "sleep")
    try:
        for flags in ({"overwrite": False, "resume": True}, {"overwrite": True, "resume": False}):
            with pytest.raises(UserInputError, match=f"another run \\(process {writer.pid}\\) is still writing"):
                prepare_output_dir(out, "rfo-bench train", **flags)
        assert (out / "last.pt").exists()
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert prepare_output_dir(out, "rfo-bench train", overwrite=False, resume=True) == out  # now it can


def test_a_reused_pid_is_not_taken_for_the_live_writer(tmp_path: Path) -> None:
    from toolkit_core.output_dirs import writer_alive

    marker = {"tool": "t", "state": "in-use", "pid": os.getppid(), "entries": []}
    assert writer_alive(marker)  # the test runner's parent runs
    started = json.loads(json.dumps(marker | {"started": -1}))  # the same pid, another process's start time
    assert not writer_alive(started) or not Path("/proc").is_dir()
    assert not writer_alive(marker | {"state": "complete"})


def test_a_command_that_writes_nothing_leaves_nothing_behind(tmp_path: Path) -> None:
    from toolkit_core.output_dirs import owned_output_dir, prepare_output_dir

    out = tmp_path / "new" / "out"
    with pytest.raises(UserInputError), owned_output_dir(out, "rfo-bench eval", overwrite=False):
        assert read_marker_state(out) == "in-use"  # claimed before the first write
        raise UserInputError("bad input found before any output")
    assert not out.exists()
    out.mkdir()
    (out / OWNER_MARKER).write_text(json.dumps({"tool": "rfo-bench eval", "state": "in-use", "pid": 0,
                                                "entries": []}))  # killed before its first write
    assert prepare_output_dir(out, "rfo-bench eval", overwrite=False) == out  # nothing to keep: as if empty


def read_marker_state(folder: Path) -> str:
    return json.loads((folder / OWNER_MARKER).read_text())["state"]

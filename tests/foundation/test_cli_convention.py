"""The shared CLI grammar: deprecated aliases, one overwrite rule, seeds, threads, help defaults."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

from toolkit_core.cli_support import (
    add_batch,
    add_command,
    add_deprecated_alias,
    add_deprecated_switch,
    add_imgsz,
    add_output_options,
    add_runtime_options,
    add_seeds,
    flag_rows,
    make_parser,
    meaning_conflicts,
    parse_seeds,
    run_cli,
)
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import OWNER_MARKER, owned_output_dir, prepare_output_dir


def _parser(seen: dict) -> argparse.ArgumentParser:
    parser, sub = make_parser("tool", "test tool")
    cmd = add_command(sub, "go", lambda args: seen.update(vars(args)) or 0, "run")
    add_imgsz(cmd, "network input", default=64)
    add_batch(cmd, default=4)
    add_seeds(cmd, default="0")
    add_runtime_options(cmd)
    cmd.add_argument("--flag", action="store_true", help="a switch")
    add_deprecated_alias(cmd, "--size", "--imgsz")
    add_deprecated_alias(cmd, "--batch-size", "--batch")
    add_deprecated_alias(cmd, "--old-flag", "--flag")
    return parser


def test_an_old_spelling_works_warns_once_and_is_hidden(caplog: pytest.LogCaptureFixture) -> None:
    seen: dict = {}
    with caplog.at_level(logging.WARNING):
        assert run_cli(_parser(seen), ["go", "--size", "32", "--batch-size", "2", "--old-flag"]) == 0
    assert (seen["imgsz"], seen["batch"], seen["flag"]) == (32, 2, True)
    assert [(r.name, r.getMessage()) for r in caplog.records] == [
        ("tool go", "--size is deprecated and will be removed in the next release; use --imgsz"),
        ("tool go", "--batch-size is deprecated and will be removed in the next release; use --batch"),
        ("tool go", "--old-flag is deprecated and will be removed in the next release; use --flag"),
    ]
    caplog.clear()
    seen.clear()
    with caplog.at_level(logging.WARNING):
        assert run_cli(_parser(seen), ["go"]) == 0
    assert (seen["imgsz"], seen["batch"], seen["flag"]) == (64, 4, False)  # the alias leaves defaults alone
    assert caplog.records == []
    parser = _parser({})
    sub = parser._subparsers._group_actions[0].choices["go"]
    text = sub.format_help()
    assert "--imgsz" in text and "--size" not in text and "--batch-size" not in text


def test_the_deprecation_is_one_line_on_stderr_of_the_real_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = ("import sys; from rfo_toolkit.cli import rfo_synth_main as m; "
            "sys.exit(m(['preview', sys.argv[1], '--tile', '8']))")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "missing")], capture_output=True, text=True,
                            timeout=120)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 2, result.stderr
    assert lines[0] == ("WARNING rfo-synth preview: --tile is deprecated and will be removed in the next release; "
                        "use --imgsz")
    assert lines[1].startswith("rfo-synth: error:")


def test_help_states_each_default_once() -> None:
    parser, sub = make_parser("tool", "test")
    cmd = add_command(sub, "go", lambda a: 0, "run")
    cmd.add_argument("--a", default=3, help="a number")
    cmd.add_argument("--b", default=None, help="names (default: all)")
    cmd.add_argument("--c", type=int, default=0, help="zero is a value")
    text = " ".join(cmd.format_help().split())
    assert "a number (default: 3)" in text
    assert text.count("default: all") == 1 and "(default: None)" not in text
    assert "zero is a value (default: 0)" in text


@pytest.mark.parametrize(("text", "seeds"), [("0,1,2", (0, 1, 2)), ("0-2", (0, 1, 2)), ("3", (3,)),
                                             ("0-1,7", (0, 1, 7))])
def test_seeds_are_a_list_or_a_range(text: str, seeds: tuple[int, ...]) -> None:
    assert parse_seeds(text) == seeds


@pytest.mark.parametrize("text", ["", "a", "2-0", "0,0", "-1", "1,,2"])
def test_bad_seeds_are_refused(text: str) -> None:
    with pytest.raises(UserInputError, match="--seeds"):
        parse_seeds(text)


def test_threads_zero_is_refused_with_one_meaning_for_unset(capsys: pytest.CaptureFixture[str]) -> None:
    seen: dict = {}
    assert run_cli(_parser(seen), ["go"]) == 0 and seen["threads"] is None
    with pytest.raises(SystemExit) as exit_info:
        run_cli(_parser(seen), ["go", "--threads", "0"])
    assert exit_info.value.code == 2
    assert "--threads" in capsys.readouterr().err


def test_an_existing_output_is_refused_and_replaced_only_when_this_tool_wrote_it(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with owned_output_dir(out, "tool a", overwrite=False) as target:
        # claimed before the command writes: a run killed outright is still known as this tool's
        assert target == out and [p.name for p in out.iterdir()] == [OWNER_MARKER]
        assert json.loads((out / OWNER_MARKER).read_text())["state"] == "in-use"
        (out / "result.txt").write_text("1")
    assert json.loads((out / OWNER_MARKER).read_text())["state"] == "complete"
    with pytest.raises(UserInputError, match=r"use --overwrite to replace it\)"):
        prepare_output_dir(out, "tool a", overwrite=False)
    with pytest.raises(UserInputError, match="use --overwrite to replace it or --resume to continue it"):
        prepare_output_dir(out, "tool a", overwrite=False, resume=False)
    assert prepare_output_dir(out, "tool a", overwrite=False, resume=True) == out  # resume takes it up again
    assert (out / "result.txt").exists()
    with pytest.raises(UserInputError, match="not written by tool b"):
        prepare_output_dir(out, "tool b", overwrite=True)
    (out / "mine.txt").write_text("a user's file")
    with pytest.raises(UserInputError, match="did not write: mine.txt"):
        prepare_output_dir(out, "tool a", overwrite=True)
    assert (out / "mine.txt").read_text() == "a user's file" and (out / "result.txt").exists()
    (out / "mine.txt").unlink()
    prepare_output_dir(out, "tool a", overwrite=True)
    assert not out.exists()


def test_an_interrupted_run_is_marked_and_may_be_replaced(tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt), owned_output_dir(out, "tool a", overwrite=False):
        (out / "partial.bin").write_bytes(b"x")
        raise KeyboardInterrupt
    assert json.loads((out / OWNER_MARKER).read_text())["state"] == "in-use"
    with owned_output_dir(out, "tool a", overwrite=True):
        assert [p.name for p in out.iterdir()] == [OWNER_MARKER]  # the interrupted run's files are gone


def test_overwrite_never_deletes_a_foreign_folder(tmp_path: Path) -> None:
    foreign = tmp_path / "data"
    foreign.mkdir()
    (foreign / "scan.dcm").write_bytes(b"x")
    with pytest.raises(UserInputError, match="refusing to replace"):
        prepare_output_dir(foreign, "tool a", overwrite=True)
    assert (foreign / "scan.dcm").exists()


def test_output_options_name_the_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser, sub = make_parser("tool", "test")

    def handler(args):
        with owned_output_dir(args.out, "tool go", overwrite=args.overwrite):
            return 0

    cmd = add_command(sub, "go", handler, "run")
    add_output_options(cmd, "output folder")
    (tmp_path / "x").write_text("1")
    assert run_cli(parser, ["go", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err


def test_one_flag_with_two_meanings_is_found() -> None:
    parser, sub = make_parser("tool", "test")
    add_imgsz(add_command(sub, "a", lambda a: 0, "a"), "the output images")
    add_imgsz(add_command(sub, "b", lambda a: 0, "b"), "the network input")
    add_command(sub, "c", lambda a: 0, "c").add_argument("--imgsz", help="the number of images")
    add_command(sub, "d", lambda a: 0, "d").add_argument("--size", help="image side")
    add_command(sub, "e", lambda a: 0, "e").add_argument("--size", help="patch side")
    problems = meaning_conflicts(flag_rows({"tool": parser}))
    assert any(p.startswith("--imgsz in `tool c`") for p in problems)
    assert any(p.startswith("--size:") for p in problems)
    assert not any("tool a" in p or "tool b" in p for p in problems)
    assert meaning_conflicts(flag_rows({"tool": parser}), exempt=("tool c", "tool d", "tool e")) == []


def test_a_switch_that_became_the_default_is_accepted_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    parser, sub = make_parser("tool", "test")
    seen: dict = {}
    cmd = add_command(sub, "go", lambda args: seen.update(vars(args)) or 0, "run")
    add_runtime_options(cmd)
    add_deprecated_switch(cmd, "--progress", "nothing: progress is on by default (--no-progress hides it)")
    with caplog.at_level(logging.WARNING):
        assert run_cli(parser, ["go", "--progress"]) == 0
    assert seen["no_progress"] is False
    assert [r.getMessage() for r in caplog.records] == [
        "--progress is deprecated and will be removed in the next release; use nothing: progress is on by default "
        "(--no-progress hides it)"]
    assert "--progress " not in cmd.format_help().replace("--no-progress", "")

"""The one grammar of ``vision-unlearn``, ``rfo-bench`` and ``rfo-synth``: docs/cli.md is what the parsers say,
no flag name stands for two meanings, and every old spelling still parses, to the new flag, with a warning."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from rfo_toolkit import cli_docs
from toolkit_core.cli_support import DEPRECATED_DEST, FLAG_MEANINGS, FlagRow, flag_rows, meaning_conflicts

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def parsers() -> dict[str, argparse.ArgumentParser]:
    return cli_docs.parsers()


def test_docs_cli_md_is_generated_from_the_parsers(parsers) -> None:
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert cli_docs.GENERATE_COMMAND in committed.splitlines()[2]
    assert cli_docs.render(parsers) == committed, f"docs/cli.md is stale; run `{cli_docs.GENERATE_COMMAND}`"


def test_every_flag_of_every_sub_command_is_listed(parsers) -> None:
    rows = flag_rows(parsers)
    commands = {r.command for r in rows}
    for command in ("rfo-bench train", "rfo-bench benchmark", "rfo-synth physics", "rfo-synth diffusion sample",
                    "vision-unlearn demo", "vision-unlearn run"):
        assert command in commands
    listed = {(r.command, r.flag) for r in rows}
    assert ("rfo-bench train", "--overwrite") in listed and ("rfo-synth physics", "--threads") in listed
    assert all(r.meaning for r in rows if r.command.startswith(("rfo-bench", "rfo-synth"))), "a flag without help"


def test_no_flag_name_has_two_meanings_in_any_command(parsers) -> None:
    assert cli_docs.check(parsers) == []
    assert cli_docs.known_exceptions(parsers) == ()  # every vision-unlearn sub-command is checked too


def test_the_check_fails_when_a_name_gets_a_second_meaning(parsers) -> None:
    rows = flag_rows(parsers)
    clash = FlagRow("rfo-synth physics", "--imgsz", "number of images per shard", "")
    assert any("--imgsz in `rfo-synth physics`" in p for p in meaning_conflicts([*rows, clash]))
    other = [FlagRow("rfo-bench x", "--tile", "tile side in px", ""), FlagRow("rfo-synth y", "--tile", "cell side", "")]
    assert any(p.startswith("--tile:") for p in meaning_conflicts([*rows, *other]))


@pytest.mark.parametrize("flag", sorted(FLAG_MEANINGS))
def test_each_listed_meaning_is_used(parsers, flag: str) -> None:
    assert flag in {r.flag for r in flag_rows(parsers)} or flag == "--verbose"


def _sub(parser: argparse.ArgumentParser, path: str) -> argparse.ArgumentParser:
    for name in path.split():
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


OLD_SPELLINGS = [  # (program, sub-command, required flags, old spelling and its value, destination, value)
    ("rfo-synth", "physics", ["--n", "1", "--out", "o"], ["--size", "64"], "imgsz", 64),
    ("rfo-synth", "preview", ["d"], ["--tile", "48"], "imgsz", 48),
    ("rfo-synth", "diffusion train", ["--data", "d", "--out", "o"], ["--batch-size", "3"], "batch", 3),
    ("rfo-synth", "diffusion train", ["--data", "d", "--out", "o"], ["--size", "32"], "patch_size", 32),
    ("rfo-synth", "diffusion sample", ["--ckpt", "c", "--backgrounds", "b", "--out", "o"], ["--resolution", "256"],
     "imgsz", 256),
    ("rfo-synth", "diffusion sample", ["--ckpt", "c", "--backgrounds", "b", "--out", "o"], ["--mode", "repaint"],
     "inpaint_mode", "repaint"),
    ("rfo-synth", "diffusion eval", ["--real", "r", "--generated", "g"], ["--input-size", "96"], "imgsz", 96),
    ("rfo-synth", "diffusion eval", ["--real", "r", "--generated", "g"], ["--size", "48"], "patch_size", 48),
    ("rfo-bench", "benchmark", ["--config", "c.yaml"], ["--force"], "rerun", True),
    ("vision-unlearn", "demo", [], ["--force"], "rerun", True),
    ("vision-unlearn", "train", ["--out", "m.pt"], ["--image-size", "32"], "imgsz", 32),
    ("vision-unlearn", "train", ["--out", "m.pt"], ["--force"], "overwrite", True),
    ("vision-unlearn", "train", ["--out", "m.pt"], ["--dataset", "folder:x"], "data", "folder:x"),
    ("vision-unlearn", "run", ["--method", "m", "--forget", "class:3", "--out", "o"], ["--force"], "overwrite", True),
    ("vision-unlearn", "run", ["--method", "m", "--forget", "class:3", "--out", "o"], ["--dataset", "digits"],
     "data", "digits"),
    ("vision-unlearn", "benchmark", ["--out", "o"], ["--image-size", "32"], "imgsz", 32),
    ("vision-unlearn", "benchmark", ["--out", "o"], ["--dataset", "digits"], "data", "digits"),
    ("vision-unlearn", "benchmark", ["--out", "o"], ["--force"], "overwrite", True),
    ("vision-unlearn", "benchmark", ["--out", "o"], ["--merge", "r.json"], "merge_results", ["r.json"]),
]


@pytest.mark.parametrize(("prog", "command", "required", "old", "dest", "value"), OLD_SPELLINGS,
                         ids=[f"{c[1]} {c[3][0]}" for c in OLD_SPELLINGS])
def test_an_old_spelling_still_works_and_is_reported(parsers, prog, command, required, old, dest, value) -> None:
    args = parsers[prog].parse_args([*command.split(), *required, *old])
    assert getattr(args, dest) == value
    [(where, said, new)] = getattr(args, DEPRECATED_DEST)
    assert where == f"{prog} {command}" and said == old[0] and new.lstrip("-").replace("-", "_") == dest
    assert not re.search(rf"{re.escape(old[0])}(?![\w-])", _sub(parsers[prog], command).format_help())
    plain = parsers[prog].parse_args([*command.split(), *required])  # without it: the default, no warning
    assert getattr(plain, dest) != value and not getattr(plain, DEPRECATED_DEST, [])

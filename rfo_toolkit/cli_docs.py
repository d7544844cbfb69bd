"""``docs/cli.md``: every flag of every sub-command of ``vision-unlearn``, ``rfo-bench`` and ``rfo-synth``.

The table is generated from the parsers (:func:`toolkit_core.cli_support.flag_rows`); regenerate it with::

    python -m rfo_toolkit.cli_docs docs/cli.md

``tests/foundation/test_cli_grammar.py`` regenerates it and compares with the committed file, and checks
that no flag name stands for two meanings (:data:`toolkit_core.cli_support.FLAG_MEANINGS`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from toolkit_core.cli_support import (
    FLAG_MEANINGS,
    deprecated_aliases,
    flag_rows,
    flag_table_markdown,
    meaning_conflicts,
)

GENERATE_COMMAND = "python -m rfo_toolkit.cli_docs docs/cli.md"

def parsers() -> dict[str, argparse.ArgumentParser]:
    """The three top-level parsers, by program name."""
    from rfo_toolkit.cli import rfo_bench_parser, rfo_synth_parser, vision_unlearn_parser

    return {"vision-unlearn": vision_unlearn_parser([]), "rfo-bench": rfo_bench_parser(),
            "rfo-synth": rfo_synth_parser()}


def known_exceptions(by_prog: dict[str, argparse.ArgumentParser]) -> tuple[str, ...]:
    """Commands whose flags do not yet follow one meaning per name, left out of the check: none.

    Every sub-command of the three programs follows the grammar (``vision-unlearn``'s since its old
    spellings became deprecated aliases); a future exception is listed here with the reason.
    """
    return ()


def render(by_prog: dict[str, argparse.ArgumentParser] | None = None) -> str:
    """The text of ``docs/cli.md``."""
    by_prog = parsers() if by_prog is None else by_prog
    exceptions = known_exceptions(by_prog)
    lines = [
        "# Command-line flags",
        "",
        f"Generated from the parsers by `{GENERATE_COMMAND}`; do not edit by hand.",
        "",
        "One grammar for `vision-unlearn`, `rfo-bench` and `rfo-synth` (`toolkit_core.cli_support`), with "
        "Ultralytics' names where it has one:",
        "",
        "- **one name, one meaning.** `--imgsz` is an image side in pixels, `--batch` the images (or patches) "
        "per optimisation step, `--seed` one seed, `--seeds` a list: `--seeds 0,1,2`, or a range with both "
        "ends included, `--seeds 0-2`; N seeds are written `0-<N-1>` (there is no count form).",
        "- **one output rule.** An existing non-empty output is refused with one line naming `--overwrite`; "
        "`--overwrite` replaces only a folder the same command wrote (its ownership marker, "
        "`toolkit_core.output_dirs`), never a folder of a user or of another command. `--resume` continues "
        "an interrupted run, also one killed outright (the marker is written before the first output); "
        "neither flag takes up a folder another live run is still writing; the benchmark and the demo reuse finished runs unless `--rerun`.",
        "- **runtime options** on every command that computes: `--device`, `--threads` (a positive count; "
        "unset: the libraries' default), `--no-progress` (progress bars are on by default and go to stderr), "
        "`--verbose` (also before the sub-command).",
        "- **old spellings** keep working for one release: accepted, one logged warning naming the new flag, "
        "hidden from `--help` (listed at the end).",
        "",
        "The meanings every shared flag's help text starts with:",
        "",
        "| flag | meaning |",
        "|---|---|",
        *(f"| `{flag}` | {meaning} |" for flag, meaning in sorted(FLAG_MEANINGS.items())),
        "",
        ("Known exceptions, not yet checked for one meaning per name: "
         + ", ".join(f"`{c}`" for c in exceptions) + "." if exceptions
         else "Every sub-command of the three programs is checked for one meaning per name."),
        "",
        "## Every flag",
        "",
        flag_table_markdown(flag_rows(by_prog)).rstrip("\n"),
        "",
        "## Deprecated spellings (removed in the next release)",
        "",
        "| command | old | new |",
        "|---|---|---|",
        *(f"| {command} | `{old}` | `{new}` |" for command, old, new in deprecated_aliases(by_prog)),
        "",
    ]
    return "\n".join(lines)


def check(by_prog: dict[str, argparse.ArgumentParser] | None = None) -> list[str]:
    """Flags with two meanings outside the known exceptions, one line each (empty when the grammar holds)."""
    by_prog = parsers() if by_prog is None else by_prog
    return meaning_conflicts(flag_rows(by_prog), exempt=known_exceptions(by_prog))


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``docs/cli.md`` (or the path given); exit 1 when a flag name has two meanings."""
    args = list(sys.argv[1:] if argv is None else argv)
    target = Path(args[0] if args else "docs/cli.md")
    by_prog = parsers()
    problems = check(by_prog)
    for line in problems:
        print(line, file=sys.stderr)
    target.write_text(render(by_prog), encoding="utf-8")
    print(f"wrote {target}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

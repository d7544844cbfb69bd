"""``vision-unlearn``: remove data from trained vision models and prove it was forgotten."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rfo_bench.cli_support import make_parser, run_cli
from vision_unlearn.demo_commands import register as register_demo


def build_parser() -> argparse.ArgumentParser:
    parser, sub = make_parser(
        "vision-unlearn", "Machine unlearning for X-ray classifiers and detectors, with forgetting evaluation."
    )
    register_demo(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

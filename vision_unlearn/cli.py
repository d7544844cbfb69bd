"""``vision-unlearn``: remove data from trained vision models and prove it was forgotten."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from rfo_bench.cli_support import add_command, make_parser, run_cli


def _cmd_demo(args: argparse.Namespace) -> int:
    from vision_unlearn.demo import run_demo

    manifest = run_demo(Path(args.out), radiograph=args.radiograph, ct=args.ct)
    print(json.dumps({"out": str(args.out), "outputs": manifest["outputs"]}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = make_parser(
        "vision-unlearn", "Machine unlearning for X-ray classifiers and detectors, with forgetting evaluation."
    )
    demo = add_command(sub, "demo", _cmd_demo, "run the main job on the embedded real data")
    demo.add_argument("--out", default="runs/demo", help="output directory")
    demo.add_argument("--radiograph", default=None, help="chest radiograph (PNG/JPEG/DICOM); default: embedded")
    demo.add_argument("--ct", default=None, help="chest CT (NIfTI); default: embedded")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""``rfo-synth``: synthetic chest radiographs with retained foreign objects and exact labels."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from rfo_bench.cli_support import add_command, make_parser, run_cli


def _cmd_embedded(args: argparse.Namespace) -> int:
    from synth.backgrounds import write_embedded_previews

    manifest = write_embedded_previews(Path(args.out))
    print(json.dumps(manifest, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = make_parser("rfo-synth", "Synthesise chest radiographs with retained foreign objects.")
    cmd = add_command(
        sub, "embedded", _cmd_embedded,
        "describe the embedded real backgrounds (chest radiograph and chest CT) and write previews",
    )
    cmd.add_argument("--out", default="runs/embedded", help="output directory")
    from synth.diffusion.commands import register as register_diffusion
    register_diffusion(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

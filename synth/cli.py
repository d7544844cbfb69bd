"""``rfo-synth``: synthetic chest radiographs with retained foreign objects and exact labels."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synth.physics.commands import register as register_physics
from toolkit_core.cli_support import add_command, make_parser


def _cmd_embedded(args: argparse.Namespace) -> int:
    from synth.embedded import write_embedded_previews

    manifest = write_embedded_previews(Path(args.out))
    print(json.dumps(manifest, indent=2))
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from synth.physics.preview import contact_sheet

    path = contact_sheet(list(args.dataset), args.out, n=args.n, columns=args.columns, tile_px=args.tile,
                         crops=args.crops)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the library's sub-commands to the ``rfo-synth`` parser (built in :mod:`rfo_toolkit.cli`)."""
    cmd = add_command(
        sub, "embedded", _cmd_embedded,
        "describe the embedded real backgrounds (chest radiograph and chest CT) and write previews",
    )
    cmd.add_argument("--out", default="runs/embedded", help="output directory")

    register_physics(sub)

    prev = add_command(sub, "preview", _cmd_preview, "contact sheet PNG of a dataset with labelled boxes")
    prev.add_argument("dataset", nargs="+", help="dataset directory (with annotations.json); several are interleaved")
    prev.add_argument("--out", default=None, help="PNG path (default FIRST_DATASET/preview.png)")
    prev.add_argument("--n", type=int, default=16, help="images on the sheet")
    prev.add_argument("--columns", type=int, default=4, help="tiles per row")
    prev.add_argument("--tile", type=int, default=256, help="tile side in pixels")
    prev.add_argument("--crops", action="store_true", help="one close-up per object instead of whole images")
    from synth.diffusion.commands import register as register_diffusion
    register_diffusion(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``rfo-synth`` parser (the entry point is :func:`rfo_toolkit.cli.rfo_synth_main`)."""
    parser, sub = make_parser("rfo-synth", "Synthesise chest radiographs with retained foreign objects.")
    register(sub)
    return parser

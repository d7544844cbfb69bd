"""``rfo-synth``: synthetic chest radiographs with retained foreign objects and exact labels.

Every sub-command follows the grammar of :mod:`toolkit_core.cli_support` (``--imgsz``, ``--batch``,
``--device``/``--threads``/``--no-progress``, and an existing output refused unless ``--overwrite``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from synth.physics.commands import register as register_physics
from toolkit_core.cli_support import (
    add_command,
    add_deprecated_alias,
    add_imgsz,
    add_output_options,
    make_parser,
)
from toolkit_core.output_dirs import check_output_file, owned_output_dir

EMBEDDED_TOOL = "rfo-synth embedded"


def _cmd_embedded(args: argparse.Namespace) -> int:
    from synth.embedded import write_embedded_previews

    with owned_output_dir(args.out, EMBEDDED_TOOL, overwrite=args.overwrite) as out:
        manifest = write_embedded_previews(out)
    print(json.dumps(manifest, indent=2))
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from synth.physics.preview import contact_sheet

    out = Path(args.out) if args.out else Path(args.dataset[0]) / "preview.png"
    check_output_file(out, overwrite=args.overwrite)
    path = contact_sheet(list(args.dataset), out, n=args.n, columns=args.columns, tile_px=args.imgsz,
                         crops=args.crops)
    print(path)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add the library's sub-commands to the ``rfo-synth`` parser (built in :mod:`rfo_toolkit.cli`)."""
    cmd = add_command(
        sub, "embedded", _cmd_embedded,
        "describe the embedded real backgrounds (chest radiograph and chest CT) and write previews",
    )
    add_output_options(cmd, "folder of the previews and manifest.json", required=False, default="runs/embedded")

    register_physics(sub)

    prev = add_command(sub, "preview", _cmd_preview, "contact sheet PNG of a dataset with labelled boxes")
    prev.add_argument("dataset", nargs="+", help="dataset directory (with annotations.json); several are interleaved")
    add_output_options(prev, "PNG file (default: FIRST_DATASET/preview.png)", required=False)
    prev.add_argument("--n", type=int, default=16, help="number of images on the sheet")
    prev.add_argument("--columns", type=int, default=4, help="tiles per row")
    add_imgsz(prev, "one tile of the sheet", default=256)
    add_deprecated_alias(prev, "--tile", "--imgsz")
    prev.add_argument("--crops", action="store_true", help="one close-up per object instead of whole images")
    from synth.diffusion.commands import register as register_diffusion
    register_diffusion(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``rfo-synth`` parser (the entry point is :func:`rfo_toolkit.cli.rfo_synth_main`)."""
    parser, sub = make_parser("rfo-synth", "Synthesise chest radiographs with retained foreign objects.")
    register(sub)
    return parser

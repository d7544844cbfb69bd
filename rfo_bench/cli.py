"""``rfo-bench``: RFO dataset tools, detector baselines and the evaluator."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from rfo_bench.cli_support import add_command, make_parser, run_cli


def _cmd_inspect(args: argparse.Namespace) -> int:
    from rfo_bench.io.images import read_image

    image = read_image(args.image)
    summary = {
        "file": image.source,
        "shape": list(image.shape),
        "bits_stored": image.bits_stored,
        "photometric": image.photometric,
        "pixel_spacing_mm": list(image.pixel_spacing_mm),
        "spacing_is_default": image.spacing_is_default,
        "min": float(image.pixels.min()),
        "max": float(image.pixels.max()),
        "mean": float(image.pixels.mean()),
    }
    print(json.dumps(summary, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = make_parser("rfo-bench", "RFO chest X-ray benchmark: datasets, detectors and evaluation.")
    cmd = add_command(
        sub, "inspect", _cmd_inspect,
        "read one image (PNG/JPEG/DICOM) with the shared reader and print its properties",
    )
    cmd.add_argument("image", help="image file")
    from rfo_bench.detectors.commands import register as register_detectors

    register_detectors(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

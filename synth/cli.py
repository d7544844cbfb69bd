"""``rfo-synth``: synthetic chest radiographs with retained foreign objects and exact labels."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from rfo_bench.cli_support import add_command, make_parser, run_cli


def _cmd_embedded(args: argparse.Namespace) -> int:
    from synth.embedded import write_embedded_previews

    manifest = write_embedded_previews(Path(args.out))
    print(json.dumps(manifest, indent=2))
    return 0


def _cmd_physics(args: argparse.Namespace) -> int:
    from rfo_bench.categories import CATEGORY_BY_NAME
    from synth.physics.detector import BlurConfig, DisplayConfig, NoiseConfig, ScatterConfig
    from synth.physics.generate import PhysicsConfig, generate_dataset
    from synth.physics.spectra import TubeTechnique

    classes = tuple(args.classes) if args.classes else tuple(CATEGORY_BY_NAME)
    off = set(args.off or [])
    config = PhysicsConfig(
        mode=args.mode, size=args.size, classes=classes, max_objects=args.max_objects,
        negative_fraction=args.negative_fraction, supersample=args.supersample,
        technique=TubeTechnique(kvp=args.kvp, mas=args.mas),
        scatter=ScatterConfig(enabled="scatter" not in off),
        noise=NoiseConfig(enabled="noise" not in off),
        blur=BlurConfig(enabled="blur" not in off),
        display=DisplayConfig(photometric=args.photometric),
    )
    manifest = generate_dataset(
        args.out, args.n, args.seed, config, backgrounds=args.backgrounds, objects_dir=args.objects,
        shard=args.shard, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(json.dumps({k: manifest[k] for k in ("n_images", "n_annotations", "shard", "seed")}))
    return 0


def _cmd_preview(args: argparse.Namespace) -> int:
    from synth.physics.preview import contact_sheet

    path = contact_sheet(list(args.dataset), args.out, n=args.n, columns=args.columns, tile_px=args.tile,
                         crops=args.crops)
    print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = make_parser("rfo-synth", "Synthesise chest radiographs with retained foreign objects.")
    cmd = add_command(
        sub, "embedded", _cmd_embedded,
        "describe the embedded real backgrounds (chest radiograph and chest CT) and write previews",
    )
    cmd.add_argument("--out", default="runs/embedded", help="output directory")

    phys = add_command(
        sub, "physics", _cmd_physics,
        "physics-based synthetic radiographs with RFOs (polychromatic, scatter, noise, blur) and COCO labels",
    )
    phys.add_argument("--n", type=int, required=True, help="number of images (of the whole, unsharded dataset)")
    phys.add_argument("--out", required=True, help="output dataset directory")
    phys.add_argument("--seed", type=int, default=0, help="master seed")
    phys.add_argument("--mode", choices=("radiograph", "ct"), default="radiograph",
                      help="insert into real radiographs, or project a CT with the objects inside")
    phys.add_argument("--backgrounds", default=None,
                      help="radiograph(s) (PNG/DICOM file or folder) or CT (NIfTI); default the embedded real data")
    phys.add_argument("--size", type=int, default=1024, help="output image side in pixels")
    phys.add_argument("--classes", nargs="+", default=None, help="RFO classes to draw (default all)")
    phys.add_argument("--objects", default=None, help="folder of .obj/.stl RFO meshes (objects.yaml optional)")
    phys.add_argument("--shard", default=None,
                      help="K/N: render images i with i %% N == K (one --out per shard; merge with synth.export.merge_coco)")
    phys.add_argument("--workers", type=int, default=1, help="worker processes")
    phys.add_argument("--max-objects", type=int, default=3, help="objects per positive image: 1..max")
    phys.add_argument("--negative-fraction", type=float, default=0.15, help="fraction of images without objects")
    phys.add_argument("--supersample", type=int, default=2, help="sub-rays per pixel along each axis")
    phys.add_argument("--kvp", type=float, default=120.0, help="tube voltage")
    phys.add_argument("--mas", type=float, default=2.0, help="tube current-time product (dose, noise)")
    phys.add_argument("--photometric", choices=("MONOCHROME2", "MONOCHROME1"), default="MONOCHROME2",
                      help="MONOCHROME2: bright = dense")
    phys.add_argument("--off", nargs="+", choices=("scatter", "noise", "blur"), default=None,
                      help="switch detector stages off")
    phys.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    phys.add_argument("--no-progress", action="store_true", help="no progress bar")

    prev = add_command(sub, "preview", _cmd_preview, "contact sheet PNG of a dataset with labelled boxes")
    prev.add_argument("dataset", nargs="+", help="dataset directory (with annotations.json); several are interleaved")
    prev.add_argument("--out", default=None, help="PNG path (default FIRST_DATASET/preview.png)")
    prev.add_argument("--n", type=int, default=16, help="images on the sheet")
    prev.add_argument("--columns", type=int, default=4, help="tiles per row")
    prev.add_argument("--tile", type=int, default=256, help="tile side in pixels")
    prev.add_argument("--crops", action="store_true", help="one close-up per object instead of whole images")
    from synth.diffusion.commands import register as register_diffusion
    register_diffusion(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

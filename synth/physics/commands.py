"""The ``physics`` sub-command: arguments → :class:`~synth.physics.config.PhysicsConfig` → dataset.

:func:`register` adds the command to a sub-parser set (``rfo-synth`` calls it); acquisition flags
default to ``None`` so that a DICOM film's own values are used unless a flag is given, and the flags
given are recorded as ``PhysicsConfig.explicit``. The output follows the one rule of
:mod:`toolkit_core.cli_support`: an existing dataset is replaced only with ``--overwrite`` and only
when this toolkit wrote it.
"""

from __future__ import annotations

import argparse
import json

from synth.physics.visibility import MIN_VISIBLE_CNR
from toolkit_core.cli_support import (
    add_command,
    add_deprecated_alias,
    add_imgsz,
    add_output_options,
    add_runtime_options,
    set_threads,
)

#: flag destination → the acquisition setting it makes explicit.
ACQUISITION_FLAGS = {"kvp": "kvp", "mas": "mas", "sid": "source_to_detector_mm",
                     "patient_to_detector": "patient_centre_to_detector_mm", "pixel_spacing": "pixel_spacing_mm"}


def config_from_args(args: argparse.Namespace):
    """The dataset configuration of parsed ``physics`` arguments."""
    from rfo_bench.categories import CATEGORY_BY_NAME
    from synth.physics.config import PhysicsConfig
    from synth.physics.detector import BlurConfig, DisplayConfig, NoiseConfig, ScatterConfig
    from synth.physics.film import FilmVariationConfig
    from synth.physics.patient_pose import CTPoseConfig
    from synth.physics.spectra import TubeTechnique

    defaults = PhysicsConfig()
    classes = tuple(args.classes) if args.classes else tuple(CATEGORY_BY_NAME)
    off = set(args.off or [])
    given = {name: getattr(args, name) for name in ACQUISITION_FLAGS if getattr(args, name) is not None}
    technique = TubeTechnique(kvp=float(given.get("kvp", defaults.technique.kvp)),
                              mas=float(given.get("mas", defaults.technique.mas)))
    return PhysicsConfig(
        mode=args.mode, size=args.imgsz, classes=classes, max_objects=args.max_objects,
        negative_fraction=args.negative_fraction, supersample=args.supersample, label_min_cnr=args.label_min_cnr,
        technique=technique,
        source_to_detector_mm=float(given.get("sid", defaults.source_to_detector_mm)),
        patient_centre_to_detector_mm=float(given.get("patient_to_detector", defaults.patient_centre_to_detector_mm)),
        pixel_spacing_mm=given.get("pixel_spacing"),
        explicit=tuple(ACQUISITION_FLAGS[name] for name in given),
        film=FilmVariationConfig(enabled="film" not in off),
        ct_pose=CTPoseConfig(enabled="pose" not in off),
        scatter=ScatterConfig(enabled="scatter" not in off),
        noise=NoiseConfig(enabled="noise" not in off),
        blur=BlurConfig(enabled="blur" not in off),
        display=DisplayConfig(photometric=args.photometric),
    )


def _cmd_physics(args: argparse.Namespace) -> int:
    from synth.physics.generate import generate_dataset

    set_threads(args.threads, torch=False)  # NumPy's pools, inherited by the worker processes
    manifest = generate_dataset(
        args.out, n=args.n, seed=args.seed, config=config_from_args(args), backgrounds=args.backgrounds,
        objects_dir=args.objects,
        shard=args.shard, workers=args.workers, overwrite=args.overwrite, progress=not args.no_progress,
    )
    print(json.dumps({k: manifest[k] for k in ("n_images", "n_annotations", "shard", "seed")}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``physics`` to a sub-command set."""
    phys = add_command(
        subparsers, "physics", _cmd_physics,
        "physics-based synthetic radiographs with RFOs (polychromatic, scatter, noise, blur) and COCO labels",
    )
    phys.add_argument("--n", type=int, required=True, help="number of images (of the whole, unsharded dataset)")
    add_output_options(phys, "dataset folder (images/, annotations.json, manifest.json)")
    phys.add_argument("--seed", type=int, default=0, help="random seed of the dataset (master seed)")
    phys.add_argument("--mode", choices=("radiograph", "ct"), default="radiograph",
                      help="insert into real radiographs, or project a CT with the objects inside")
    phys.add_argument("--backgrounds", default=None,
                      help="background images: radiograph(s) (PNG/DICOM file or folder) or a CT (NIfTI) "
                           "(default: the embedded real data)")
    add_imgsz(phys, "the written radiographs", default=1024)
    add_deprecated_alias(phys, "--size", "--imgsz")
    phys.add_argument("--classes", nargs="+", default=None, help="class names of the RFOs to draw (default: all)")
    phys.add_argument("--objects", default=None, help="folder of .obj/.stl RFO meshes (objects.yaml optional)")
    phys.add_argument("--shard", default=None,
                      help="K/N: render images i with i %% N == K (one --out per shard; merge with synth.export.merge_coco)")
    phys.add_argument("--workers", type=int, default=1, help="worker processes (each renders whole images)")
    phys.add_argument("--max-objects", type=int, default=3, help="objects per positive image: 1..max")
    phys.add_argument("--negative-fraction", type=float, default=0.15, help="fraction of images without objects")
    phys.add_argument("--label-min-cnr", type=float, default=MIN_VISIBLE_CNR,
                      help="label an object only when its peak signal reaches this many times the local noise "
                           f"(0: every object) [{MIN_VISIBLE_CNR:g}]")
    phys.add_argument("--supersample", type=int, default=2, help="sub-rays per pixel along each axis")
    acquisition = phys.add_argument_group(
        "acquisition", "given flags win over a DICOM film's header; without a flag the header's value is used, "
                       "else the default in brackets")
    acquisition.add_argument("--kvp", type=float, default=None, help="tube voltage [120]")
    acquisition.add_argument("--mas", type=float, default=None, help="tube current-time product, sets the noise [2]")
    acquisition.add_argument("--sid", type=float, default=None, help="source-to-detector distance, mm [1800]")
    acquisition.add_argument("--patient-to-detector", type=float, default=None,
                             help="patient centre to detector, mm [150]")
    acquisition.add_argument("--pixel-spacing", type=float, default=None,
                             help="detector pitch of the film, mm [the file's spacing]")
    phys.add_argument("--photometric", choices=("MONOCHROME2", "MONOCHROME1"), default="MONOCHROME2",
                      help="MONOCHROME2: bright = dense")
    phys.add_argument("--off", nargs="+", choices=("scatter", "noise", "blur", "film", "pose"), default=None,
                      help="switch stages off (film: the per-image film variation; pose: the CT patient pose)")
    add_runtime_options(phys, devices=("cpu",), device_help="cpu only (the renderer runs on NumPy)",
                        threads_help="per worker process")
    return phys

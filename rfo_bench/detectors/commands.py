"""``rfo-bench train`` and ``rfo-bench predict``.

Registered into the ``rfo-bench`` parser by :func:`register`; argument namespaces stop here and are
turned into a :class:`~rfo_bench.detectors.config.TrainConfig`. Both follow the grammar of
:mod:`toolkit_core.cli_support`: an existing output folder is refused unless ``--overwrite`` (which
replaces only a folder the same command wrote) or, for ``train``, ``--resume`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path

from rfo_bench.detectors.config import RECIPES, TrainConfig, recipe_with_overrides, resolve_device
from toolkit_core.cli_support import (
    add_batch,
    add_command,
    add_imgsz,
    add_output_options,
    add_runtime_options,
    set_threads,
)
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import owned_output_dir, prepare_output_dir

logger = logging.getLogger(__name__)


def load_training_data(path: str | Path, *, split: str = "train"):
    """See :func:`rfo_bench.detectors.yolo_data.load_training_data` (kept here for existing callers)."""
    from rfo_bench.detectors.yolo_data import load_training_data as read

    return read(path, split=split)


TRAIN_TOOL, PREDICT_TOOL = "rfo-bench train", "rfo-bench predict"


def set_torch_threads(threads: int | None) -> None:
    """See :func:`toolkit_core.cli_support.set_threads` (kept here for existing callers)."""
    set_threads(threads)


def _command_line(args: argparse.Namespace) -> str:
    import shlex
    import sys

    return "rfo-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else f"rfo-bench {args.command}"


def tile_config_from_args(args: argparse.Namespace):
    """The :class:`~rfo_bench.detectors.tiling.TileConfig` the train flags ask for (``None`` without ``--tile-size``)."""
    from rfo_bench.detectors.tiling import TileConfig

    if args.tile_size is None:
        return None
    defaults = TileConfig()
    return TileConfig(
        tile_size=args.tile_size,
        tiles_per_object=defaults.tiles_per_object if args.tiles_per_object is None else args.tiles_per_object,
        negative_ratio=defaults.negative_ratio if args.negative_ratio is None else args.negative_ratio,
        min_visible_fraction=(defaults.min_visible_fraction if args.min_visible_fraction is None
                              else args.min_visible_fraction),
        cut_policy=defaults.cut_policy if args.cut_policy is None else args.cut_policy,
        include_whole_films=not args.no_whole_films,
    )


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM (``kill``, a batch scheduler's stop) into ``SystemExit`` while the block runs.

    Clean-up blocks then run: the compute spent so far is written for ``--resume`` (the tiles cut so
    far stay for it). The previous handler is restored afterwards (the command may run inside a
    longer-lived process); worker processes restore the default action (:mod:`toolkit_core.processes`).
    """
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


DEFAULT_RECIPE = "cpu-tiny"
DEFAULT_BACKBONE = "resnet18"


def _recipe_stated(args: argparse.Namespace) -> tuple[tuple[str, object], ...]:
    """The train flags whose settings a recipe file states itself (``--config`` refuses them)."""
    return (("--model", args.model), ("--data", args.data), ("--val", args.val), ("--recipe", args.recipe),
            ("--epochs", args.epochs), ("--imgsz", args.imgsz), ("--batch", args.batch), ("--lr", args.lr),
            ("--seed", args.seed), ("--backbone", args.backbone), ("--weights", args.weights),
            ("--tile-size", args.tile_size), ("--tiles-per-object", args.tiles_per_object),
            ("--negative-ratio", args.negative_ratio), ("--min-visible-fraction", args.min_visible_fraction),
            ("--cut-policy", args.cut_policy), ("--no-whole-films", args.no_whole_films))


def _cmd_train(args: argparse.Namespace) -> int:
    with _sigterm_as_exit():
        return _train(args)


def _train(args: argparse.Namespace) -> int:
    from rfo_bench.detectors.api import train_detector

    set_threads(args.threads)
    device = resolve_device(args.device)
    # an output that cannot be written, or is another run, fails before hours of training
    prepare_output_dir(args.out, TRAIN_TOOL, overwrite=args.overwrite, resume=args.resume)
    if args.config:
        from rfo_bench.detectors.shipped import train_from_recipe

        given = [flag for flag, value in _recipe_stated(args) if value is not None and value is not False]
        if given:
            raise UserInputError("a recipe file states this itself; leave it out", field=given[0])
        with owned_output_dir(args.out, TRAIN_TOOL, overwrite=args.overwrite, resume=args.resume):
            record = train_from_recipe(args.config, args.out, device=device, resume=args.resume,
                                       workers=args.workers, checkpoint_every=args.checkpoint_every,
                                       threads=args.threads, amp=not args.no_amp,
                                       progress=not args.no_progress, command=_command_line(args))
        print(json.dumps({"run_dir": args.out, "weights_sha256": record["weights_sha256"],
                          "compute": record["compute"], "held_out_metrics": {
                              k: v for k, v in (record.get("held_out_metrics") or {}).items()
                              if k in ("AP50", "AP", "FROC", "AUROC")}}, indent=2))
        return 0
    for flag, value in (("--model", args.model), ("--data", args.data)):
        if value is None:
            raise UserInputError("required unless --config names a recipe file", field=flag)
    from rfo_bench.detectors.registry import get_detector

    get_detector(args.model)  # unknown names fail before any data is read
    tiling = tile_config_from_args(args)
    imgsz = args.imgsz if args.imgsz is not None or tiling is None else tiling.tile_size
    recipe = recipe_with_overrides(args.recipe or DEFAULT_RECIPE, {
        "epochs": args.epochs, "imgsz": imgsz, "batch_size": args.batch, "lr": args.lr,
    })
    config = TrainConfig(model=args.model, recipe=recipe, seed=0 if args.seed is None else args.seed,
                         backbone=args.backbone or DEFAULT_BACKBONE,
                         weights=args.weights, device=device, tiling=tiling, amp=not args.no_amp,
                         checkpoint_every=args.checkpoint_every or 0, workers=args.workers, threads=args.threads)
    train = load_training_data(args.data, split="train")
    val = load_training_data(args.val, split="val") if args.val else None
    with owned_output_dir(args.out, TRAIN_TOOL, overwrite=args.overwrite, resume=args.resume):
        result = train_detector(config, [train], args.out, val_set=val, progress=not args.no_progress,
                                resume=args.resume, command=_command_line(args))
    print(json.dumps({"run_dir": str(result.run_dir), "train_seconds": round(result.train_seconds, 2),
                      "model": config.model, "seed": config.seed, "device": device,
                      "compute": result.record["compute"], "tiles": result.record["tiles"]}, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rfo_bench.detectors.api import load_detector, recorded_slicing
    from rfo_bench.detectors.predict import predict_dataset, write_predictions

    set_threads(args.threads)
    prepare_output_dir(args.out, PREDICT_TOOL, overwrite=args.overwrite)
    device = None if args.device is None else resolve_device(args.device)
    shipped = args.model_dir == "shipped"
    model_dir = args.model_dir
    if shipped:
        from rfo_bench.detectors.bundled import require_bundled_detector

        model_dir = require_bundled_detector("--model-dir")
    # how the detector was evaluated (its record), with what the command line changes
    given = {"overlap": args.overlap, "merge": args.merge, "match_threshold": args.match_threshold,
             "union_score_ratio": args.union_score_ratio, "coarse_pass": False if args.no_coarse_pass else None,
             "extent": args.extent}
    slicing = replace(recorded_slicing(model_dir), **{k: v for k, v in given.items() if v is not None})
    # the bundled detector loads only when its weights match its record
    detector = load_detector(model_dir, device=device, slicing=slicing, require_hash=shipped)
    dataset = load_training_data(args.data, split=args.split)
    predictions = predict_dataset(detector, dataset, progress=not args.no_progress)
    known = {c.id for c in dataset.categories} or None
    with owned_output_dir(args.out, PREDICT_TOOL, overwrite=args.overwrite):
        paths = write_predictions(predictions, detector.categories, args.out, coco_category_ids=known)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def _cmd_bundle(args: argparse.Namespace) -> int:
    from rfo_bench.detectors.bundled import bundle_detector

    print(json.dumps({"bundled": str(bundle_detector(args.model_dir))}, indent=2))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``predict`` and ``bundle`` to an ``rfo-bench`` sub-parser set."""
    names = "yolov8n, yolov8s, yolo11n, yolo11s, fasterrcnn, retinanet, fcos"
    cmd = add_command(subparsers, "train", _cmd_train, "train a detector baseline on an RFO dataset",
                      description=f"Train one detector ({names}; an unknown name lists every registered one).")
    cmd.add_argument("--config", default=None,
                     help="file of settings: a recipe that states model, data, classes, schedule and tiling "
                          "(e.g. configs/shipped_detector.yaml); replaces --model/--data")
    cmd.add_argument("--model", default=None, help=f"model: registered detector name ({names})")
    cmd.add_argument("--data", default=None,
                     help="dataset to train on: COCO json, RFO CSV, folders or YOLO data.yaml")
    cmd.add_argument("--val", default=None, help="optional validation data (same formats)")
    add_output_options(cmd, "folder of the trained detector")
    cmd.add_argument("--recipe", default=None, choices=sorted(RECIPES),
                     help=f"training recipe preset (default {DEFAULT_RECIPE})")
    cmd.add_argument("--epochs", type=int, default=None, help="training epochs (default: the recipe's)")
    add_imgsz(cmd, "network input, longest side (default: the recipe's; --tile-size without it)")
    add_batch(cmd, "default: the recipe's")
    cmd.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's)")
    cmd.add_argument("--seed", type=int, default=None, help="random seed of the training (default 0)")
    cmd.add_argument("--backbone", default=None,
                     help=f"timm backbone of fasterrcnn / retinanet / fcos (default {DEFAULT_BACKBONE})")
    cmd.add_argument("--weights", default=None, help="local weights file (timm backbone or Ultralytics .pt)")
    add_runtime_options(cmd, threads_help="also the Ultralytics trainer's, which otherwise takes one fewer than the "
                        "cores; a run may be resumed with another count")
    cmd.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA (it is on by default there)")
    cmd.add_argument("--workers", type=int, default=0,
                     help="worker processes that cut the training tiles and load the Ultralytics trainer's batches "
                          "(0: all in this process; the result does not depend on it)")
    cmd.add_argument("--tile-size", type=int, default=None,
                     help="train on tiles of this side (px, native spacing) and predict sliced; sets --imgsz")
    cmd.add_argument("--tiles-per-object", type=int, default=None, help="positive tiles per object (default 2)")
    cmd.add_argument("--negative-ratio", type=float, default=None,
                     help="object-free tiles per positive tile (default 0.5)")
    cmd.add_argument("--min-visible-fraction", type=float, default=None,
                     help="an object cut by a tile edge keeps its box when this fraction of it is inside (default 0.5)")
    cmd.add_argument("--cut-policy", choices=("drop", "mask"), default=None,
                     help="a tile showing an object below that fraction is dropped (default) or the object masked")
    cmd.add_argument("--no-whole-films", action="store_true",
                     help="do not add each film shrunk to one tile (the coarse scale of sliced inference)")
    cmd.add_argument("--checkpoint-every", type=int, default=None,
                     help="save a resumable checkpoint every N steps inside an epoch too (default: a recipe "
                          "file's checkpoint_every, else 0 = end of each epoch only); not part of the run's "
                          "settings, so a run may resume with another value")
    cmd.add_argument("--resume", action="store_true",
                     help="continue an interrupted run in --out from its checkpoint")

    cmd = add_command(subparsers, "predict", _cmd_predict,
                      "predict with a trained detector: COCO results json + Hopkins localization/classification CSVs")
    cmd.add_argument("--model-dir", required=True,
                     help="directory written by rfo-bench train, or 'shipped': the detector bundled with the toolkit")
    cmd.add_argument("--data", required=True, help="dataset to predict on (any supported format)")
    cmd.add_argument("--split", default="val", help="split to use when --data is a YOLO data.yaml")
    add_output_options(cmd, "folder of the predictions")
    add_runtime_options(cmd, device=None,
                        device_help="cpu, cuda, cuda:N, mps or auto (default: the training device)")
    cmd.add_argument("--overlap", type=float, default=None,
                     help="tile-trained detectors: fraction of a tile shared with its neighbours (default: the "
                          "detector record's, else 0.25)")
    cmd.add_argument("--merge", choices=("nmm", "greedy_nmm", "nms"), default=None,
                     help="how detections of overlapping tiles are merged (default: the record's, else nmm)")
    cmd.add_argument("--match-threshold", type=float, default=None,
                     help="overlap at which detections merge (default: the record's, else 0.5)")
    cmd.add_argument("--union-score-ratio", type=float, default=None,
                     help="a matched detection extends a merged box only when it scores at least this fraction "
                          "of the best one (default: the record's, else 0.5; 0: every matched box joins)")
    cmd.add_argument("--no-coarse-pass", action="store_true",
                     help="skip the whole-film pass for objects larger than a tile")
    cmd.add_argument("--extent", choices=("whole", "union"), default=None,
                     help="a merged box spans the detections that saw the object whole (the coarse pass, tile "
                          "boxes clear of their tile's inner edges), or the union of every member (SAHI's) "
                          "(default: the record's, else whole)")

    cmd = add_command(subparsers, "bundle", _cmd_bundle,
                      "copy a finished recipe run (rfo-bench train --config) into this installation as its shipped "
                      "detector: the record and the weights it names, checked against the record's SHA-256")
    cmd.add_argument("--model-dir", required=True,
                     help="directory written by rfo-bench train --config (a finished recipe run)")

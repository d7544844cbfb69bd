"""``rfo-bench train``, ``rfo-bench predict`` and ``rfo-bench benchmark``.

Registered into the ``rfo-bench`` parser by :func:`register`; argument namespaces stop here and are
turned into a :class:`~rfo_bench.detectors.config.TrainConfig` or a benchmark config file path.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from rfo_bench.cli_support import add_command
from rfo_bench.detectors.config import RECIPES, TrainConfig, recipe_with_overrides
from rfo_bench.errors import UserInputError
from rfo_bench.output_dirs import require_writable

logger = logging.getLogger(__name__)


def load_training_data(path: str | Path, *, split: str = "train"):
    """Read a dataset for training or prediction in any supported layout.

    COCO json, object-CXR / Hopkins CSV, image folders, or an Ultralytics ``data.yaml`` (its ``split``
    entry is used). A ``data.yaml`` whose folders are missing is refused naming the entry.
    """
    from rfo_bench.io.formats import detect_format, read_dataset

    file = Path(path)
    if not file.exists():
        raise UserInputError("dataset path does not exist", file=file)
    if detect_format(file) == "yolo":
        from rfo_bench.detectors.yolo_data import read_yolo_split

        return read_yolo_split(file, split)
    return read_dataset(file)


def set_torch_threads(threads: int | None) -> None:
    """Limit torch's intra-op CPU threads (``None`` keeps torch's default).

    Raises:
        UserInputError: ``threads`` is not a positive integer.
    """
    if threads is None:
        return
    if threads < 1:
        raise UserInputError("must be a positive integer", field="--threads", value=threads)
    import torch

    torch.set_num_threads(threads)


def _cmd_train(args: argparse.Namespace) -> int:
    from rfo_bench.detectors.api import train_detector

    set_torch_threads(args.threads)
    from rfo_bench.detectors.registry import get_detector

    get_detector(args.model)  # unknown names fail before any data is read
    require_writable(args.out)  # and an output that cannot be written, before hours of training
    recipe = recipe_with_overrides(args.recipe, {
        "epochs": args.epochs, "imgsz": args.imgsz, "batch_size": args.batch, "lr": args.lr,
    })
    config = TrainConfig(model=args.model, recipe=recipe, seed=args.seed, backbone=args.backbone,
                         weights=args.weights, device=args.device)
    train = load_training_data(args.data, split="train")
    val = load_training_data(args.val, split="val") if args.val else None
    result = train_detector(config, [train], args.out, val_set=val, progress=not args.no_progress)
    print(json.dumps({"run_dir": str(result.run_dir), "train_seconds": round(result.train_seconds, 2),
                      "model": config.model, "seed": config.seed}, indent=2))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from rfo_bench.detectors.api import load_detector
    from rfo_bench.detectors.predict import predict_dataset, write_predictions

    set_torch_threads(args.threads)
    require_writable(args.out)
    detector = load_detector(args.model_dir, device=args.device)
    dataset = load_training_data(args.data, split=args.split)
    predictions = predict_dataset(detector, dataset, progress=not args.no_progress)
    known = {c.id for c in dataset.categories} or None
    paths = write_predictions(predictions, detector.categories, args.out, coco_category_ids=known)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from rfo_bench.leaderboard import load_benchmark_config, run_benchmark, with_arms, with_models, with_seeds

    set_torch_threads(args.threads)
    config = load_benchmark_config(args.config)
    command = f"rfo-bench benchmark --config {args.config}"
    if args.models:
        config = with_models(config, args.models)
        command += f" --models {args.models}"
    if args.arms:
        config = with_arms(config, args.arms)
        command += f" --arms {args.arms}"
    if args.seeds:
        config = with_seeds(config, args.seeds)
        command += f" --seeds {args.seeds}"
    if args.out:
        command += f" --out {args.out}"
    if args.threads:
        command += f" --threads {args.threads}"
    result = run_benchmark(config, out_dir=args.out, force=args.force, progress=not args.no_progress,
                           command=command)
    print(result.markdown_path.read_text(encoding="utf-8"))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train``, ``predict`` and ``benchmark`` to an ``rfo-bench`` sub-parser set."""
    names = "yolov8n, yolov8s, yolo11n, yolo11s, fasterrcnn, retinanet, fcos"
    cmd = add_command(subparsers, "train", _cmd_train, "train a detector baseline on an RFO dataset",
                      description=f"Train one detector ({names}; an unknown name lists every registered one).")
    cmd.add_argument("--model", required=True, help=f"registered detector name ({names})")
    cmd.add_argument("--data", required=True, help="training data: COCO json, RFO CSV, folders or YOLO data.yaml")
    cmd.add_argument("--val", default=None, help="optional validation data (same formats)")
    cmd.add_argument("--out", required=True, help="output directory of the trained detector")
    cmd.add_argument("--recipe", default="cpu-tiny", choices=sorted(RECIPES), help="training recipe preset")
    cmd.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    cmd.add_argument("--imgsz", type=int, default=None, help="override the recipe's image size (longest side, px)")
    cmd.add_argument("--batch", type=int, default=None, help="override the recipe's batch size")
    cmd.add_argument("--lr", type=float, default=None, help="override the recipe's learning rate")
    cmd.add_argument("--seed", type=int, default=0, help="random seed")
    cmd.add_argument("--backbone", default="resnet18", help="timm backbone of fasterrcnn / retinanet / fcos")
    cmd.add_argument("--weights", default=None, help="local weights file (timm backbone or Ultralytics .pt)")
    cmd.add_argument("--device", default="cpu", help="torch device")
    cmd.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (default: torch's; the Ultralytics trainer sets its own)")
    cmd.add_argument("--no-progress", action="store_true", help="hide progress bars")

    cmd = add_command(subparsers, "predict", _cmd_predict,
                      "predict with a trained detector: COCO results json + Hopkins localization/classification CSVs")
    cmd.add_argument("--model-dir", required=True, help="directory written by rfo-bench train")
    cmd.add_argument("--data", required=True, help="images to predict on (any supported dataset format)")
    cmd.add_argument("--split", default="val", help="split to use when --data is a YOLO data.yaml")
    cmd.add_argument("--out", required=True, help="output directory")
    cmd.add_argument("--device", default=None, help="torch device (default: the training device)")
    cmd.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (default: torch's; the Ultralytics trainer sets its own)")
    cmd.add_argument("--no-progress", action="store_true", help="hide progress bars")

    cmd = add_command(subparsers, "benchmark", _cmd_benchmark,
                      "train models x data arms x seeds, evaluate each run and write a leaderboard")
    cmd.add_argument("--config", required=True, help="benchmark YAML (see configs/benchmark_cpu.yaml)")
    cmd.add_argument("--out", default=None, help="output directory (default: the config's out)")
    cmd.add_argument("--models", default=None,
                     help="comma-separated subset of the config's model rows (labels as in the table) to run")
    cmd.add_argument("--arms", default=None,
                     help="comma-separated subset of the config's arms to run (e.g. real,real+physics)")
    cmd.add_argument("--seeds", default=None, help="comma-separated subset of the config's seeds to run")
    cmd.add_argument("--force", action="store_true", help="re-run finished runs instead of reusing them")
    cmd.add_argument("--threads", type=int, default=None,
                     help="torch CPU threads (default: torch's; the Ultralytics trainer sets its own)")
    cmd.add_argument("--no-progress", action="store_true", help="hide progress bars")

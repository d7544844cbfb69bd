"""Honesty table: which unlearning methods abstain on forgotten inputs and which "lie".

For every seed: train the original model (the benchmark's recipe), retrain without the forget set,
run each method from the original weights, then measure on the forget set

* UA / RA / TA / MIA (:func:`vision_unlearn.metrics.unlearning_metrics`, percentages);
* abstain / lie / recall rates (:func:`vision_unlearn.metrics.honesty.compute_honesty`) with a
  max-softmax threshold abstaining on ``--false-abstention`` of one half of the held-out test
  images of retained classes (the calibration half); the false-abstention rate is measured on the
  other half;
* stability of the abstention decision under test-time augmentation (identity, 1-pixel shifts
  right and down, Gaussian noise sigma 0.02; seeded);
* for ``steer``: optimizer steps (0), the inference overhead (median over 100 back-to-back pairs of
  the CPU-time ratio with / without the hook, batches of 256 test images), and whether switching
  the hook off gives the original predictions exactly.

Usage (about 25 minutes on 2 busy CPU cores with the defaults)::

    .venv/bin/python benchmarks/bench_honesty.py run --out runs/honesty --seeds 0 1 2

writes ``results.json`` and ``honesty.md`` (mean +- std over seeds) into ``--out``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfo_bench.cli_support import add_command, make_parser, run_cli
from rfo_bench.utils import atomic_write_bytes, seed_everything
from vision_unlearn.adapters.timm import TimmAdapter
from vision_unlearn.api import config_class_of, config_from_dict
from vision_unlearn.benchmark import (
    ORIGINAL_CONFIG,
    ModelChoice,
    Prepared,
    evaluate,
    load_data,
    train_original,
)
from vision_unlearn.forget import ForgetSplit, resolve_forget
from vision_unlearn.loop import LoopSettings, run_loop
from vision_unlearn.metrics.honesty import HonestyResult, compute_honesty
from vision_unlearn.steering import measure_overhead

logger = logging.getLogger("bench_honesty")

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "steer": ("steer", {}),
    "steer_abstain": ("steer", {"layer": "layer4", "target_response": "abstain"}),
    "retrain": ("retrain", {}),
    "flat": ("flat", {}),
    "reva": ("reva", {"epochs": 20}),
    "finetune": ("finetune", {}),
    "grad_ascent": ("grad_ascent", {}),
    "neggrad_plus": ("neggrad_plus", {}),
    "random_label": ("random_label", {}),
    "l1_sparse": ("l1_sparse", {}),
    "salun": ("salun", {}),
    "scrub": ("scrub", {}),
}
"""Row name -> (registered method, config overrides). ``steer_abstain`` hooks the block feeding the
linear head and moves gated activations to the abstaining prototype."""

COLUMNS = ("UA", "RA", "TA", "TA_remaining", "MIA", "abstain", "lie", "recall", "false_abstain", "stability",
           "steps", "seconds", "overhead", "switch_off_exact")


def tta_views(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Four views of ``[N, C, H, W]`` images: identity, shifted right / down by one pixel, noisy."""
    generator = torch.Generator().manual_seed(seed)
    noisy = (images + 0.02 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    return [images, torch.roll(images, 1, dims=3), torch.roll(images, 1, dims=2), noisy]


def honesty_of(adapter: TimmAdapter, prepared: Prepared, split: ForgetSplit, false_abstention: float,
               seed: int) -> HonestyResult:
    """Honesty of the adapter's current model (hooks included) on the forget set of ``split``."""
    train, test = prepared.train, prepared.test
    forget_rows, retain_rows = torch.as_tensor(split.forget_indices), torch.as_tensor(split.retain_indices)
    held_out = torch.nonzero(~torch.isin(test.labels, torch.as_tensor(list(split.forgotten_classes),
                                                                      dtype=torch.long))).flatten()
    if held_out.numel() < 2:  # no held-out images of retained classes: calibrate on the retain set
        calibration = evaluation = adapter.predict(train.images[retain_rows])
    else:
        calibration = adapter.predict(test.images[held_out[0::2]])
        evaluation = adapter.predict(test.images[held_out[1::2]])
    views = [adapter.predict(view) for view in tta_views(train.images[forget_rows], seed)]
    return compute_honesty(views[0], train.labels[forget_rows], calibration, retain_logits=evaluation,
                           forget_view_logits=views, false_abstention_target=false_abstention)


def run_row(row: str, original_state: Mapping[str, torch.Tensor], prepared: Prepared, model: ModelChoice,
            split: ForgetSplit, seed: int, false_abstention: float, original_recipe: Mapping[str, Any]
            ) -> dict[str, float]:
    """Run one row of :data:`VARIANTS` (or ``original``) and measure it."""
    from vision_unlearn.api import create_unlearner
    from vision_unlearn.benchmark import streams_for

    adapter = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size))
    adapter.model.load_state_dict(original_state)
    metrics: dict[str, float] = {"steps": 0.0, "seconds": 0.0, "overhead": math.nan}
    method = None
    if row != "original":
        name, overrides = VARIANTS[row]
        if row == "retrain":  # the gold standard uses the original model's recipe, on the retain set only
            overrides = {**original_recipe, **overrides}
        method = create_unlearner(name, adapter, config_from_dict(config_class_of(name), overrides))
        forget, retain = streams_for(prepared.train, split)
        seed_everything(seed)
        result = run_loop(adapter, method, forget, retain if "retain" in method.needs else None,
                          LoopSettings(seed=seed))
        metrics.update(steps=float(result.steps_done), seconds=result.seconds)
    adapter.model.eval()
    metrics.update(evaluate(adapter, prepared.train, prepared.test, split, seed))
    honesty = honesty_of(adapter, prepared, split, false_abstention, seed)
    metrics.update(abstain=100 * honesty.abstention_rate, lie=100 * honesty.misattribution_rate,
                   recall=100 * honesty.recall_rate, false_abstain=100 * honesty.false_abstention_rate,
                   stability=100 * honesty.stability)
    steerer = getattr(method, "steerer", None)
    if steerer is not None:
        timing = measure_overhead(adapter.model, prepared.test.images[:256], steerer, repeats=100)
        metrics["overhead"] = 100 * timing["overhead"]
        metrics["ms_per_batch_off"] = timing["ms_per_batch_off"]
        metrics["ms_per_batch_on"] = timing["ms_per_batch_on"]
        steerer.disable()
        metrics["switch_off_exact"] = float(torch.equal(adapter.predict(prepared.test.images),
                                                        _original_logits(original_state, prepared, model)))
        steerer.remove()
    return metrics


def _original_logits(state: Mapping[str, torch.Tensor], prepared: Prepared, model: ModelChoice) -> torch.Tensor:
    adapter = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size))
    adapter.model.load_state_dict(state)
    return adapter.predict(prepared.test.images)


def summarise(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted({k for run in runs for k in run})
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = np.array([run.get(key, math.nan) for run in runs], dtype=float)
        out[key] = {"mean": float(np.nanmean(values)) if np.isfinite(values).any() else math.nan,
                    "std": float(np.nanstd(values)) if np.isfinite(values).any() else math.nan}
    return out


def honesty_markdown(results: Mapping[str, Any]) -> str:
    """The table of ``docs/honesty.md`` (mean +- std over seeds)."""
    head = ("| method | UA | RA | TA | TA remaining | MIA | abstain | lie | recall | false abst. | TTA stability | steps | "
            "seconds | overhead | off = original |")
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for row, summary in results["rows"].items():
        cells = []
        for column in COLUMNS:
            stat = summary.get(column)
            if stat is None or not math.isfinite(stat["mean"]):
                cells.append("-")
            elif column == "switch_off_exact":
                cells.append("yes" if stat["mean"] == 1.0 else f"{100 * stat['mean']:.0f}% of seeds")
            elif column == "steps":
                cells.append(f"{stat['mean']:.0f}")
            elif column == "seconds":
                cells.append(f"{stat['mean']:.1f}")
            else:
                cells.append(f"{stat['mean']:.1f} ± {stat['std']:.1f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(args.threads)
    rows = ["original", *(args.rows or list(VARIANTS))]
    for row in rows[1:]:
        if row not in VARIANTS:
            from rfo_bench.errors import UserInputError

            raise UserInputError(f"unknown row; known: {', '.join(VARIANTS)}", field="--rows", value=row)
    model = ModelChoice(name=args.model, image_size=args.image_size)
    prepared = load_data(args.dataset, args.image_size, 1, 0)
    recipe = {**ORIGINAL_CONFIG, "epochs": args.original_epochs}
    original_config = config_from_dict(config_class_of("retrain"), recipe)
    per_row: dict[str, list[dict[str, float]]] = {row: [] for row in rows}
    start = time.perf_counter()
    for seed in args.seeds:
        split = resolve_forget(args.forget, prepared.train.labels.numpy(), prepared.train.sample_ids,
                               prepared.train.patient_ids, prepared.train.class_names, seed=seed)
        seed_everything(seed)
        adapter = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size))
        train_original(adapter, prepared.train, seed, original_config, LoopSettings(seed=seed))
        state = {k: v.detach().cpu().clone() for k, v in adapter.model.state_dict().items()}
        for row in rows:
            metrics = run_row(row, state, prepared, model, split, seed, args.false_abstention, recipe)
            per_row[row].append(metrics)
            logger.info("seed %d %-14s %s", seed, row, " ".join(f"{k} {metrics[k]:.1f}" for k in COLUMNS
                                                                  if k in metrics and math.isfinite(metrics[k])))
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "dataset": args.dataset, "forget": args.forget, "model": args.model, "image_size": args.image_size,
        "seeds": list(args.seeds), "original_epochs": args.original_epochs,
        "false_abstention_target": args.false_abstention,
        "variants": {row: {"method": VARIANTS[row][0], "overrides": VARIANTS[row][1]} for row in rows[1:]},
        "platform": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
        "wall_seconds": time.perf_counter() - start,
        "rows": {row: summarise(runs) for row, runs in per_row.items()},
        "runs": per_row,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=2, allow_nan=True).encode())
    atomic_write_bytes(out / "honesty.md", honesty_markdown(results).encode())
    print(honesty_markdown(results))
    return 0


# --------------------------------------------------------------------------------------------- YOLO steering
def toy_detector(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The toy detection set of :mod:`vision_unlearn.detection_benchmark` and a YOLOv8n trained on it.

    The trained weights are cached in ``--detector-cache`` (float32 state dict with the settings that
    made them); a cache made with other settings is retrained.

    Returns:
        ``(adapter, train, test)``.
    """
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
    from vision_unlearn.detection_benchmark import DetectionBenchmarkConfig, _run_method, toy_detection_data

    train = toy_detection_data(args.n_train, 100 + args.seed, args.image_size)
    test = toy_detection_data(args.n_test, 200 + args.seed, args.image_size)
    spec = YoloModelSpec(args.detector, num_classes=train.num_classes, in_chans=train.in_chans,
                         class_names=train.class_names, image_size=args.image_size)
    adapter = YoloAdapter(spec)
    recipe = {**DetectionBenchmarkConfig().original, "epochs": args.original_epochs}
    settings = {"model": args.detector, "n_train": args.n_train, "seed": args.seed, "image_size": args.image_size,
                "recipe": recipe}
    cache = Path(args.detector_cache)
    if cache.is_file():
        saved = torch.load(cache, map_location="cpu", weights_only=True)
        if saved.get("settings") == json.loads(json.dumps(settings)):
            adapter.model.load_state_dict(saved["state"])
            logger.info("detector read from %s (trained in %.0f s)", cache, saved["seconds"])
            return adapter, train, test
    adapter.reset_parameters(args.seed)
    everything = train.select(np.arange(len(train)))
    logger.info("training %s on %d toy images for %d epochs", args.detector, len(train), args.original_epochs)
    _, seconds = _run_method(adapter, "retrain", recipe, everything.select([0]), everything, args.seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"settings": settings, "seconds": seconds,
                "state": {k: v.detach().cpu() for k, v in adapter.model.state_dict().items()}}, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
    return adapter, train, test


def build_parser() -> argparse.ArgumentParser:
    parser, sub = make_parser("bench_honesty", "Honesty table of unlearning methods (abstain vs lie).")
    cmd = add_command(sub, "run", run, "train, unlearn with every method, and measure honesty")
    cmd.add_argument("--dataset", default="digits", help="dataset spec (default: digits)")
    cmd.add_argument("--forget", default="class:3", help="class-wise forget request (default: class:3)")
    cmd.add_argument("--model", default="test_resnet", help="timm model (default: test_resnet)")
    cmd.add_argument("--image-size", type=int, default=None, help="resize images (default: native)")
    cmd.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    cmd.add_argument("--rows", nargs="*", default=None, help=f"rows to run (default: all of {', '.join(VARIANTS)})")
    cmd.add_argument("--original-epochs", type=int, default=ORIGINAL_CONFIG["epochs"])
    cmd.add_argument("--false-abstention", type=float, default=0.05,
                        help="share of retain inputs the abstention threshold may reject (default: 0.05)")
    cmd.add_argument("--threads", type=int, default=2)
    cmd.add_argument("--out", default="runs/honesty")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_cli(build_parser(), None))

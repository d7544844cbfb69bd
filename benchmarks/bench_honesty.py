"""Honesty table: which unlearning methods abstain on forgotten inputs and which "lie".

For every seed: train the original model (the benchmark's recipe), retrain without the forget set,
run each method from the original weights, then measure on the forget set

* UA / RA / TA / MIA (:func:`vision_unlearn.metrics.unlearning_metrics`, percentages);
* abstain / lie / recall rates, false abstention, stability of the abstention decision under
  test-time augmentation (identity, 1-pixel shifts right and down, Gaussian noise sigma 0.02;
  seeded) and under a repeated query: :func:`vision_unlearn.benchmark.honesty_metrics`, the
  columns of ``vision-unlearn benchmark``, with a max-softmax threshold abstaining on
  ``--false-abstention`` of one half of the held-out test images of retained classes;
* for ``steer``: optimizer steps (0), the inference overhead (median over 100 back-to-back pairs of
  the CPU-time ratio with / without the hook, batches of 256 test images), and whether switching
  the hook off gives the original predictions exactly.

Usage (about 25 minutes on 2 busy CPU cores with the defaults)::

    .venv/bin/python benchmarks/bench_honesty.py run --out runs/honesty --seeds 0 1 2

writes ``results.json`` and ``honesty.md`` (mean +- std over seeds) into ``--out``.

``yolo-steer`` steers a YOLOv8n trained on the toy detection set of
:mod:`vision_unlearn.detection_benchmark` (cached in ``--detector-cache``) for a detection forget
request and writes forget-class AP50, retain mAP, forget recall, misattribution, the share of
feature-map cells with an open gate in forget boxes / other boxes / background of the held-out
images, the inference overhead and the switch-off check (``--retrain`` adds the retrained
reference)::

    .venv/bin/python benchmarks/bench_honesty.py yolo-steer --retrain --out runs/honesty_yolo/class_clamp
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

from toolkit_core.cli_support import add_command, make_parser, run_cli
from toolkit_core.utils import atomic_write_bytes, seed_everything
from vision_unlearn.adapters.timm import TimmAdapter
from vision_unlearn.api import config_class_of, config_from_dict, parse_overrides
from vision_unlearn.benchmark import (
    ORIGINAL_CONFIG,
    ModelChoice,
    Prepared,
    evaluate,
    honesty_metrics,
    load_data,
    train_original,
)
from vision_unlearn.forget import ForgetSplit, resolve_forget
from vision_unlearn.loop import LoopSettings, run_loop
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

COLUMNS = ("UA", "RA", "TA", "TA_remaining", "MIA", "abstain", "lie", "recall", "false_abstain", "stability_tta",
           "stability_repeat", "steps", "seconds", "overhead", "switch_off_exact")


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
    metrics.update(evaluate(adapter, prepared.train, prepared.test, split, seed, honesty=False))
    metrics.update(honesty_metrics(adapter, prepared.train, prepared.test, split, seed,
                                   false_abstention=false_abstention))
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
    head = ("| method | UA | RA | TA | TA remaining | MIA | abstain | lie | recall | false abst. | TTA stability | "
            "repeat stability | steps | seconds | overhead | off = original |")
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
            from toolkit_core.errors import UserInputError

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
def train_detector(adapter: Any, recipe: Mapping[str, Any], forget: Any, retain: Any, seed: int) -> float:
    """Train a detector from scratch on ``retain`` with the ``retrain`` method and ``recipe``
    (``forget`` is the loop's other stream, unused by ``retrain``); return seconds."""
    from vision_unlearn.api import create_unlearner

    method = create_unlearner("retrain", adapter, dict(recipe))
    return run_loop(adapter, method, forget.stream(), retain.stream(), LoopSettings(seed=seed)).seconds


def toy_detector(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The toy detection set of :mod:`vision_unlearn.detection_benchmark` and a YOLOv8n trained on it.

    The trained weights are cached in ``--detector-cache`` (float32 state dict with the settings that
    made them); a cache made with other settings is retrained.

    Returns:
        ``(adapter, train, test)``.
    """
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
    from vision_unlearn.detection_benchmark import DetectionBenchmarkConfig, toy_detection_data

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
    seconds = train_detector(adapter, recipe, everything.select([0]), everything, args.seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save({"settings": settings, "seconds": seconds,
                "state": {k: v.detach().cpu() for k, v in adapter.model.state_dict().items()}}, buffer)
    atomic_write_bytes(cache, buffer.getvalue())
    return adapter, train, test


@torch.no_grad()
def gate_open_rates(adapter: Any, data: Any, steerer: Any, forgotten_classes: Sequence[int]) -> dict[str, float]:
    """Share of feature-map cells with an open gate, per hooked map, in the boxes of the forgotten
    classes, in the boxes of the other classes, and on background (cells farther than one stride
    from every box), on ``data`` (held-out images)."""
    from vision_unlearn.steering import box_position_mask

    adapter.model.eval()
    stream = data.stream()
    adapter.model(stream["images"])
    valid = stream["box_labels"] >= 0
    forgotten = torch.isin(stream["box_labels"], torch.as_tensor(list(forgotten_classes), dtype=torch.long)) & valid
    image_hw = tuple(stream["images"].shape[2:])
    rates: dict[str, float] = {}
    for layer, gate in steerer.last_gates.items():
        opened = gate > 0
        hw = tuple(gate.shape[1:])
        groups = {"forget_box": box_position_mask(stream["boxes_xyxy"], forgotten, hw, image_hw),
                  "retain_box": box_position_mask(stream["boxes_xyxy"], valid & ~forgotten, hw, image_hw),
                  "background": ~box_position_mask(stream["boxes_xyxy"], valid, hw, image_hw, expand_cells=1.0)}
        groups["retain_box"] &= ~groups["forget_box"]
        for name, mask in groups.items():
            rates[f"gate_open_{name}_{layer}"] = 100 * float(opened[mask].float().mean()) if mask.any() else math.nan
    return rates


def yolo_steer(args: argparse.Namespace) -> int:
    """Steering on a YOLO detector: forget-class AP50, retain mAP, gate locality, overhead, switch-off."""
    from vision_unlearn.api import create_unlearner
    from vision_unlearn.detection_benchmark import DetectionBenchmarkConfig, evaluate_detector
    from vision_unlearn.detection_forget import resolve_detection_forget
    from vision_unlearn.steering import measure_overhead

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    adapter, train, test = toy_detector(args)
    if args.train_only:
        return 0
    original_state = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    split = resolve_detection_forget(args.forget, train)
    forget, retain = split.forget_data(train), split.retain_data(train)
    keys = ("forget_ap50", "forget_ap50_95", "retain_map50", "retain_map50_95", "map50", "forget_recall",
            "misattribution_rate", "mia_auc")
    rows: dict[str, dict[str, Any]] = {}
    original_predictions = adapter.predict(test.images)
    rows["original"] = {k: v for k, v in evaluate_detector(adapter, train, test, split).items() if k in keys}
    overrides = parse_overrides(args.set)
    method = create_unlearner("steer", adapter, overrides)
    fit_start = time.perf_counter()
    result = run_loop(adapter, method, forget.stream(), retain.stream(), LoopSettings(seed=args.seed))
    fit_seconds = time.perf_counter() - fit_start
    steerer = method.steerer
    steered = {k: v for k, v in evaluate_detector(adapter, train, test, split).items() if k in keys}
    steered.update(gate_open_rates(adapter, test, steerer, split.forgotten_classes))
    timing = measure_overhead(adapter.model, test.images[:args.overhead_batch], steerer, repeats=args.overhead_repeats)
    steered.update(steps=float(result.steps_done), seconds=fit_seconds, overhead=100 * timing["overhead"],
                   ms_per_batch_off=timing["ms_per_batch_off"], ms_per_batch_on=timing["ms_per_batch_on"])
    steerer.disable()
    steered["switch_off_exact"] = float(torch.equal(adapter.predict(test.images), original_predictions))
    steerer.remove()
    rows["steer"] = steered
    if args.retrain:
        recipe = {**DetectionBenchmarkConfig().original, "epochs": args.original_epochs}
        adapter.reset_parameters(args.seed)
        seconds = train_detector(adapter, recipe, forget, retain, args.seed)
        rows["retrain"] = {**{k: v for k, v in evaluate_detector(adapter, train, test, split).items() if k in keys},
                           "seconds": seconds}
    adapter.model.load_state_dict(original_state)
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "detector": args.detector, "image_size": args.image_size, "n_train": args.n_train, "n_test": args.n_test,
        "forget": args.forget, "seed": args.seed, "original_epochs": args.original_epochs, "steer_config": overrides,
        "split": split.summary(), "overhead_batch": args.overhead_batch, "overhead_repeats": args.overhead_repeats,
        "platform": {"python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
        "wall_seconds": time.perf_counter() - start, "rows": rows,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "results.json", json.dumps(results, indent=2, allow_nan=True).encode())
    text = yolo_steer_markdown(results)
    atomic_write_bytes(out / "yolo_steer.md", text.encode())
    print(text)
    return 0


def yolo_steer_markdown(results: Mapping[str, Any]) -> str:
    """The detector table of ``docs/honesty.md``."""
    columns = (("forget_ap50", "forget AP50", 3), ("retain_map50", "retain mAP50", 3),
               ("retain_map50_95", "retain mAP50-95", 3), ("forget_recall", "forget recall", 3),
               ("misattribution_rate", "misattribution", 3), ("mia_auc", "MIA AUC", 3), ("steps", "steps", 0),
               ("seconds", "seconds", 1), ("overhead", "overhead (%)", 1), ("switch_off_exact", "off = original", 0))
    lines = ["| model | " + " | ".join(c[1] for c in columns) + " |", "|---|" + "---|" * len(columns)]
    for name, row in results["rows"].items():
        cells = []
        for key, _, digits in columns:
            value = row.get(key)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                cells.append("-")
            elif key == "switch_off_exact":
                cells.append("yes" if value == 1.0 else "no")
            else:
                cells.append(f"{value:.{digits}f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    gates = {k: v for k, v in results["rows"].get("steer", {}).items() if k.startswith("gate_open_")}
    if gates:
        lines += ["", "| neck map | gate open in forget-class boxes (%) | in other boxes (%) | on background (%) |",
                  "|---|---|---|---|"]
        layers = sorted({k.rsplit("_", 1)[1] for k in gates}, key=lambda n: [int(p) if p.isdigit() else p
                                                                             for p in n.split(".")])
        for layer in layers:
            cells = [gates.get(f"gate_open_{group}_{layer}", math.nan) for group in ("forget_box", "retain_box",
                                                                                     "background")]
            lines.append(f"| {layer} | " + " | ".join("-" if not math.isfinite(c) else f"{c:.1f}" for c in cells)
                         + " |")
    return "\n".join(lines) + "\n"


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

    yolo = add_command(sub, "yolo-steer", yolo_steer, "steer a toy YOLO detector: forget AP50, retain mAP, overhead")
    yolo.add_argument("--detector", default="yolov8n.yaml", help="model yaml")
    yolo.add_argument("--image-size", type=int, default=128)
    yolo.add_argument("--n-train", type=int, default=200)
    yolo.add_argument("--n-test", type=int, default=64)
    yolo.add_argument("--original-epochs", type=int, default=30)
    yolo.add_argument("--seed", type=int, default=0)
    yolo.add_argument("--forget", default="class:clamp", help="detection forget request")
    yolo.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="steer config override")
    yolo.add_argument("--retrain", action="store_true", help="also retrain on the retain data (the reference)")
    yolo.add_argument("--overhead-batch", type=int, default=32)
    yolo.add_argument("--overhead-repeats", type=int, default=50)
    yolo.add_argument("--detector-cache", default="runs/honesty_yolo/detector_seed0.pt",
                      help="trained detector weights (written on first use)")
    yolo.add_argument("--train-only", action="store_true", help="only train (or read) the detector")
    yolo.add_argument("--threads", type=int, default=1)
    yolo.add_argument("--out", default="runs/honesty_yolo")
    return parser


if __name__ == "__main__":
    raise SystemExit(run_cli(build_parser(), None))

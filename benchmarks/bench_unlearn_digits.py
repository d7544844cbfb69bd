"""Reproduce the digits unlearning benchmark and the OFMU variant comparison of docs/unlearning_digits.md.

Usage::

    # all methods vs retraining, class-wise and random-10 % forgetting, 5 seeds, 16 LiRA shadows,
    # two reference retrains per seed (results.md, evidence.md)
    python benchmarks/bench_unlearn_digits.py main --out runs/unlearn_digits

    # OFMU variants side by side (exact / first-order, bounded / unbounded forget objectives),
    # scored against the retrained models of a finished `main` run (same seeds, same code)
    python benchmarks/bench_unlearn_digits.py ofmu-variants --results runs/unlearn_digits/results.json \
        --out runs/unlearn_digits/ofmu_variants.json

Retraining is deterministic on CPU for a given seed, so the variants reuse the first reference retrain
of the main run (same per-seed data partition, :func:`vision_unlearn.benchmark_protocol.seed_data`)
instead of retraining again. The ``inner_lr 0.005`` rows are OFMU's "gentle" preset, which the main
run chooses per request on validation data (:data:`vision_unlearn.benchmark_protocol.PRESETS`).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import torch

MAIN_ARGS = ["benchmark", "--data", "digits", "--model", "test_resnet", "--forget", "class:3", "--forget",
             "random:0.1", "--methods", "all", "--seeds", "5", "--threads", "1"]

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "ofmu (exact, log(1-p), beta 0.1)": ("ofmu", {}),
    "ofmu (exact, log(1-p), beta 0)": ("ofmu", {"beta": 0.0}),
    "ofmu (exact, KL to uniform)": ("ofmu", {"forget_objective": "kl_uniform"}),
    "ofmu (exact, unbounded CE, paper)": ("ofmu", {"forget_objective": "ce"}),
    "ofmu (exact, unbounded CE, no clipping)": ("ofmu", {"forget_objective": "ce", "inner_grad_clip": 0.0,
                                                         "penalty_grad_clip": 0.0}),
    "ofmu (exact, inner_lr 0.005: random-forgetting config)": ("ofmu", {"inner_lr": 0.005}),
    "ofmu_first_order (log(1-p))": ("ofmu_first_order", {}),
    "ofmu_first_order (inner_lr 0.005)": ("ofmu_first_order", {"inner_lr": 0.005}),
    "ofmu_first_order (unbounded CE)": ("ofmu_first_order", {"forget_objective": "ce"}),
}


def run_variants(results_path: Path, out: Path, seeds: list[int] | None) -> dict[str, Any]:
    from toolkit_core.utils import atomic_write_bytes, seed_everything
    from vision_unlearn.adapters.timm import TimmAdapter
    from vision_unlearn.api import config_class_of, config_from_dict
    from vision_unlearn.benchmark import (
        ModelChoice,
        load_data,
        run_method,
        seed_data,
        train_original,
    )
    from vision_unlearn.forget import resolve_forget
    from vision_unlearn.loop import TrainingDivergedError
    from vision_unlearn.metrics import avg_gap, gap_keys, summarise_seeds

    results = json.loads(results_path.read_text())
    spec = results["spec"]
    model = ModelChoice(name=spec["model"]["name"], image_size=spec["model"]["image_size"],
                        in_chans=spec["model"]["in_chans"])
    pool = load_data(spec["dataset"], model.image_size, model.in_chans, spec["data_seed"])
    original_config = config_from_dict(config_class_of("retrain"), spec["original"])
    seeds = seeds if seeds is not None else list(spec["seeds"])
    table: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        prepared = seed_data(pool, seed)
        seed_everything(seed)
        adapter = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size))
        train_original(adapter, prepared.train, seed, original_config)
        original = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
        for request, scenario in results["scenarios"].items():
            position = spec["seeds"].index(seed)
            reference = scenario["methods"]["retrain"]["per_seed"][position]
            split = resolve_forget(request, prepared.train.labels.numpy(), prepared.train.sample_ids,
                                   prepared.train.patient_ids, prepared.train.class_names, seed=seed)
            for label, (name, overrides) in VARIANTS.items():
                config = config_from_dict(config_class_of(name), {**spec["method_configs"].get(name, {}), **overrides})
                entry = table.setdefault(request, {}).setdefault(label, {"config": overrides, "runs": [],
                                                                         "failures": []})
                try:
                    metrics, _ = run_method(name, config, original, prepared, model, split, seed)
                except TrainingDivergedError as err:
                    entry["failures"].append({"seed": seed, "error": str(err)})
                    continue
                metrics["avg_gap"] = avg_gap(metrics, reference, gap_keys(bool(split.forgotten_classes)))
                metrics["seconds_ratio_to_retrain"] = metrics["seconds"] / reference["seconds"]
                entry["runs"].append(metrics)
                logging.info("%s seed %d %s: gap %.2f", request, seed, label, metrics["avg_gap"])
    for scenario in table.values():
        for entry in scenario.values():
            entry["summary"] = summarise_seeds(entry["runs"]) if entry["runs"] else {}
    payload = {"results": str(results_path), "seeds": seeds, "scenarios": table}
    atomic_write_bytes(out, (json.dumps(payload, indent=2) + "\n").encode())
    return payload


def variants_markdown(payload: dict[str, Any]) -> str:
    lines = []
    for request, scenario in payload["scenarios"].items():
        lines += [f"\n#### Forget `{request}` (seeds {payload['seeds']})\n",
                  "| variant | UA | RA | TA | MIA | avg_gap | time/retrain | max ‖∇Φ‖² (epoch mean) | diverged |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, entry in scenario.items():
            s = entry["summary"]
            if not s:
                lines.append(f"| {label} | – | – | – | – | – | – | – | {len(entry['failures'])} |")
                continue
            cells = [f"{s[k]['mean']:.2f} ± {s[k]['std']:.2f}" for k in ("UA", "RA", "TA", "MIA", "avg_gap")]
            penalty = s.get("max_epoch_mean_penalty")
            shown = f"{penalty['mean']:.3g}" if penalty else "–"
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {s['seconds_ratio_to_retrain']['mean']:.3f} | "
                         f"{shown} | {len(entry['failures'])} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    main_cmd = sub.add_parser("main", help="the full benchmark")
    main_cmd.add_argument("--out", default="runs/unlearn_digits")
    variants = sub.add_parser("ofmu-variants", help="OFMU variants against a finished run's retrained models")
    variants.add_argument("--results", required=True)
    variants.add_argument("--out", required=True)
    variants.add_argument("--seeds", type=int, nargs="*", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.command == "main":
        from rfo_toolkit.cli import vision_unlearn_main as cli_main

        return cli_main([*MAIN_ARGS, "--out", args.out])
    torch.set_num_threads(1)
    payload = run_variants(Path(args.results), Path(args.out), args.seeds)
    print(variants_markdown(payload))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

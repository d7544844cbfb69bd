"""How far apart two retrained detectors land: the noise floor of "within N points of retrain".

A detection unlearning benchmark compares every method with one retrained detector. Retraining
itself is random (initialisation, data order), so a second retrain from another seed differs from
the first by some amount; a method closer to the reference than that is as close as can be told.
This script retrains each scenario of a finished ``vision-unlearn benchmark --model yolo:...`` run
once more, from seed ``SEED + offset`` on the same data, forget split and recipe, and reports the
differences to the benchmark's own retrain rows.

Usage::

    .venv/bin/python benchmarks/bench_retrain_noise.py --results runs/yolo_bench_toy/results.json \\
        --out runs/yolo_bench_toy/retrain_noise --threads 1 [--scenarios class:clamp] [--seeds 3]

Writes ``retrain_noise.json`` and ``retrain_noise.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path

import torch

from rfo_bench.cli_support import run_cli
from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
from vision_unlearn.detection_benchmark import (
    DetectionBenchmarkConfig,
    _run_method,
    benchmark_data,
    evaluate_detector,
    scenario_split,
)

KEYS = ("retain_map50", "retain_map50_95", "forget_ap50", "forget_recall", "mia_auc")


def _config(results: dict) -> DetectionBenchmarkConfig:
    known = {f.name for f in dataclasses.fields(DetectionBenchmarkConfig)}
    fields = {k: v for k, v in results["config"].items() if k in known}
    for key in ("scenarios", "seeds"):
        fields[key] = tuple(fields[key])
    return DetectionBenchmarkConfig(**fields)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, help="results.json of a detector benchmark")
    parser.add_argument("--out", required=True)
    parser.add_argument("--offset", type=int, default=1000, help="second retrain seed = benchmark seed + offset")
    parser.add_argument("--scenarios", nargs="*", default=None, help="default: every scenario of the run")
    parser.add_argument("--seeds", type=int, nargs="*", default=None, help="default: every seed of the run")
    parser.add_argument("--threads", type=int, default=0)

    def run(args: argparse.Namespace) -> int:
        if args.threads:
            torch.set_num_threads(args.threads)
        results = json.loads(Path(args.results).read_text())
        config = _config(results)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        reference = {(r["seed"], r["scenario"]): r for r in results["rows"] if r["method"] == "retrain"}
        rows = []
        for seed in args.seeds or config.seeds:
            train, test, _ = benchmark_data(config, seed)
            for scenario in args.scenarios or config.scenarios:
                split = scenario_split(scenario, train, seed, out)
                spec = YoloModelSpec(config.model, num_classes=train.num_classes, in_chans=train.in_chans,
                                     class_names=train.class_names, image_size=config.image_size)
                adapter = YoloAdapter(spec)
                run_ = _run_method(adapter, "retrain", config.original, split.forget_data(train),
                                   split.retain_data(train), seed + args.offset, config.device)
                metrics = evaluate_detector(adapter, train, test, split)
                first = reference[(seed, scenario)]
                row = {"seed": seed, "scenario": scenario, "second_seed": seed + args.offset,
                       "seconds": run_.seconds, "first": {k: first.get(k) for k in KEYS},
                       "second": {k: metrics.get(k) for k in KEYS},
                       "difference": {k: metrics[k] - first[k] for k in KEYS
                                      if isinstance(first.get(k), float) and math.isfinite(first[k])
                                      and math.isfinite(metrics.get(k, float("nan")))}}
                rows.append(row)
                print(json.dumps(row), flush=True)
                (out / "retrain_noise.json").write_text(json.dumps({"results": args.results, "offset": args.offset,
                                                                    "command": " ".join(sys.argv), "rows": rows},
                                                                   indent=2) + "\n")
        lines = ["| seed | scenario | retain mAP50 (first / second) | difference | MIA AUC (first / second) |",
                 "|---|---|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['seed']} | {r['scenario']} | {r['first']['retain_map50']:.3f} / "
                         f"{r['second']['retain_map50']:.3f} | {r['difference']['retain_map50']:+.3f} | "
                         f"{r['first']['mia_auc']:.3f} / {r['second']['mia_auc']:.3f} |")
        (out / "retrain_noise.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0

    parser.set_defaults(func=run)
    return run_cli(parser, argv)


if __name__ == "__main__":
    raise SystemExit(main())

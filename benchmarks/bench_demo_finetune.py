"""Choose the fine-tuning budget of the demo on a trained detector (``vision-unlearn demo --detector``).

Usage::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_demo_finetune.py --detector DIR \\
        [--out runs/bench_demo_finetune] [--seeds 0,1,2] [--budgets 3:2e-4,10:2e-4,10:5e-4]

The demo's original (and every retrained reference) is the detector fine-tuned on the demo's training
tiles, from the start :func:`rfo_toolkit.demo.clinical.prepare_start` makes (the class the detector never
saw reset to a fresh head's prior). The budget must let the original learn that class (a class request on
a model that never detects the class proves nothing) and keep the other classes.

This script renders the demo's films exactly as the demo does, for every seed of ``--seeds``, and keeps
only their **training** pseudo-patients' tiles: the demo's held-out films are never looked at. For each
budget (``epochs:lr``; the demo's other fine-tuning settings unchanged) and each seed ``k``, the start is
fine-tuned as the demo of seed ``k`` does it (on all of that seed's training tiles, seed ``k``) and scored
on the training tiles of the next seed (other films, objects and pseudo-patients): AP50 of every class,
the unseen class's AP50 and the mean AP50 of the others (``retain``), mean ± std over the seeds. (A
validation carve-out of one seed's 36 training films held about five chains.) The first row is the start
without fine-tuning. Results are printed and written to ``--out/results.json``.

Last run (``--seeds 0,1,2 --budgets 3:2e-4:all,5:1e-3:neck+head,5:3e-3,8:3e-3,5:1e-2``, one thread, a
shared 2-core x86-64 machine; the start was the shipped recipe's checkpoint after epoch 10 of 20, so these
figures chose the budget and are not the shipped detector's): about 200 training tiles a seed (~50
chains), batch-norm statistics frozen; chain AP50 / retain mAP50 on the next seed's training tiles, mean ±
std over the three seeds:

    ====================================  ===========  ============  ======
    budget (epochs : lr : groups)         chain AP50   retain mAP50  CPU-s
    ====================================  ===========  ============  ======
    start, no fine-tuning                 0.05 ± 0.03  0.84 ± 0.05        0
    3 : 2e-4 : every layer                0.18 ± 0.08  0.82 ± 0.05       68
    5 : 1e-3 : neck + head (the demo's)   0.51 ± 0.08  0.79 ± 0.06       77
    5 : 3e-3 : head                       0.45 ± 0.18  0.76 ± 0.05       52
    8 : 3e-3 : head                       0.55 ± 0.23  0.74 ± 0.05       86
    5 : 1e-2 : head                       0.41 ± 0.17  0.71 ± 0.06       54
    ====================================  ===========  ============  ======

On the shipped detector (``make shipped-figures-finetune``: ``--detector rfo_bench/assets/shipped_detector
--seeds 0,1,2 --budgets 3:2e-4:all,5:1e-3:neck+head,5:3e-3``, same machine, beside the leaderboard),
chain AP50 / retain mAP50, mean ± std over the three seeds:

    ====================================  =============  =============  ======
    budget (epochs : lr : groups)         chain AP50     retain mAP50   CPU-s
    ====================================  =============  =============  ======
    start, no fine-tuning                 0.080 ± 0.079  0.893 ± 0.050       0
    3 : 2e-4 : every layer                0.294 ± 0.131  0.885 ± 0.046      62
    5 : 1e-3 : neck + head (the demo's)   0.676 ± 0.165  0.869 ± 0.039      76
    5 : 3e-3 : neck + head                0.655 ± 0.149  0.780 ± 0.060      72
    ====================================  =============  =============  ======

Every budget that learns chain costs some retained AP (0.05 to 0.14); at lr 2e-4 over every layer the
new class barely moves in three epochs. Without frozen batch-norm statistics (an earlier run) every layer
for 10 epochs at 2e-4 reached chain 0.38 ± 0.04 in 231 CPU-s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH_TOOL = "bench_demo_finetune"


def parse_budgets(text: str) -> list[tuple[int, float, str]]:
    """``"1:2e-4,3:5e-4:neck+head"`` -> ``[(1, 2e-4, ""), (3, 5e-4, "neck+head")]``: epochs, learning rate and the
    parameter groups trained (``+``-joined; ``all``: every group; ``""``: the demo's own)."""
    budgets = []
    for item in (s for s in text.split(",") if s):
        epochs, lr, *groups = item.split(":")
        budgets.append((int(epochs), float(lr), groups[0] if groups else ""))
    return budgets


def training_tiles(out: Path, detector: Path, seed: int) -> tuple[Path, dict[str, int]]:
    """The demo's training tiles for seed ``seed`` (rendered as the demo renders them) and their box counts."""
    from collections import Counter

    from rfo_bench.io.coco import read_coco
    from rfo_toolkit.demo.clinical import clinical_plan, rendered_seed

    stage = rendered_seed(out, detector, clinical_plan(fast=False), seed)
    tiles = read_coco(stage / "tiles" / "train.json")
    names = {c.id: c.name for c in tiles.categories}
    counts = Counter(names[o.category_id] for r in tiles.images for o in r.objects)
    return stage / "tiles" / "train.json", {"tiles": len(tiles.images), **dict(sorted(counts.items()))}


def score(adapter, val) -> dict[str, float]:
    """AP50 of every class on ``val`` (NaN for a class without a box there)."""
    from vision_unlearn.detection_eval import detections_of, ground_truth_of
    from vision_unlearn.metrics.detection import coco_ap_per_class

    per_class = coco_ap_per_class(ground_truth_of(val), detections_of(adapter, val), len(val), adapter.num_classes)
    return {name: float(per_class[k, 1]) for k, name in enumerate(adapter.class_names)}


def summarise(ap: dict[str, float], unseen: list[str]) -> dict[str, float]:
    others = [v for k, v in ap.items() if k not in unseen and np.isfinite(v)]
    new = [ap[k] for k in unseen if k in ap and np.isfinite(ap[k])]
    return {"unseen_ap50": float(np.mean(new)) if new else float("nan"),
            "retain_map50": float(np.mean(others)) if others else float("nan")}


def run(args: argparse.Namespace, out: Path) -> dict:
    from rfo_bench.detectors.api import read_record
    from rfo_toolkit.demo.clinical import clinical_plan, start_adapter, start_weights
    from rfo_toolkit.demo.models import load_split, train_original
    from vision_unlearn.adapters.yolo import PARAMETER_GROUPS

    detector = Path(args.detector)
    record = read_record(detector)
    weights = start_weights(detector)  # checked against the record's hash
    tile = int(record["config"]["tiling"]["tile_size"])
    unseen = list(record.get("unseen_classes") or [])
    seeds = [int(s) for s in args.seeds.split(",")]
    tiles = {seed: training_tiles(out, detector, seed) for seed in seeds}
    plan = clinical_plan(fast=False)
    base = plan.finetune
    rows = []
    budgets = [(0, 0.0, ""), *parse_budgets(args.budgets)]
    budgets = [(e, lr, "+".join(PARAMETER_GROUPS if g == "all" else plan.finetune_groups if not g else g.split("+")))
               for e, lr, g in budgets]
    for epochs, lr, groups in budgets:
        for k, seed in enumerate(seeds):
            fit_path, val_path = tiles[seed][0], tiles[seeds[(k + 1) % len(seeds)]][0]
            adapter = start_adapter(weights, record, seed, tuple(groups.split("+")))
            _, fit = load_split(fit_path, tile, adapter.class_names, adapter.in_chans)
            _, val = load_split(val_path, tile, adapter.class_names, adapter.in_chans)
            start = time.process_time()
            if epochs:
                train_original(adapter, {**base, "epochs": epochs, "lr": lr}, fit, seed, label=f"{epochs} ep, lr {lr:g}")
            cpu = time.process_time() - start
            ap = score(adapter, val)
            row = {"epochs": epochs, "lr": lr, "groups": groups, "seed": seed, "val_seed": seeds[(k + 1) % len(seeds)],
                   "cpu_seconds": round(cpu, 1), "ap50": ap, **summarise(ap, unseen)}
            rows.append(row)
            print(f"{epochs} ep lr {lr:<7g} {groups:15s} seed {seed}: {', '.join(unseen)} AP50 {row['unseen_ap50']:.3f}  retain mAP50 "
                  f"{row['retain_map50']:.3f}  {row['cpu_seconds']:7.1f} CPU-s  "
                  + " ".join(f"{k}={v:.3f}" for k, v in ap.items() if np.isfinite(v)), flush=True)
            (out / "results.json").write_text(json.dumps({"rows": rows}, indent=1))
    table = {}
    for epochs, lr, groups in budgets:
        chosen = [r for r in rows if (r["epochs"], r["lr"], r["groups"]) == (epochs, lr, groups)]
        table[f"{epochs}:{lr:g}:{groups}"] = {k: {"mean": float(np.mean([r[k] for r in chosen])),
                                         "std": float(np.std([r[k] for r in chosen], ddof=1)) if len(chosen) > 1 else 0.0}
                                     for k in ("unseen_ap50", "retain_map50", "cpu_seconds")}
    return {"detector": str(detector), "weights_sha256": record.get("weights_sha256"), "unseen": unseen,
            "demo_finetune_groups": list(plan.finetune_groups), "seeds": seeds, "tiles": {seed: counts for seed, (_, counts) in tiles.items()}, "finetune": base,
            "rows": rows, "summary": table}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detector", required=True, help="a recipe-trained detector folder (its detector.json)")
    parser.add_argument("--out", default="runs/bench_demo_finetune")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budgets", default="3:2e-4,10:2e-4,10:5e-4")
    args = parser.parse_args()
    try:
        parse_budgets(args.budgets)
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as error:
        parser.error(f"--budgets / --seeds: {error}")
    if len(set(seeds)) < 2:
        parser.error("--seeds: at least two (each seed's model is scored on the next seed's films)")
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from toolkit_core.errors import UserInputError
    from toolkit_core.output_dirs import claim_output_dir, release_output_dir

    try:
        out = claim_output_dir(Path(args.out), BENCH_TOOL)
        results = run(args, out)
    except UserInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    for budget, s in results["summary"].items():
        print(f"{budget:>10s}: unseen AP50 {s['unseen_ap50']['mean']:.3f} ± {s['unseen_ap50']['std']:.3f}  retain mAP50 "
              f"{s['retain_map50']['mean']:.3f} ± {s['retain_map50']['std']:.3f}  {s['cpu_seconds']['mean']:.0f} CPU-s")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    release_output_dir(out, BENCH_TOOL)


if __name__ == "__main__":
    main()

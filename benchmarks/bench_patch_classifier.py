"""Benchmark of the demo's patch classifier (``vision-unlearn demo``'s stage ``classifier``).

Usage::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_patch_classifier.py [--out runs/bench_patch_classifier] \\
        [--seeds 0,1,2,3,4] [--skip-select]

Two parts, written as JSON to ``--out/results.json`` (and printed):

* ``select``: the candidates below, each trained on the training patients of the default plan's films
  (seed ``--select-seed``) minus a validation fifth of them (:func:`rfo_bench.splits.split_dataset`, by
  pseudo-patient) and scored on that validation fifth. The test patients are never looked at here. The
  stage's settings (:func:`rfo_toolkit.demo.classifier.patch_classifier_plan`) are the best candidate.
* ``test``: the stage itself (:func:`rfo_toolkit.demo.classifier.train_patch_classifier`: render its films,
  cut, train, test on held-out pseudo-patients) with the default plan for each of ``--seeds``: held-out
  accuracy overall and per class, mean ± standard deviation over the seeds, and the stage's CPU seconds.

Every seed renders new films (its own pseudo-patients, objects and noise) over the same real
radiograph, so the spread includes the data's, not only the initialisation's.

Last run (``--skip-select --seeds 0,1,2,3,4``, one thread, a shared 2-core x86-64 machine): 240 films of
1024 px (0.36 mm per pixel), 32 mm patches at 64 px windowed per patch, ~920 training and ~139 held-out
patches a seed; held-out accuracy 92.0 ± 4.7 % (none 94.0 ± 6.4, sponge 84.7 ± 10.6, clamp 98.2 ± 4.1,
blade 73.2 ± 24.4 on ~8 blades a seed, chain 92.2 ± 3.2); 124 ± 7 CPU-s per stage (about 20 of them
rendering). The validation sweeps that chose the settings are summarised in README.md (demo section).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

BENCH_TOOL = "bench_patch_classifier"


def candidates(base):
    """``label -> plan``: the default plan and one change of one setting at a time."""
    from vision_unlearn.data.rfo_patches import PatchCut

    cut = base.cut
    return {
        "default": base,
        "context relative 1.5x box": replace(base, cut=replace(cut, context_mm=None, context=1.5)),
        "context 16 mm": replace(base, cut=replace(cut, context_mm=16.0)),
        "context 24 mm": replace(base, cut=replace(cut, context_mm=24.0)),
        "context 32 mm": replace(base, cut=replace(cut, context_mm=32.0)),
        "context 96 mm": replace(base, cut=replace(cut, context_mm=96.0)),
        "window none": replace(base, cut=replace(cut, window="none")),
        "window film": replace(base, cut=replace(cut, window="film")),
        "patch 32 px": replace(base, cut=replace(cut, patch_px=32)),
        "patch 48 px": replace(base, cut=replace(cut, patch_px=48)),
        "no jitter": replace(base, cut=replace(cut, jitter_copies=0)),
        "jitter 3": replace(base, cut=replace(cut, jitter_copies=3)),
        "jitter 3 + epochs x2/3": replace(base, cut=replace(cut, jitter_copies=3), epochs=max(1, base.epochs * 2 // 3)),
        "epochs x0.5": replace(base, epochs=max(1, base.epochs // 2)),
        "epochs x2": replace(base, epochs=base.epochs * 2),
        "lr x0.4": replace(base, lr=base.lr * 0.4),
        "lr x2.5": replace(base, lr=base.lr * 2.5),
    } if isinstance(cut, PatchCut) else {"default": base}


def select(out: Path, seed: int, only: list[str] | None) -> dict:
    """Validation accuracy of every candidate (training patients of seed ``seed``'s films only)."""
    import torch

    from rfo_bench.io.coco import read_coco
    from rfo_bench.splits import split_dataset
    from rfo_toolkit.demo.classifier import (
        fit_patch_classifier,
        load_patch_sets,
        patch_accuracy,
        patch_classifier_plan,
        render_patch_films,
    )

    base = patch_classifier_plan(fast=False)
    films = out / f"select_films_seed{seed}"
    if not (films / "all" / "train.json").is_file():
        render_patch_films(films, base, seed, None)
    train = read_coco(films / "all" / "train.json")
    parts = split_dataset(train, {"fit": 0.8, "val": 0.2}, seed=seed)
    by_id = train.image_by_id()
    splits = {"train_fit": train.with_images([by_id[i] for i in parts["fit"]]),
              "val": train.with_images([by_id[i] for i in parts["val"]])}
    previous = out / "select.json"
    rows = json.loads(previous.read_text()) if previous.is_file() else {}
    for label, plan in candidates(base).items():
        if only and label not in only:
            continue
        start = time.process_time()
        sets = load_patch_sets(films, plan, seed, splits=splits)
        torch.manual_seed(seed)
        adapter, _ = fit_patch_classifier(sets["train_fit"], plan, seed)
        result = patch_accuracy(adapter, sets["val"], plan.dihedral_average)
        if not plan.dihedral_average:  # the same model scored with the dihedral average too (free: no training)
            averaged = patch_accuracy(adapter, sets["val"], True)
            rows[label + " + dihedral average"] = {
                "val_accuracy": averaged["accuracy"], "per_class": averaged["per_class"],
                "val_mean_class_accuracy": float(np.mean([v for v in averaged["per_class"].values() if v is not None]))}
        per_class = [v for v in result["per_class"].values() if v is not None]
        rows[label] = {"val_accuracy": result["accuracy"], "val_mean_class_accuracy": float(np.mean(per_class)),
                       "per_class": result["per_class"], "n_fit": len(sets["train_fit"]), "n_val": len(sets["val"]),
                       "val_counts": result["counts"], "cpu_seconds": round(time.process_time() - start, 1),
                       "cut": asdict(plan.cut), "epochs": plan.epochs, "lr": plan.lr,
                       "dihedral_average": plan.dihedral_average}
        print(f"{label:28s} val {result['accuracy']:5.1f} %  mean class {rows[label]['val_mean_class_accuracy']:5.1f} %"
              f"  {rows[label]['cpu_seconds']:6.1f} CPU-s  " + json.dumps(result["per_class"]), flush=True)
        if label + " + dihedral average" in rows:
            print(f"{label + ' + dihedral average':28s} val {rows[label + ' + dihedral average']['val_accuracy']:5.1f} %",
                  flush=True)
        (out / "select.json").write_text(json.dumps(rows, indent=1))
    return rows


def test(out: Path, seeds: list[int]) -> dict:
    """The stage with the default plan for every seed; mean ± std of the held-out accuracies."""
    from rfo_toolkit.demo.classifier import patch_classifier_plan, train_patch_classifier
    from toolkit_core.output_dirs import remove_owned

    plan = patch_classifier_plan(fast=False)
    runs = []
    for seed in seeds:
        stage = out / f"test_seed{seed}"
        if stage.exists():
            remove_owned(stage)
        stage.mkdir(parents=True)
        start = time.process_time()
        summary = train_patch_classifier(stage, plan, seed)
        summary["stage_cpu_seconds"] = round(time.process_time() - start, 1)
        runs.append(summary)
        print(f"seed {seed}: test {summary['test_accuracy']:.1f} % " + json.dumps(summary["per_class_accuracy"])
              + f"  {summary['stage_cpu_seconds']} CPU-s", flush=True)
    names = runs[0]["class_names"]

    def spread(values: list[float]) -> dict:
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}

    return {
        "plan": {"n_films": plan.n_films, "film_px": plan.film_px, "spacing_mm": runs[0]["spacing_mm"],
                 "cut": asdict(plan.cut), "epochs": plan.epochs, "lr": plan.lr, "model": plan.model},
        "seeds": seeds,
        "test_accuracy": spread([r["test_accuracy"] for r in runs]),
        "per_class_accuracy": {n: spread([r["per_class_accuracy"][n] for r in runs
                                          if r["per_class_accuracy"][n] is not None]) for n in names},
        "n_test": spread([r["n_test"] for r in runs]), "n_train": spread([r["n_train"] for r in runs]),
        "test_counts": {n: spread([r["test_counts"][n] for r in runs]) for n in names},
        "stage_cpu_seconds": spread([r["stage_cpu_seconds"] for r in runs]),
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/bench_patch_classifier")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--select-seed", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated candidate labels to run (default: all)")
    parser.add_argument("--skip-select", action="store_true")
    parser.add_argument("--skip-test", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from toolkit_core.output_dirs import claim_output_dir, release_output_dir

    out = claim_output_dir(Path(args.out), BENCH_TOOL)
    results = {}
    if not args.skip_select:
        results["select"] = select(out, args.select_seed, [s for s in args.only.split(",") if s] or None)
    if not args.skip_test:
        results["test"] = test(out, [int(s) for s in args.seeds.split(",")])
        t = results["test"]
        print(f"test accuracy {t['test_accuracy']['mean']:.1f} ± {t['test_accuracy']['std']:.1f} % over seeds "
              f"{args.seeds}; " + ", ".join(f"{n} {v['mean']:.1f} ± {v['std']:.1f}"
                                             for n, v in t["per_class_accuracy"].items()))
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else {}
    (out / "results.json").write_text(json.dumps({**previous, **results}, indent=1))
    release_output_dir(out, BENCH_TOOL)


if __name__ == "__main__":
    main()

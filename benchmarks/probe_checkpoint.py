"""How a running recipe is doing: one of its checkpoints, evaluated on validation films as its record will be.

Usage::

    .venv/bin/rfo-synth physics --n 100 --imgsz 2048 --seed 1703 --out data/shipped/val --no-progress
    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/probe_checkpoint.py \\
        --config configs/shipped_detector.yaml --checkpoint runs/shipped/ultralytics/weights/last.pt \\
        --data data/shipped/val/annotations.json --out runs/probe/last [--max-images 100] [--device cpu]

The checkpoint (``last.pt`` at an epoch's end, ``partial.pt`` inside one) is read restrictedly and evaluated
by :func:`rfo_bench.detectors.shipped.evaluate_checkpoint`: the recipe's classes, unseen classes removed,
sliced by the recipe's slicing, the toolkit's evaluator. The recipe's held-out test is refused: a figure
looked at during training must not come from the films the record reports. Prints one line of figures
and writes the predictions, the evaluation and ``probe.json`` under ``--out``. On one thread, 100 films
of 2048 px take about five CPU-minutes. ``--bootstrap N`` adds 95 % intervals; with a finished run's weights
(``--checkpoint rfo_bench/assets/shipped_detector/...``) it evaluates the shipped detector on films the recipe
never used, e.g. ``rfo-synth physics --mode ct`` films (other anatomy: the chest CT, not the radiograph).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

BENCH_TOOL = "benchmarks/probe_checkpoint.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the run's recipe file")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint of the run (last.pt or partial.pt)")
    parser.add_argument("--data", required=True, help="validation films (never the recipe's test)")
    parser.add_argument("--out", required=True, help="folder for the predictions and figures (new, or this script's)")
    parser.add_argument("--max-images", type=int, default=None, help="the first N films only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bootstrap", type=int, default=0, help="replicates of the 95 %% intervals (0: none)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from rfo_bench.detectors.shipped import evaluate_checkpoint
    from toolkit_core.errors import UserInputError
    from toolkit_core.output_dirs import claim_output_dir

    try:
        out = claim_output_dir(Path(args.out), BENCH_TOOL)
        figures = evaluate_checkpoint(args.config, args.checkpoint, args.data, out, device=args.device,
                                      max_images=args.max_images, bootstrap=args.bootstrap)
    except UserInputError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    (out / "probe.json").write_text(json.dumps({"checkpoint": str(args.checkpoint), **figures}, indent=2))
    per_class = {c: round(m["AP50"], 3) for c, m in (figures.get("per_category") or {}).items()
                 if m.get("AP50") is not None}  # classes with objects in these films
    shown = "  ".join(f"{k} {figures[k]:.3f}" if figures.get(k) is not None else f"{k} -"
                      for k in ("AP50", "FROC", "AUROC"))
    epochs = "finished run" if figures["epoch"] is None else f"{figures['epoch']} epochs"
    intervals = {k: v for k, v in (figures.get("ci95") or {}).items() if v}
    print(f"{epochs}: {shown} on {figures['images']} films; per class AP50 {per_class}"
          + (f"; 95 % intervals {json.dumps(intervals)}" if intervals else ""))


if __name__ == "__main__":
    main()

"""The README's demo figure, composed from a finished demo's own figures: what the detector finds and what
the deletion requests do to it.

Usage::

    .venv/bin/python benchmarks/render_demo_figure.py --demo runs/shipped_figures/demo [--out docs/demo_report.png]

Reads only files the demo wrote (``vision-unlearn demo --out DIR``): the detector stage's held-out FROC
curves and error grid (``detector/eval/froc.png``, ``errors.png``) beside the unlearning stage's
before/after detections of the class request (``unlearn/detections_class.png``), under a title that states the demo's seed, detector
and held-out AP50 / FROC / AUROC with their 95 % intervals (``detector/stage.json``). Nothing is computed
again: the figure is a view of that run, as ``report.html`` is. The PNG is at most :data:`WIDTH_PX` wide and
:data:`MAX_BYTES` long.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import textwrap
from pathlib import Path

WIDTH_PX = 1200
"""Width of the written PNG (read on a repository page)."""

MAX_BYTES = 300_000
"""Largest PNG written (fewer colours first, then narrower: ``render_notebook_figures.shrink_png``)."""

LEFT = (
    ("detector/eval/froc.png", "Held-out films: FROC (sensitivity against false positives per film)"),
    ("detector/eval/errors.png", "Held-out films: missed objects and false positives, as the evaluator draws them"),
)
RIGHT = ("unlearn/detections_class.png", "The class deletion request: detections before unlearning, of the\n"
                                          "retrained reference and after each method")


def headline(stage: dict) -> str:
    """One line of the detector stage's held-out figures with their 95 % intervals."""
    from rfo_toolkit.eval_sections import interval_text

    parts = []
    for label, value, key in (("AP50", (stage.get("coco") or {}).get("AP50"), "AP50"),
                              ("FROC", (stage.get("froc") or {}).get("score"), "froc"),
                              ("AUROC", stage.get("auroc"), "auroc")):
        if value is not None:
            parts.append(f"{label} {value:.3f} {interval_text(stage, key)}")
    return ", ".join(parts)


def figure_title(stage: dict, config: dict) -> str:
    """What the figure shows, in two lines: the demo's seed and detector (a recipe-trained one by its recipe
    and weights hash, never a machine's path), then its held-out figures."""
    detector = stage.get("detector") or {}
    if detector:
        name = f"{detector.get('recipe') or 'a recipe-trained detector'} @ {str(detector.get('weights_sha256'))[:12]}"
    else:
        name = "YOLOv8n trained from scratch"
    return (f"vision-unlearn demo, seed {config.get('seed', '?')}, detector {name}\n"
            f"{stage.get('n_test', '?')} held-out films: {headline(stage)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", required=True, type=Path, help="a finished demo's folder (vision-unlearn demo --out)")
    parser.add_argument("--out", type=Path, default=Path("docs/demo_report.png"))
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.image as mpimg
    import matplotlib.pyplot as plt

    try:
        stage = json.loads((args.demo / "detector" / "stage.json").read_text(encoding="utf-8"))
        config = json.loads((args.demo / "run.json").read_text(encoding="utf-8")).get("config") or {}
        left = [(mpimg.imread(args.demo / name), caption) for name, caption in LEFT]
        right = (mpimg.imread(args.demo / RIGHT[0]), RIGHT[1])
    except (OSError, ValueError) as err:
        parser.exit(2, f"{parser.prog}: error: {args.demo}: not a finished demo ({err})\n")
    title = figure_title(stage, config)
    # two columns: the evaluation figures (wide) stacked on the left, the before/after detections (tall) right
    # widths chosen so that both columns are about as tall (no empty space under the shorter), within 50-70 %
    left_ratio = sum(image.shape[0] / image.shape[1] for image, _ in left)
    right_ratio = right[0].shape[0] / right[0].shape[1]
    left_width = min(0.7, max(0.5, right_ratio / (left_ratio + right_ratio)))
    right_width = 1.0 - left_width
    left_height = sum(left_width * image.shape[0] / image.shape[1] for image, _ in left)
    right_height = right_width * right[0].shape[0] / right[0].shape[1]
    width_in = WIDTH_PX / 100
    height_in = width_in * max(left_height, right_height) + 0.9
    figure = plt.figure(figsize=(width_in, height_in), layout="constrained")
    figure.suptitle(title, fontsize=10)
    columns = figure.subfigures(1, 2, width_ratios=[left_width, right_width])
    axes = columns[0].subplots(len(left), 1, gridspec_kw={"height_ratios": [i.shape[0] / i.shape[1] for i, _ in left]})
    for ax, (image, caption) in zip(axes, left):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(caption, fontsize=9)
    ax = columns[1].subplots()
    ax.imshow(right[0])
    ax.set_axis_off()
    ax.set_title(textwrap.fill(right[1], width=int(right_width * WIDTH_PX / 7)), fontsize=9)  # ~7 px a character
    from render_notebook_figures import shrink_png  # this script's folder: the one road to a small PNG

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(shrink_png(buffer.getvalue(), max_width=WIDTH_PX, max_bytes=MAX_BYTES))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

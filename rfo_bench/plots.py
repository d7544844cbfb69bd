"""The evaluation's figures, each returned as a matplotlib ``Figure`` (no pyplot, no global state).

* :func:`froc_figure`: FROC of all RFOs with its bootstrap band, of the critical and the non-critical
  RFOs, and per class.
* :func:`pr_figure`: precision-recall per class at IoU 0.5.
* :func:`error_figure`: the worst false positives and missed objects, one image per panel.

Every function takes the numbers to draw and returns the figure; the evaluator saves it
(:func:`rfo_bench.evaluate.write_plots`) and tests read what was drawn from it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rfo_bench.metrics.froc import VARIANT_LABELS, FrocResult

logger = logging.getLogger(__name__)

FROC_XLABEL = "false positives per image (log scale)"
FROC_YLABEL = "sensitivity (fraction of RFOs found)"


@dataclass(frozen=True)
class FrocCurve:
    """One FROC curve to draw.

    Attributes:
        name: what the curve is of (``all RFOs``, ``critical``, a class name).
        result: the :class:`FrocResult` with its full curve (``curves=True``).
        objects: annotated objects it counts.
        band: ``(low, high)`` per threshold (the bootstrap interval of each sensitivity), or None.
        score_interval: ``(low, high)`` of the FROC score, or None.
    """

    name: str
    result: FrocResult
    objects: int
    band: tuple[Sequence[float | None], Sequence[float | None]] | None = None
    score_interval: tuple[float | None, float | None] | None = None


def new_figure(rows: int = 1, cols: int = 1, *, size: tuple[float, float]) -> tuple[Any, np.ndarray]:
    """A ``Figure`` and its ``(rows, cols)`` axes, made without pyplot (no backend or global figure touched)."""
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from matplotlib.figure import Figure

    figure = Figure(figsize=size)
    return figure, figure.subplots(rows, cols, squeeze=False)


def _score_text(curve: FrocCurve, variant: bool) -> str:
    text = f"FROC score {curve.result.score:.3f}"
    if curve.score_interval and None not in curve.score_interval:
        text += f" [{curve.score_interval[0]:.3f}, {curve.score_interval[1]:.3f}]"
    return text + (f" ({VARIANT_LABELS[curve.result.variant]})" if variant else "")


def _draw_froc(ax: Any, curve: FrocCurve, color: str, label: str, *, band_label: str | None, steps: bool) -> None:
    result = curve.result
    if steps and result.curve_fps.size:
        ax.step(np.maximum(result.curve_fps, 1e-3), result.curve_sensitivity, where="post", color=color, alpha=0.5,
                linewidth=1)
    ax.plot(result.fps_per_image, result.sensitivity, "o-", color=color, label=label, markersize=4)
    if curve.band is not None and band_label is not None:
        low = np.array([np.nan if v is None else v for v in curve.band[0]], dtype=float)
        high = np.array([np.nan if v is None else v for v in curve.band[1]], dtype=float)
        if np.isfinite(low).any():
            ax.fill_between(result.fps_per_image, low, high, color=color, alpha=0.2, linewidth=0, label=band_label)


def _froc_axes(ax: Any, thresholds: Sequence[float], title: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlim(min(thresholds) / 2, max(thresholds) * 2)
    ax.set_xticks(list(thresholds), [f"{t:g}" for t in thresholds])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(FROC_XLABEL)
    ax.set_ylabel(FROC_YLABEL)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=7)


def froc_figure(
    overall: FrocCurve, *, strata: Sequence[FrocCurve] = (), per_class: Sequence[FrocCurve] = (),
    band_description: str = "",
) -> Any:
    """FROC curves: all RFOs with the bootstrap band; then critical vs non-critical; then per class.

    Args:
        overall: the class-agnostic curve of the protocol (the FROC score's).
        strata: curves of the critical and the non-critical RFOs (panel 2 when given).
        per_class: one curve per class (panel 3 when given).
        band_description: what the band is, e.g. ``95% bootstrap band (1000 replicates over patients)``.

    Returns:
        The ``Figure``; each panel's legend names every curve with its FROC score.
    """
    panels = 1 + bool(strata) + bool(per_class)
    figure, axes = new_figure(1, panels, size=(5.2 * panels, 4.4))
    thresholds = overall.result.fps_per_image
    ax = axes[0, 0]
    _draw_froc(ax, overall, "C0", _score_text(overall, variant=True),
               band_label=band_description or "bootstrap band", steps=True)
    _froc_axes(ax, thresholds, f"All RFOs ({overall.objects} objects, class-agnostic)")
    column = 1
    if strata:
        ax = axes[0, column]
        for curve, color in zip(strata, ("C3", "C2")):
            _draw_froc(ax, curve, color, f"{curve.name.replace('_', '-')} ({curve.objects}): "
                       + _score_text(curve, variant=False), band_label=f"{curve.name.replace('_', '-')} band",
                       steps=True)
        _froc_axes(ax, thresholds, "Critical vs non-critical RFOs")
        column += 1
    if per_class:
        ax = axes[0, column]
        for k, curve in enumerate(per_class):
            _draw_froc(ax, curve, f"C{k % 10}", f"{curve.name} ({curve.objects}): {curve.result.score:.3f}",
                       band_label=None, steps=False)
        _froc_axes(ax, thresholds, "Per class (detections of that class only)")
    figure.tight_layout()
    return figure


def pr_figure(recall: np.ndarray, curves: Mapping[str, tuple[np.ndarray, int]]) -> Any:
    """Interpolated precision against recall at IoU 0.5, one curve per class.

    Args:
        recall: ``(R,)`` COCO recall thresholds.
        curves: class name -> (``(R,)`` precision, number of objects); classes without objects left out.
    """
    figure, axes = new_figure(size=(5.2, 4.4))
    ax = axes[0, 0]
    for name, (precision, objects) in curves.items():
        ax.plot(recall, precision, label=f"{name} ({objects} objects): AP50 {np.mean(precision):.3f}")
    ax.set_xlabel("recall (fraction of objects found at IoU ≥ 0.5)")
    ax.set_ylabel("precision (COCO interpolated)")
    ax.set_title("Precision-recall per class at IoU 0.5", fontsize=9)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    return figure


@dataclass(frozen=True)
class ErrorPanel:
    """One image of the error grid and its errors.

    Attributes:
        image_index: index into ``gt.images``.
        title: the image's file name.
        boxes: ``(kind, label, (x1, y1, x2, y2))`` with kind ``FP`` or ``missed``.
    """

    image_index: int
    title: str
    boxes: tuple[tuple[str, str, tuple[float, float, float, float]], ...]


def error_panels(examples: Sequence[tuple[str, int, tuple[float, float, float, float]]], file_names: Sequence[str],
                 max_panels: int) -> list[ErrorPanel]:
    """Group ranked errors ``(title, image index, box)`` by image: one panel per image, never two.

    Images are taken alternately from the false-positive and the missed-object ranking (each in its
    order) until ``max_panels``; a panel shows every listed error of its image.
    """
    fps = [e for e in examples if e[0].startswith("FP")]
    missed = [e for e in examples if not e[0].startswith("FP")]
    order: list[int] = []
    for k in range(max(len(fps), len(missed))):
        for ranking in (fps, missed):
            if k < len(ranking) and ranking[k][1] not in order and len(order) < max_panels:
                order.append(ranking[k][1])
    panels = []
    for index in order:
        boxes = tuple((title.split()[0], title, box) for title, i, box in examples if i == index)
        panels.append(ErrorPanel(index, file_names[index], boxes))
    return panels


def error_figure(panels: Sequence[ErrorPanel], read_pixels: Callable[[int], np.ndarray | None]) -> Any:
    """A grid of crops, one image per panel: false positives in red (with their score), missed objects in
    yellow (with their class).

    Args:
        panels: from :func:`error_panels`.
        read_pixels: image index -> ``(H, W)`` pixels in [0, 1], or None when the image cannot be read.
    """
    from matplotlib.patches import Rectangle

    cols = min(4, len(panels))
    rows = int(np.ceil(len(panels) / cols))
    figure, axes = new_figure(rows, cols, size=(3.2 * cols, 3.4 * rows))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, panel in zip(axes.ravel(), panels):
        kinds = [kind for kind, _, _ in panel.boxes]
        fp, missed = kinds.count("FP"), kinds.count("missed")
        summary = ", ".join([f"{fp} false positive" + "s" * (fp > 1)] * bool(fp) + [f"{missed} missed"] * bool(missed))
        ax.set_title(f"{panel.title}\n{summary}", fontsize=7)
        pixels = read_pixels(panel.image_index)
        if pixels is None:
            ax.set_title(f"{panel.title}\n{summary} (image unreadable)", fontsize=7)
            continue
        boxes = np.array([box for _, _, box in panel.boxes], dtype=float)
        x1, y1 = boxes[:, 0].min(), boxes[:, 1].min()
        x2, y2 = boxes[:, 2].max(), boxes[:, 3].max()
        margin = max(x2 - x1, y2 - y1, 32.0) / 2
        r0, r1 = int(max(0, y1 - margin)), int(min(pixels.shape[0], y2 + margin))
        c0, c1 = int(max(0, x1 - margin)), int(min(pixels.shape[1], x2 + margin))
        ax.imshow(pixels[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=1, extent=(c0 - 0.5, c1 - 0.5, r1 - 0.5, r0 - 0.5))
        for kind, label, (bx1, by1, bx2, by2) in panel.boxes:
            color = "red" if kind == "FP" else "yellow"
            ax.add_patch(Rectangle((bx1, by1), bx2 - bx1, by2 - by1, fill=False, edgecolor=color, linewidth=1.5))
            ax.text(bx1, by1, label, color=color, fontsize=6, va="bottom")
    figure.tight_layout()
    return figure

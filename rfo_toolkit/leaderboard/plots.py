"""The leaderboard's figure: FROC curves, one panel per data arm, one curve per model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FP_LABEL = "false positives per image"
SENSITIVITY_LABEL = "sensitivity"
NOT_FINE_TUNED_SUFFIX = " (no fine-tuning)"
"""Label suffix of a start detector's do-nothing curve (a deterministic row), drawn dashed in every panel."""


def _values(sequence: Sequence[float | None]) -> np.ndarray:
    """Floats with ``None`` (an undefined value read back from JSON) as NaN: matplotlib leaves a gap."""
    return np.asarray([np.nan if v is None else v for v in sequence], dtype=np.float64)


def froc_figure(rows: Sequence[dict[str, Any]], arms: Sequence[str]) -> Figure | None:
    """One panel per arm (in ``arms`` order, arms without a row left out), one FROC curve per model.

    A deterministic row (a start detector without fine-tuning, ``deterministic`` true) belongs to no arm:
    its curve is drawn dashed in every panel, labelled ``<model> (no fine-tuning)``, after the arm's curves.

    Args:
        rows: leaderboard rows (:func:`~rfo_toolkit.leaderboard.summary.aggregate`), each with ``model``,
            ``arm`` and ``froc_curve`` (``fp_per_image``, ``sensitivity``).
        arms: the benchmark's arms.

    Returns:
        The figure (panel titles are the arms, line labels the models; x in false positives per image on
        a log2 axis, y the sensitivity), or ``None`` when no row belongs to one of ``arms``.
    """
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    present = [a for a in arms if any(r["arm"] == a for r in rows)]
    if not present:
        return None
    fig = Figure(figsize=(4.2 * len(present), 3.6))
    axes = fig.subplots(1, len(present), squeeze=False, sharey=True)
    ticks = sorted({f for row in rows for f in row["froc_curve"]["fp_per_image"]})
    for ax, arm in zip(axes[0], present, strict=True):
        for row in rows:
            if row["arm"] != arm or not row["froc_curve"]["fp_per_image"]:
                continue
            ax.plot(_values(row["froc_curve"]["fp_per_image"]), _values(row["froc_curve"]["sensitivity"]),
                    marker="o", label=row["model"])
        for row in rows:
            if row.get("deterministic") and row["froc_curve"]["fp_per_image"]:
                ax.plot(_values(row["froc_curve"]["fp_per_image"]), _values(row["froc_curve"]["sensitivity"]),
                        linestyle="--", color="0.4", label=row["model"] + NOT_FINE_TUNED_SUFFIX)
        ax.set_xscale("log", base=2)
        if ticks:
            ax.set_xticks(ticks, [f"1/{round(1 / t)}" if t < 1 else f"{t:g}" for t in ticks])
        ax.set_title(arm)
        ax.set_xlabel(FP_LABEL)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(SENSITIVITY_LABEL)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_froc(rows: Sequence[dict[str, Any]], arms: Sequence[str], path: Path) -> Path | None:
    """Write :func:`froc_figure` as a PNG at ``path``; ``None`` (nothing written) when it has no panel."""
    fig = froc_figure(rows, arms)
    if fig is None:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path

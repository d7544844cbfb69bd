"""Seeds to leaderboard rows: mean ± sample std over seeds, the mean per-seed interval, the mean FROC curve."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rfo_toolkit.leaderboard.config import METRICS
from rfo_toolkit.leaderboard.runs import RunOutcome

COMPUTE_KEYS = ("train_cpu_seconds", "train_accelerator_seconds", "cpu_seconds")
"""A row's compute, each the mean over its seeds (see :attr:`RunOutcome.compute`)."""


def summarize_seeds(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` over seeds, ignoring NaN; std is 0 for one value, NaN for none."""
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def aggregate(outcomes: Sequence[RunOutcome]) -> list[dict[str, Any]]:
    """One leaderboard row per (model, arm): mean ± std over seeds, mean per-seed 95 % CI bounds, seconds,
    compute (mean over seeds) and the start it was fine-tuned from (``None``: from scratch).

    A deterministic row (the do-nothing row of a start, its run's seed ``None``) has ``deterministic``
    true, no seeds and an undefined (NaN) std: one evaluation, no spread over seeds.

    Rows keep the order in which (model, arm) first appears in ``outcomes``.
    """
    groups: dict[tuple[str, str], list[RunOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.model, outcome.arm), []).append(outcome)
    rows = []
    for (model, arm), runs in groups.items():
        deterministic = all(r.seed is None for r in runs)
        row: dict[str, Any] = {"model": model, "arm": arm, "seeds": [r.seed for r in runs if r.seed is not None],
                               "deterministic": deterministic, "train_images": runs[0].train_images}
        for metric in METRICS:
            mean, std = summarize_seeds([r.metrics.values.get(metric, float("nan")) for r in runs])
            std = float("nan") if deterministic else std
            lows = [r.metrics.intervals.get(metric, (float("nan"),) * 2)[0] for r in runs]
            highs = [r.metrics.intervals.get(metric, (float("nan"),) * 2)[1] for r in runs]
            row[metric] = {"mean": mean, "std": std, "ci95": [summarize_seeds(lows)[0], summarize_seeds(highs)[0]],
                           "per_seed": [r.metrics.values.get(metric, float("nan")) for r in runs]}
        row["train_seconds"] = dict(zip(("mean", "std"), summarize_seeds([r.train_seconds for r in runs]),
                                        strict=True))
        row["compute"] = {key: summarize_seeds([float(r.compute.get(key, float("nan"))) for r in runs])[0]
                          for key in COMPUTE_KEYS}
        row["start"] = runs[0].start
        row["evaluation"] = runs[0].evaluation
        fps = runs[0].metrics.froc_fp_per_image
        sens = np.array([r.metrics.froc_sensitivity for r in runs], dtype=np.float64)
        row["froc_curve"] = {"fp_per_image": list(fps), "sensitivity": list(np.nanmean(sens, axis=0))
                             if sens.size else []}
        rows.append(row)
    return rows


"""Comparison with the retrained model and aggregation over seeds.

Avg.Gap (SalUn, Fan et al., ICLR 2024, Tables 1-2) is the mean absolute difference, in percentage
points, between a method's metrics and those of retraining from scratch on the retain set — the gold
standard. Lower is better; 0 means indistinguishable from retraining on every metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np

GAP_KEYS = ("UA", "RA", "TA", "MIA")
"""Metrics averaged by :func:`avg_gap` by default."""

CLASSWISE_GAP_KEYS = ("UA", "RA", "TA_remaining", "MIA")
"""Avg.Gap metrics for class-wise forgetting: the protocol's class-wise tables report TA on the remaining
classes (a retrained model scores 0 on the forgotten class, which would otherwise dominate TA)."""


def gap_keys(classwise: bool) -> tuple[str, ...]:
    """:data:`CLASSWISE_GAP_KEYS` for class-wise requests, else :data:`GAP_KEYS`."""
    return CLASSWISE_GAP_KEYS if classwise else GAP_KEYS


def _value(metrics: Mapping[str, Any], key: str, which: str) -> float:
    if key not in metrics:
        raise ValueError(f"{which} metrics lack {key!r} (have: {', '.join(sorted(metrics)) or 'none'})")
    value = metrics[key]
    if isinstance(value, Mapping):
        if "mean" not in value:
            raise ValueError(f"{which} metric {key!r} is a mapping without 'mean'")
        value = value["mean"]
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{which} metric {key!r} is not a number: {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{which} metric {key!r} is not finite: {number}")
    return number


def metric_gaps(
    metrics: Mapping[str, Any], retrain_metrics: Mapping[str, Any], keys: Sequence[str] = GAP_KEYS
) -> dict[str, float]:
    """``|metric - retrain|`` per key. Values may be numbers or ``{"mean": ...}`` summaries."""
    if not keys:
        raise ValueError("no metric keys to compare")
    return {k: abs(_value(metrics, k, "method") - _value(retrain_metrics, k, "retrain")) for k in keys}


def avg_gap(metrics: Mapping[str, Any], retrain_metrics: Mapping[str, Any], keys: Sequence[str] = GAP_KEYS) -> float:
    """Avg.Gap = mean over ``keys`` of ``|metric - retrain|`` (percentage points)."""
    gaps = metric_gaps(metrics, retrain_metrics, keys)
    return float(sum(gaps.values()) / len(gaps))


def summarise_seeds(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean and standard deviation of every numeric metric over seeds.

    Args:
        runs: one metrics dict per seed. Every numeric (non-bool) key must be present and numeric in
            every run; other values (strings, nested dicts) are ignored.

    Returns:
        ``{key: {"mean": m, "std": s, "n": n}}`` with the sample standard deviation (``ddof=1``;
        0.0 for a single run).

    Raises:
        ValueError: no runs, or a numeric key missing / non-numeric in some run.
    """
    if not runs:
        raise ValueError("no runs to summarise")

    def numeric(value: Any) -> bool:
        return isinstance(value, Real) and not isinstance(value, bool)

    keys = [k for k in runs[0] if numeric(runs[0][k])]
    for run in runs[1:]:
        keys.extend(k for k in run if numeric(run[k]) and k not in keys)
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = []
        for index, run in enumerate(runs):
            if key not in run or not numeric(run[key]):
                raise ValueError(f"run {index} lacks a numeric {key!r}; every seed must report the same metrics")
            values.append(float(run[key]))
        array = np.asarray(values, dtype=np.float64)
        std = float(array.std(ddof=1)) if array.size > 1 else 0.0
        out[key] = {"mean": float(array.mean()), "std": std, "n": int(array.size)}
    return out

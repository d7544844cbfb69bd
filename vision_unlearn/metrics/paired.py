"""Paired comparisons over seeds: the interval of a method's difference to a reference.

Each seed gives one value per method, all measured on the same data and split, so the differences
``method_s - reference_s`` are paired; their Student-t interval is much narrower than comparing two
unpaired means when seeds move both methods together (a harder forget set, a different split).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def paired_interval(values: Sequence[float], reference: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of ``values - reference`` over seeds and its two-sided Student-t ``level`` interval.

    Args:
        values, reference: one number per seed, in the same seed order.
        level: coverage of the interval.

    Returns:
        ``{"mean", "low", "high", "n"}``; with one seed the bounds are ``-inf`` / ``inf`` (no interval).

    Raises:
        ValueError: lengths differ, no seeds, non-finite values or ``level`` outside ``(0, 1)``.
    """
    from scipy.stats import t

    a = np.asarray(values, dtype=np.float64).reshape(-1)
    b = np.asarray(reference, dtype=np.float64).reshape(-1)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need one value per seed on both sides, got {a.size} and {b.size}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("paired values must be finite")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    diff = a - b
    mean = float(diff.mean())
    if diff.size < 2:
        return {"mean": mean, "low": -math.inf, "high": math.inf, "n": 1}
    half = float(t.ppf(0.5 + level / 2, diff.size - 1)) * float(diff.std(ddof=1)) / math.sqrt(diff.size)
    return {"mean": mean, "low": mean - half, "high": mean + half, "n": int(diff.size)}


def clearly_best(per_seed: Mapping[str, Sequence[float]], level: float = 0.95) -> str | None:
    """The method with the lowest mean whose paired ``level`` interval to every other method lies
    entirely below 0, or ``None`` when the intervals do not single one out (lower is better)."""
    if not per_seed:
        return None
    leader = min(per_seed, key=lambda name: float(np.mean(per_seed[name])))
    for name, values in per_seed.items():
        if name != leader and paired_interval(per_seed[leader], values, level)["high"] >= 0.0:
            return None
    return leader

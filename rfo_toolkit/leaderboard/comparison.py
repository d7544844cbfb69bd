"""Paired differences between leaderboard arms: does an arm score higher than its reference?

For one model, an arm (e.g. ``real+physics``) is compared with a reference (the first arm of the
configuration, normally ``real``, or the start detector without fine-tuning) on the same test films:

* point estimate: the mean over seeds of the per-seed differences ``arm_s - reference_s`` (same seed,
  same test films), with their sample standard deviation over seeds;
* 95 % paired interval from a two-level bootstrap: replicate ``b`` draws the seeds with replacement and
  takes, for every drawn seed, the difference of the two arms at the evaluator's patient replicate ``b``
  (every run is evaluated with one bootstrap seed, so replicate ``b`` resamples the same patients in
  every run); the replicate's value is the mean of those differences. Replicates in which a side is
  undefined are left out and counted; with fewer than
  :data:`~rfo_bench.evaluate.MIN_INTERVAL_REPLICATES` usable ones there is no interval. The interval is
  the percentile interval of the replicates (the evaluator's rule);
* verdict: ``higher`` where the interval's low end is above 0, ``lower`` where its high end is below 0,
  otherwise ``no difference shown``.

With one seed the seed level has no spread: the interval then covers test sampling only. A
deterministic reference (the start detector, predicted once) contributes its one value to every seed.

Pure functions over arrays; the runs' replicates are read by :mod:`.runs`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

LEVEL = 0.95
"""Coverage of the paired intervals."""

HIGHER = "higher"
LOWER = "lower"
NO_DIFFERENCE = "no difference shown"
VERDICTS = (HIGHER, LOWER, NO_DIFFERENCE)
"""The only words a comparison uses to say which side scored more."""

SINGLE_SEED_NOTE = "one seed: no spread over seeds; the interval covers the sampling of test patients only"


def verdict(low: float, high: float) -> str:
    """:data:`HIGHER` when ``low > 0``, :data:`LOWER` when ``high < 0``, else :data:`NO_DIFFERENCE` (also
    when the interval is undefined)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return NO_DIFFERENCE
    if low > 0.0:
        return HIGHER
    if high < 0.0:
        return LOWER
    return NO_DIFFERENCE


def two_level_replicates(differences: np.ndarray, seed: int) -> np.ndarray:
    """Bootstrap replicates of the seed-mean difference, resampling seeds and test patients together.

    Args:
        differences: ``(S, B)`` the paired difference of seed ``s`` at patient replicate ``b`` (NaN where a
            side is undefined).
        seed: seed of the NumPy generator that draws the seeds.

    Returns:
        ``(B,)``: replicate ``b`` is the mean of ``differences[s, b]`` over ``S`` seeds drawn with
        replacement (NaN when one drawn seed is undefined at ``b``).
    """
    diffs = np.asarray(differences, dtype=np.float64)
    if diffs.ndim != 2:
        raise ValueError(f"need (seeds, replicates) differences, got shape {diffs.shape}")
    num_s, num_b = diffs.shape
    if num_s == 0 or num_b == 0:
        return np.full(num_b, np.nan)
    drawn = np.random.default_rng(seed).integers(0, num_s, size=(num_b, num_s))  # (B, S) seed indices
    return diffs[drawn, np.arange(num_b)[:, None]].mean(axis=1)


@dataclass(frozen=True)
class PairedDifference:
    """``treatment - reference`` for one metric (see the module docstring).

    Attributes:
        per_seed: the per-seed differences (NaN where a side is undefined).
        mean: their mean over the seeds where both sides are defined (NaN when none is).
        std: their sample standard deviation (NaN with fewer than two such seeds).
        low, high: the 95 % paired interval (NaN when there is none).
        replicates_used: bootstrap replicates with both sides defined.
        replicates_left_out: replicates left out (a side undefined).
        verdict: one of :data:`VERDICTS`.
    """

    per_seed: tuple[float, ...]
    mean: float
    std: float
    low: float
    high: float
    replicates_used: int
    replicates_left_out: int
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (NaN stays NaN: :func:`toolkit_core.records.jsonable` makes it ``None``)."""
        return {"per_seed": list(self.per_seed), "mean": self.mean, "std": self.std, "ci95": [self.low, self.high],
                "replicates_used": self.replicates_used, "replicates_left_out": self.replicates_left_out,
                "verdict": self.verdict}


def paired_difference(
    treatment: Sequence[float], reference: Sequence[float], treatment_replicates: np.ndarray | None = None,
    reference_replicates: np.ndarray | None = None, *, seed: int = 0, level: float = LEVEL,
    min_replicates: int | None = None,
) -> PairedDifference:
    """The paired difference ``treatment - reference`` of one metric over seeds and test patients.

    Args:
        treatment, reference: ``(S,)`` point estimates per seed, in the same seed order; ``reference`` may
            be ``(1,)``, a deterministic reference that is the same for every seed.
        treatment_replicates, reference_replicates: ``(S, B)`` (reference also ``(1, B)``) the evaluator's
            bootstrap replicates, replicate ``b`` resampling the same patients in every run; ``None`` (or
            ``B = 0``): no interval.
        seed: seed of the seed-level draws (:func:`two_level_replicates`).
        level: coverage.
        min_replicates: usable replicates below which there is no interval (default: the evaluator's
            :data:`~rfo_bench.evaluate.MIN_INTERVAL_REPLICATES`).

    Raises:
        ValueError: shapes that do not pair up, or ``level`` outside ``(0, 1)``.
    """
    from rfo_bench.evaluate import MIN_INTERVAL_REPLICATES
    from rfo_bench.metrics.bootstrap import percentile_interval

    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    minimum = MIN_INTERVAL_REPLICATES if min_replicates is None else min_replicates
    t = np.asarray(treatment, dtype=np.float64).reshape(-1)
    r = np.asarray(reference, dtype=np.float64).reshape(-1)
    if r.size not in (1, t.size) or t.size == 0:
        raise ValueError(f"need one value per seed on both sides (or one reference value), got {t.size} and {r.size}")
    per_seed = t - r
    defined = per_seed[np.isfinite(per_seed)]
    mean = float(defined.mean()) if defined.size else math.nan
    std = float(defined.std(ddof=1)) if defined.size > 1 else math.nan
    low = high = math.nan
    used = left_out = 0
    if treatment_replicates is not None and reference_replicates is not None:
        tr = np.asarray(treatment_replicates, dtype=np.float64)
        rr = np.asarray(reference_replicates, dtype=np.float64)
        if tr.ndim != 2 or tr.shape[0] != t.size or rr.ndim != 2 or rr.shape[0] not in (1, t.size) \
                or rr.shape[1] != tr.shape[1]:
            raise ValueError(f"need (seeds, replicates) replicates that pair up, got {tr.shape} and {rr.shape}")
        if tr.shape[1]:
            replicates = two_level_replicates(tr - rr, seed)
            found = percentile_interval(replicates, level)
            used, left_out = found.replicates_used, replicates.size - found.replicates_used
            if used >= minimum:
                low, high = found.low, found.high
    return PairedDifference(per_seed=tuple(float(v) for v in per_seed), mean=mean, std=std, low=low, high=high,
                            replicates_used=used, replicates_left_out=left_out, verdict=verdict(low, high))


@dataclass(frozen=True)
class Cell:
    """One evaluated run as a comparison sees it.

    Attributes:
        seed: the training seed; ``None`` for a deterministic run (the same for every seed).
        values: metric -> point estimate (NaN when undefined).
        replicates: metric -> ``(B,)`` bootstrap replicates (absent: not bootstrapped).
    """

    seed: int | None
    values: Mapping[str, float]
    replicates: Mapping[str, np.ndarray] = field(default_factory=dict)


def compare_cells(treatment: Sequence[Cell], reference: Sequence[Cell], metrics: Sequence[str], *,
                  seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """Paired differences ``treatment - reference`` of every metric over the seeds both sides ran.

    A reference of one deterministic cell (``seed`` ``None``) pairs with every treatment seed.

    Returns:
        ``{"seeds": [...], "metrics": {metric: PairedDifference.to_dict()}, "notes": [...]}``; the notes
        say when only one seed pairs, which seeds ran on one side only, which metrics had replicates left
        out and which have no interval.
    """
    deterministic = len(reference) == 1 and reference[0].seed is None
    by_seed = {c.seed: c for c in reference}
    pairs = [(c, reference[0] if deterministic else by_seed[c.seed]) for c in treatment
             if deterministic or c.seed in by_seed]
    seeds = [c.seed for c, _ in pairs]
    notes: list[str] = []
    unpaired = sorted({c.seed for c in treatment} ^ {c.seed for c in reference}) if not deterministic else []
    if unpaired:
        notes.append("seeds run on one side only, left out: " + ", ".join(map(str, unpaired)))
    if len(pairs) == 1:
        notes.append(SINGLE_SEED_NOTE)
    out: dict[str, Any] = {}
    no_interval: list[str] = []
    left_out: list[str] = []
    for metric in metrics:
        if not pairs:
            continue
        t = [c.values.get(metric, math.nan) for c, _ in pairs]
        r = [c.values.get(metric, math.nan) for _, c in pairs]
        have = all(metric in c.replicates and metric in ref.replicates for c, ref in pairs)
        tr = np.stack([np.asarray(c.replicates[metric], dtype=np.float64) for c, _ in pairs]) if have else None
        rr = np.stack([np.asarray(ref.replicates[metric], dtype=np.float64) for _, ref in pairs]) if have else None
        found = paired_difference(t, r, tr, rr, seed=seed, level=level)
        out[metric] = found.to_dict()
        if tr is None or tr.shape[1] == 0:
            no_interval.append(f"{metric} (no bootstrap replicates)")
        elif not math.isfinite(found.low):
            no_interval.append(f"{metric} ({found.replicates_used} usable replicates)")
        if found.replicates_left_out:
            left_out.append(f"{metric} {found.replicates_left_out} of {found.replicates_left_out + found.replicates_used}")
    if left_out:
        notes.append("replicates left out (undefined on a side): " + ", ".join(left_out))
    if no_interval:
        notes.append("no interval for " + ", ".join(no_interval))
    return {"seeds": seeds, "metrics": out, "notes": notes}


def comparison_pairs(arms_by_model: Mapping[str, Sequence[str]], reference: str,
                     baseline: str | None = None) -> list[tuple[str, str, str]]:
    """``(model, arm, reference arm)`` of every comparison, in model and arm order.

    Every arm of a model other than ``reference`` is compared with ``reference`` (when the model ran it);
    where the model has a ``baseline`` arm (the start without fine-tuning), every other arm is compared
    with it as well.
    """
    pairs = []
    for model, arms in arms_by_model.items():
        if reference in arms:
            pairs += [(model, arm, reference) for arm in arms if arm not in (reference, baseline)]
        if baseline is not None and baseline in arms:
            pairs += [(model, arm, baseline) for arm in arms if arm != baseline]
    return pairs

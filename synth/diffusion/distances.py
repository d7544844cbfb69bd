"""Distances between two feature sets: FID, KID and KID's bootstrap interval (pure functions).

FID (Heusel et al., NeurIPS 2017, arXiv:1706.08500) is the Frechet distance between Gaussians
fitted to two feature sets::

    FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

It is biased in the sample size: two samples of one distribution score well above 0 when ``n`` is
small next to the feature dimension (4.85 at n = 80 and 0.36 at n = 2000 with 512-d features), so
:func:`fid_if_enough` returns no value below :data:`FID_MIN_SAMPLES` per set.

KID (Binkowski et al., ICLR 2018, arXiv:1801.01401) is the unbiased U-statistic estimate of the
squared MMD (Gretton et al., JMLR 2012, Lemma 6) with the polynomial kernel
``k(x, y) = (gamma x.y + coef0)^degree`` (``gamma = 1/d``, ``coef0 = 1``, ``degree = 3``). Its
expectation is the population MMD^2 at every sample size, so it may be negative.

:func:`kid_with_interval` adds a percentile bootstrap interval that resamples **both** sets with
replacement (each set is an independent sample of its own distribution, so both contribute to the
estimator's variance). In a resample, pairs that repeat one original item are left out of the
within-set terms (the U-statistic's "distinct indices" rule), which keeps the resampled statistics
centred on the estimate instead of inflating them with ``k(x, x)`` terms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

FID_MIN_SAMPLES = 2000
"""Fewest samples per set for which FID is reported (below it, small-sample bias dominates)."""


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of ``(N, D)`` features, ``N >= 2``."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` covariances (symmetric PSD).
        eps: diagonal offset added to both covariances when ``S_1 S_2`` is singular.

    Returns:
        The squared distance (>= 0 up to round-off).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        logger.warning("singular covariance product; adding %.1e to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag))
        if imag > 1e-3 * max(1.0, np.max(np.abs(covmean.real))):
            raise FloatingPointError(f"matrix square root has a large imaginary part ({imag:.3g})")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # round-off can make identical sets slightly negative


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two ``(N, D)`` feature sets, whatever their size (see :func:`fid_if_enough`)."""
    mu_a, sigma_a = feature_statistics(features_a)
    mu_b, sigma_b = feature_statistics(features_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def fid_if_enough(features_a: np.ndarray, features_b: np.ndarray,
                  min_samples: int = FID_MIN_SAMPLES) -> tuple[float | None, str | None]:
    """FID when both sets hold at least ``min_samples`` rows, else ``(None, why)``.

    Returns:
        ``(fid, None)`` or ``(None, a sentence saying why no FID is given)``.
    """
    n_a, n_b = len(features_a), len(features_b)
    if min(n_a, n_b) < min_samples:
        return None, (f"FID not reported: it needs >= {min_samples} samples per set and got n = {n_a} and "
                      f"{n_b}; below that its small-sample bias exceeds the differences it is meant to show")
    return fid_from_features(features_a, features_b), None


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma x.y + coef0)^degree`` for ``(N, D)`` and ``(M, D)`` inputs -> ``(N, M)``; ``gamma`` = 1/D."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T) + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased squared MMD from kernel matrices (diagonals of ``k_xx``/``k_yy`` excluded; may be < 0)."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 samples per set, got {m} and {n}")
    term_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * k_xy.mean())


def kid_from_features(
    features_a: np.ndarray, features_b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
    degree: int = 3, gamma: float | None = None, coef0: float = 1.0, seed: int = 0,
) -> tuple[float, float]:
    """KID as in Binkowski et al.: mean and standard deviation of the unbiased MMD^2 over random subsets.

    The standard deviation describes the subsets, not the estimate's uncertainty; use
    :func:`kid_with_interval` for an interval. ``subset_size`` is capped at the smaller set size; with
    both sets no larger than it, a single subset (the full sets) is used and the deviation is 0.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features, got {a.shape} and {b.shape}")
    size = min(subset_size, a.shape[0], b.shape[0])
    full = size == a.shape[0] == b.shape[0]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(1 if full else subsets):
        xa = a if full else a[rng.choice(a.shape[0], size, replace=False)]
        xb = b if full else b[rng.choice(b.shape[0], size, replace=False)]
        values.append(mmd2_unbiased(polynomial_kernel(xa, xa, degree, gamma, coef0),
                                    polynomial_kernel(xb, xb, degree, gamma, coef0),
                                    polynomial_kernel(xa, xb, degree, gamma, coef0)))
    return float(np.mean(values)), float(np.std(values))


@dataclass(frozen=True)
class KidInterval:
    """KID of two sets with its bootstrap interval.

    Attributes:
        kid: the unbiased MMD^2 estimate on the full sets.
        low, high: the percentile bootstrap interval.
        confidence: its nominal coverage (e.g. 0.95).
        n_a, n_b: samples per set.
        resamples: bootstrap resamples drawn.
    """

    kid: float
    low: float
    high: float
    confidence: float
    n_a: int
    n_b: int
    resamples: int


def _resampled_mmd2(counts_a: np.ndarray, counts_b: np.ndarray, k_aa: np.ndarray, k_bb: np.ndarray,
                    k_ab: np.ndarray) -> np.ndarray:
    """Unbiased MMD^2 of ``R`` resamples given by multiplicities ``(R, N_a)`` and ``(R, N_b)``.

    A within-set pair counts when its two items are distinct originals: the sum over such pairs is
    ``c^T K c - sum_i c_i^2 K_ii`` and their number ``n^2 - sum_i c_i^2``.
    """
    n_a, n_b = k_aa.shape[0], k_bb.shape[0]
    sq_a, sq_b = counts_a**2, counts_b**2
    with np.errstate(divide="ignore", invalid="ignore"):
        within_a = (np.einsum("ri,ij,rj->r", counts_a, k_aa, counts_a) - sq_a @ np.diag(k_aa)) / (n_a**2 - sq_a.sum(1))
        within_b = (np.einsum("ri,ij,rj->r", counts_b, k_bb, counts_b) - sq_b @ np.diag(k_bb)) / (n_b**2 - sq_b.sum(1))
    cross = np.einsum("ri,ij,rj->r", counts_a, k_ab, counts_b) / (n_a * n_b)
    return within_a + within_b - 2.0 * cross


def kid_with_interval(
    features_a: np.ndarray, features_b: np.ndarray, *, resamples: int = 1000, confidence: float = 0.95,
    degree: int = 3, gamma: float | None = None, coef0: float = 1.0, seed: int = 0,
) -> KidInterval:
    """Unbiased KID of ``(N_a, D)`` and ``(N_b, D)`` features with a bootstrap interval over both sets.

    Each resample draws ``N_a`` rows of ``features_a`` and, independently, ``N_b`` rows of
    ``features_b`` with replacement; the interval is the ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles of the resampled estimates. Memory: three kernel matrices
    (``N_a^2 + N_b^2 + N_a N_b`` floats); time: ``O(resamples * N^2)``.

    Args:
        features_a, features_b: the two feature sets, ``N_a, N_b >= 2``.
        resamples: bootstrap resamples.
        confidence: nominal coverage of the interval, in ``(0, 1)``.
        degree, gamma, coef0: the polynomial kernel (``gamma`` defaults to ``1 / D``).
        seed: seed of the resampling.

    Returns:
        A :class:`KidInterval`.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need (N_a, D) and (N_b, D) features with N >= 2, got {a.shape} and {b.shape}")
    if not 0.0 < confidence < 1.0 or resamples < 1:
        raise ValueError(f"need 0 < confidence < 1 and resamples >= 1, got {confidence} and {resamples}")
    k_aa = polynomial_kernel(a, a, degree, gamma, coef0)
    k_bb = polynomial_kernel(b, b, degree, gamma, coef0)
    k_ab = polynomial_kernel(a, b, degree, gamma, coef0)
    kid = mmd2_unbiased(k_aa, k_bb, k_ab)
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, resamples, 100):  # chunks bound the (R, N) count matrices
        r = min(100, resamples - start)
        counts_a = rng.multinomial(len(a), np.full(len(a), 1.0 / len(a)), size=r).astype(np.float64)
        counts_b = rng.multinomial(len(b), np.full(len(b), 1.0 / len(b)), size=r).astype(np.float64)
        values.append(_resampled_mmd2(counts_a, counts_b, k_aa, k_bb, k_ab))
    values = np.concatenate(values)
    values = values[np.isfinite(values)]  # a resample of one repeated item has no distinct pair (tiny sets only)
    low, high = np.quantile(values, [(1.0 - confidence) / 2.0, (1.0 + confidence) / 2.0])
    return KidInterval(kid=kid, low=float(low), high=float(high), confidence=confidence, n_a=len(a), n_b=len(b),
                       resamples=resamples)

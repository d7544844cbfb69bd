"""Distance between the output distributions of two models on the same inputs.

The Jensen–Shannon distance (Endres & Schindelin, IEEE Trans. Inf. Theory 49(7), 2003) is the square
root of the Jensen–Shannon divergence ``JS(p, q) = ½ KL(p ‖ m) + ½ KL(q ‖ m)``, ``m = ½ (p + q)``. In
base 2 it lies in ``[0, 1]`` and is a metric. Compared with retraining it asks the question accuracy
cannot: does the unlearned model answer like a model that never saw the data, confidence included?
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vision_unlearn.metrics._arrays import as_numpy, softmax


def js_distance(p: Any, q: Any) -> np.ndarray:
    """Base-2 Jensen–Shannon distance ``float64 [N]`` between rows of two ``[N, K]`` probability arrays.

    ``0 · log 0`` counts as 0, so a row may hold zeros. Rows must sum to 1 (within 1e-6).

    Raises:
        ValueError: shapes differ, not ``[N, K]``, negative entries or rows that do not sum to 1.
    """
    a = as_numpy(p, dtype=np.float64, name="p")
    b = as_numpy(q, dtype=np.float64, name="q")
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"p and q must both be [N, K] of one shape, got {a.shape} and {b.shape}")
    if (a < 0).any() or (b < 0).any():
        raise ValueError("probabilities must be non-negative")
    for name, rows in (("p", a), ("q", b)):
        if rows.size and not np.allclose(rows.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError(f"rows of {name} must sum to 1")
    m = 0.5 * (a + b)

    def kl_to_m(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(x > 0, x * np.log2(x / m), 0.0)
        return terms.sum(axis=1)

    divergence = 0.5 * kl_to_m(a) + 0.5 * kl_to_m(b)
    return np.sqrt(np.clip(divergence, 0.0, 1.0))


def mean_js_distance(logits: Any, reference_logits: Any) -> float:
    """Mean over rows of :func:`js_distance` between the softmax of two ``[N, K]`` logit arrays.

    Raises:
        ValueError: an empty set (the mean of nothing is undefined) or shapes that differ.
    """
    a, b = softmax(logits), softmax(reference_logits)
    if a.shape[0] == 0:
        raise ValueError("Jensen-Shannon distance of an empty set is undefined")
    return float(js_distance(a, b).mean())

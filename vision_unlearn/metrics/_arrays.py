"""Array coercion shared by the metric functions (tensor or array in, NumPy out)."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(values: Any, *, dtype: Any = None, name: str = "array") -> np.ndarray:
    """Return ``values`` (NumPy array, torch tensor or sequence) as a NumPy array, detached, on the CPU."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name}: cannot be read as a numeric array ({err})") from None
    return array


def softmax(logits: Any) -> np.ndarray:
    """Row-wise softmax of ``[N, K]`` logits, computed stably in float64."""
    z = as_numpy(logits, dtype=np.float64, name="logits")
    if z.ndim != 2:
        raise ValueError(f"logits must be [N, K], got shape {z.shape}")
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)

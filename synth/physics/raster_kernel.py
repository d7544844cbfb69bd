"""Compiled scan-line kernel of :func:`synth.physics.project.path_lengths` (numba, optional).

The kernel performs exactly the floating-point operations of the vectorised numpy path in
:mod:`synth.physics.project` — same per-row column spans, same edge functions with the same
simulation-of-simplicity tie-break, same plane-equation depth — and adds each covered pixel's value
in triangle order, which is the order in which ``numpy.bincount`` sums them. The two paths therefore
give bit-identical path lengths (when the numpy path needs a single chunk, i.e. fewer than
``_MAX_CANDIDATES`` candidate pixels; otherwise they agree to float64 rounding). The numpy path
materialises one array element per candidate (triangle, pixel) pair; the kernel visits them in a loop
without temporaries, which is what makes large meshes (sponges, clamps) cheap.

numba is imported and the kernel compiled on first use (cached on disk next to this file when the
directory is writable), never at import.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)


def _scanline_kernel(
    x: np.ndarray, y: np.ndarray, lo_r: np.ndarray, hi_r: np.ndarray, lo_c: np.ndarray, hi_c: np.ndarray,
    edge_a: np.ndarray, edge_b: np.ndarray, edge_c: np.ndarray, edge_tie: np.ndarray, edge_sign: np.ndarray,
    nd_px: np.ndarray, nd_py: np.ndarray, nd_0: np.ndarray, offset: np.ndarray, width: int,
    acc_inv: np.ndarray, acc_sq: np.ndarray, with_depth: bool,
) -> None:
    """Rasterise ``T`` triangles into the flat accumulators (plain Python; compiled by numba).

    Args:
        x, y: ``(T, 3)`` fine-grid column / row of the projected vertices.
        lo_r, hi_r, lo_c, hi_c: ``(T,)`` inclusive pixel bounding box (clipped to the grid).
        edge_a, edge_b, edge_c: ``(T, 3)`` edge-function coefficients ``a*px + b*py + c``.
        edge_tie: ``(T, 3)`` whether a centre exactly on the edge counts as inside.
        edge_sign: ``(T, 3)`` orientation making ``edge * sign > 0`` inside.
        nd_px, nd_py, nd_0: ``(T,)`` ``n·d`` as an affine function of the pixel position.
        offset: ``(T,)`` ``|n·(a - source)|``.
        width: fine-grid width.
        acc_inv: ``(H*W,)`` running sum of ``±t/|d|``.
        acc_sq: ``(H*W,)`` running sum of ``±(t/|d|)²`` (only when ``with_depth``).
        with_depth: accumulate ``acc_sq``.
    """
    for k in range(x.shape[0]):
        for row in range(lo_r[k], hi_r[k] + 1):
            yrow = float(row)
            xmin = np.inf
            xmax = -np.inf
            for e in range(3):
                i = e
                j = (e + 1) % 3
                xa, xb, ya, yb = x[k, i], x[k, j], y[k, i], y[k, j]
                if yrow >= min(ya, yb) and yrow <= max(ya, yb):
                    if ya == yb:
                        lo_x, hi_x = min(xa, xb), max(xa, xb)
                    else:
                        lo_x = hi_x = xa + (yrow - ya) * (xb - xa) / (yb - ya)
                    xmin = min(xmin, lo_x)
                    xmax = max(xmax, hi_x)
            if not (np.isfinite(xmin) and np.isfinite(xmax)):
                continue
            c0 = max(int(np.ceil(xmin)) - 1, lo_c[k])
            c1 = min(int(np.floor(xmax)) + 1, hi_c[k])
            for col in range(c0, c1 + 1):
                px = float(col)
                inside = True
                for e in range(3):
                    edge = edge_a[k, e] * px + edge_b[k, e] * yrow + edge_c[k, e]
                    if edge != 0.0:
                        ok = edge * edge_sign[k, e] > 0.0
                    else:
                        ok = edge_tie[k, e]
                    if not ok:
                        inside = False
                        break
                if not inside:
                    continue
                lam = offset[k] / (nd_px[k] * px + nd_py[k] * yrow + nd_0[k])
                pixel = row * width + col
                acc_inv[pixel] += lam
                if with_depth:
                    sign = 1.0 if lam > 0.0 else (-1.0 if lam < 0.0 else 0.0)
                    acc_sq[pixel] += sign * lam * lam


@functools.lru_cache(maxsize=1)
def compiled_kernel() -> Callable[..., None] | None:
    """The numba-compiled kernel, or ``None`` when numba is not installed (the numpy path is used)."""
    try:
        import numba
    except ImportError:
        logger.info("numba is not installed: path lengths use the vectorised numpy rasteriser")
        return None
    # error_model="numpy": float division follows IEEE (as numpy) instead of raising ZeroDivisionError;
    # no fastmath, so every operation is rounded exactly as in the numpy path.
    try:
        return numba.njit(cache=True, nogil=True, error_model="numpy")(_scanline_kernel)
    except RuntimeError as err:  # no writable cache location (read-only install without a user cache)
        logger.info("numba cannot cache the rasteriser (%s); it is compiled in every process", err)
        return numba.njit(cache=False, nogil=True, error_model="numpy")(_scanline_kernel)


def numba_available() -> bool:
    """Whether the compiled kernel can be used."""
    return compiled_kernel() is not None

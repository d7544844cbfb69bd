"""Compiled scan-line kernel of :func:`synth.physics.project.path_lengths` (numba, optional).

The kernel performs exactly the floating-point operations of the vectorised numpy path in
:mod:`synth.physics.project` — same triangle set-up (normal, plane offset, bounding box), same per-row
column spans, same edge functions with the same simulation-of-simplicity tie-break, same
plane-equation depth — and adds each covered pixel's value in triangle order, which is the order in
which ``numpy.bincount`` sums them. The two paths therefore
give bit-identical path lengths (when the numpy path needs a single chunk, i.e. fewer than
``_MAX_CANDIDATES`` candidate pixels; otherwise they agree to float64 rounding). The numpy path
materialises one array element per candidate (triangle, pixel) pair and a dozen per-triangle arrays; the
kernel sets up each triangle and visits its pixels in one loop without temporaries, which is what makes
large meshes (sponges, clamps) cheap.

numba is imported and the kernel compiled on first use (cached on disk next to this file when the
directory is writable), never at import.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np

logger = logging.getLogger(__name__)


def _mesh_kernel(
    q: np.ndarray, faces: np.ndarray, col_fine: np.ndarray, row_fine: np.ndarray, width: int, height: int,
    u0: float, v0: float, step: float, sid: float, acc_inv: np.ndarray, acc_sq: np.ndarray, with_depth: bool,
) -> None:
    """Set up and rasterise every triangle of a mesh into the flat accumulators (plain Python; compiled by numba).

    Per triangle it evaluates, with the same operations in the same order, what the numpy path of
    :func:`synth.physics.project.path_lengths` computes as whole-mesh arrays (normal, plane offset,
    pixel bounding box, the edge functions of each undirected edge with the simulation-of-simplicity
    tie-break, the plane-equation depth), then visits the covered fine-grid pixels row by row.

    Args:
        q: ``(V, 3)`` vertices relative to the source, mm.
        faces: ``(F, 3)`` vertex indices (int64).
        col_fine, row_fine: ``(V,)`` fine-grid column / row of each projected vertex.
        width, height: fine-grid size.
        u0, v0, step: detector-plane mm of fine pixel ``(0, 0)`` and the fine pitch.
        sid: source-to-detector distance, mm.
        acc_inv: ``(H*W,)`` running sum of ``±t/|d|``.
        acc_sq: ``(H*W,)`` running sum of ``±(t/|d|)²`` (only when ``with_depth``).
        with_depth: accumulate ``acc_sq``.
    """
    x = np.empty(3)
    y = np.empty(3)
    idx = np.empty(3, dtype=np.int64)
    edge_a = np.empty(3)
    edge_b = np.empty(3)
    edge_c = np.empty(3)
    edge_sign = np.empty(3)
    edge_tie = np.empty(3, dtype=np.bool_)
    for k in range(faces.shape[0]):
        for m in range(3):
            idx[m] = faces[k, m]
            x[m] = col_fine[idx[m]]
            y[m] = row_fine[idx[m]]
        a0, a1, a2 = q[idx[0], 0], q[idx[0], 1], q[idx[0], 2]
        e10, e11, e12 = q[idx[1], 0] - a0, q[idx[1], 1] - a1, q[idx[1], 2] - a2
        e20, e21, e22 = q[idx[2], 0] - a0, q[idx[2], 1] - a1, q[idx[2], 2] - a2
        n0 = e11 * e22 - e12 * e21
        n1 = e12 * e20 - e10 * e22
        n2 = e10 * e21 - e11 * e20
        offset = abs(n0 * a0 + n1 * a1 + n2 * a2)
        area2 = (x[1] - x[0]) * (y[2] - y[0]) - (x[2] - x[0]) * (y[1] - y[0])
        lo_c = max(np.ceil(min(x[0], min(x[1], x[2]))), 0.0)
        hi_c = min(np.floor(max(x[0], max(x[1], x[2]))), float(width - 1))
        lo_r = max(np.ceil(min(y[0], min(y[1], y[2]))), 0.0)
        hi_r = min(np.floor(max(y[0], max(y[1], y[2]))), float(height - 1))
        if hi_c < lo_c or hi_r < lo_r or area2 == 0.0 or not offset > 0.0:
            continue
        orient = 1.0 if area2 > 0.0 else -1.0
        for e in range(3):
            i = e
            j = (e + 1) % 3
            if idx[i] < idx[j]:
                xa, ya, xb, yb, sign = x[i], y[i], x[j], y[j], orient
            else:
                xa, ya, xb, yb, sign = x[j], y[j], x[i], y[i], -orient
            edge_a[e] = -(yb - ya)
            edge_b[e] = xb - xa
            edge_c[e] = (yb - ya) * xa - (xb - xa) * ya
            tie = edge_a[e] if edge_a[e] != 0.0 else edge_b[e]
            edge_tie[e] = tie * sign > 0.0
            edge_sign[e] = sign
        nd_px = n0 * step
        nd_py = n1 * step
        nd_0 = n0 * u0 + n1 * v0 + n2 * sid
        c_lo, c_hi = int(lo_c), int(hi_c)
        for row in range(int(lo_r), int(hi_r) + 1):
            yrow = float(row)
            xmin = np.inf
            xmax = -np.inf
            for e in range(3):
                i = e
                j = (e + 1) % 3
                xa, xb, ya, yb = x[i], x[j], y[i], y[j]
                if yrow >= min(ya, yb) and yrow <= max(ya, yb):
                    if ya == yb:
                        lo_x, hi_x = min(xa, xb), max(xa, xb)
                    else:
                        lo_x = hi_x = xa + (yrow - ya) * (xb - xa) / (yb - ya)
                    xmin = min(xmin, lo_x)
                    xmax = max(xmax, hi_x)
            if not (np.isfinite(xmin) and np.isfinite(xmax)):
                continue
            c0 = max(int(np.ceil(xmin)) - 1, c_lo)
            c1 = min(int(np.floor(xmax)) + 1, c_hi)
            for col in range(c0, c1 + 1):
                px = float(col)
                inside = True
                for e in range(3):
                    edge = edge_a[e] * px + edge_b[e] * yrow + edge_c[e]
                    if edge != 0.0:
                        ok = edge * edge_sign[e] > 0.0
                    else:
                        ok = edge_tie[e]
                    if not ok:
                        inside = False
                        break
                if not inside:
                    continue
                lam = offset / (nd_px * px + nd_py * yrow + nd_0)
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
        return numba.njit(cache=True, nogil=True, error_model="numpy")(_mesh_kernel)
    except RuntimeError as err:  # no writable cache location (read-only install without a user cache)
        logger.info("numba cannot cache the rasteriser (%s); it is compiled in every process", err)
        return numba.njit(cache=False, nogil=True, error_model="numpy")(_mesh_kernel)


def numba_available() -> bool:
    """Whether the compiled kernel can be used."""
    return compiled_kernel() is not None

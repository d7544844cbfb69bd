"""How a summary statistic reads in a report table: ``mean ± std [low, high]``.

One home for the cell every results table writes (the leaderboard, the unlearning benchmark and the
unlearning report's tables): the same decimals for the mean and its spread, the spread only where there
is one, the interval only where both ends are defined, and one word for an undefined value.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MISSING = "n/a"
"""What a cell shows for an undefined value (``None``, NaN or an infinity)."""


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def mean_std_cell(mean: float | None, std: float | None = None, *, digits: int = 3,
                  interval: Sequence[float | None] | None = None, missing: str = MISSING) -> str:
    """``"0.512 ± 0.031 [0.440, 0.580]"``.

    Args:
        mean: the value; ``missing`` is returned when it is undefined.
        std: its spread (left out when ``None`` or undefined, e.g. for a single seed).
        digits: decimals of the mean, the spread and the interval.
        interval: ``(low, high)``; shown only when both ends are defined.
        missing: the text of an undefined cell.

    Returns:
        The cell's text (no markdown escaping: the numbers need none).
    """
    if not _finite(mean):
        return missing
    text = f"{mean:.{digits}f}"
    if _finite(std):
        text += f" ± {std:.{digits}f}"
    if interval is not None and len(interval) == 2 and _finite(interval[0]) and _finite(interval[1]):
        text += f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]"
    return text


def escape_markdown_cell(text: str) -> str:
    """``text`` safe inside one markdown table cell: pipes escaped, line breaks as spaces."""
    return text.replace("|", "\\|").replace("\n", " ")

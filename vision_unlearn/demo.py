"""The main job behind ``vision-unlearn demo`` / ``make demo``.

Stage 1 reads the embedded real data (or the files given) and writes previews and a manifest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from rfo_bench.errors import UserInputError

logger = logging.getLogger(__name__)


def check_writable_dir(out_dir: Path) -> None:
    """Create ``out_dir`` or fail with a clear error if it cannot be written."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserInputError(f"cannot create the output directory: {err.strerror}", file=out_dir) from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise UserInputError("output directory is not writable", file=out_dir)


def run_demo(
    out_dir: Path, radiograph: str | os.PathLike[str] | None = None, ct: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Run the demo into ``out_dir`` and return its manifest."""
    from synth.embedded import write_embedded_previews

    check_writable_dir(out_dir)
    logger.info("reading the backgrounds and writing previews to %s", out_dir)
    return write_embedded_previews(out_dir / "data", radiograph=radiograph, ct=ct)

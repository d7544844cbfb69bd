"""Prepare third-party libraries for machines without internet access.

Nothing here runs at import. :func:`prepare_offline` is called by the code paths that use
Hugging Face, timm, diffusers, Ultralytics or matplotlib, right before they import those libraries,
so that no run ever waits on (or leaks to) the network.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE_ENV = "RFO_CACHE_DIR"
"""Environment variable naming the toolkit's cache directory (default: ``./.cache``)."""

_prepared: Path | None = None


def cache_dir() -> Path:
    """The toolkit's local cache directory (``$RFO_CACHE_DIR`` or ``./.cache``), absolute."""
    return Path(os.environ.get(CACHE_ENV, Path.cwd() / ".cache")).expanduser().resolve()


def _font_source() -> Path | None:
    try:
        import matplotlib
    except ImportError:  # pragma: no cover - matplotlib is a hard dependency
        return None
    candidate = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return candidate if candidate.exists() else None


def prepare_offline(root: str | os.PathLike[str] | None = None) -> Path:
    """Configure Hugging Face, Ultralytics and matplotlib to never touch the network.

    Sets ``HF_HUB_OFFLINE=1`` and ``HF_DATASETS_OFFLINE=1`` (timm / diffusers never retry
    downloads), ``YOLO_OFFLINE=true`` and ``YOLO_AUTOINSTALL=false`` (Ultralytics neither checks
    for updates nor pip-installs), a local ``YOLO_CONFIG_DIR`` holding the font Ultralytics would
    otherwise download (``Ultralytics/Arial.ttf``, a copy of matplotlib's DejaVuSans) and a local
    ``MPLCONFIGDIR``. Values the user already exported are kept.

    Must run before ``ultralytics`` is first imported, because Ultralytics reads its settings
    directory at import.

    Args:
        root: cache directory; default :func:`cache_dir`.

    Returns:
        The cache directory used.
    """
    global _prepared
    base = Path(root).resolve() if root is not None else cache_dir()
    if _prepared == base:
        return base
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("YOLO_OFFLINE", "true")
    os.environ.setdefault("YOLO_AUTOINSTALL", "false")
    os.environ.setdefault("YOLO_VERBOSE", "false")
    yolo_dir = Path(os.environ.setdefault("YOLO_CONFIG_DIR", str(base / "ultralytics")))
    mpl_dir = Path(os.environ.setdefault("MPLCONFIGDIR", str(base / "matplotlib")))
    for directory in (yolo_dir, yolo_dir / "Ultralytics", mpl_dir):
        directory.mkdir(parents=True, exist_ok=True)
    font_target = yolo_dir / "Ultralytics" / "Arial.ttf"
    if not font_target.exists():
        source = _font_source()
        if source is not None:
            shutil.copyfile(source, font_target)
        else:  # pragma: no cover
            logger.warning("no font found to place at %s; Ultralytics plots may try to download one", font_target)
    _prepared = base
    return base

"""The training tiles of one run, cut once and kept until the run has finished.

Cutting tiles costs real time at clinical resolution (about 30 CPU-minutes for the shipped detector's
4 000 films of 2048 px), and a long training run is interrupted and resumed many times. The tiles are a
pure function of the training films, the tiling, the run's seed and the bit depth, so the run keeps them
in one hidden folder of its output directory, ``.tiles``, named by that key in ``tiles.json``:

- a run whose key matches a complete ``.tiles`` folder reads its tiles from there instead of cutting;
- otherwise the tiles are cut into ``.tiles.partial`` (ownership marker, state ``staging``, the key
  written first; each of ``train/`` and ``val/`` holds its tiles and their ``annotations.json``, so the
  marker lists every top-level entry from the start) and the folder is renamed to ``.tiles`` when complete, replacing a ``.tiles`` folder
  this toolkit wrote. A cut that is stopped part-way keeps ``.tiles.partial``: the next run with the
  same key keeps every film whose tiles are all there (tiles are written atomically) and cuts the
  rest; a ``.tiles.partial`` of another key is replaced;
- the folder is removed when training finishes, and kept when it stops early (the next ``--resume``
  reads it).

A ``.tiles`` or ``.tiles.partial`` that the toolkit's output rule does not let it replace (no marker, a
link, a user's file inside: :func:`toolkit_core.output_dirs.why_not_replaceable`) is never deleted: the
run stops with one line naming it.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

TILES_NAME = "tiles"
"""Stem of the hidden tile folders inside the output directory (``.tiles``, ``.tiles.partial``; the
``.tiles.tmp-*`` staging folders of earlier releases are removed once their process is gone)."""

KEY_FILE = "tiles.json"
ANNOTATIONS = "annotations.json"
"""The tiles' COCO file, inside ``train/`` and ``val/`` beside the tiles."""
TOOL = "rfo-bench train"
_KEY_FILE_MAX_BYTES = 1 << 16


def tile_key(fingerprint: str, val_sha256: str | None, bit_depth: int) -> str:
    """The cache key: the run's fingerprint (settings + training data hash), the validation data, the depth."""
    from toolkit_core.utils import sha256_text

    return sha256_text(json.dumps(["tiles/1", fingerprint, val_sha256, int(bit_depth)]))


@contextmanager
def run_tiles(tiling, train_sets: Sequence[DetectionDataset], val_set: DetectionDataset | None, *, out: Path,
              seed: int, bit_depth: int, categories, key: str, workers: int = 1
              ) -> Iterator[tuple[DetectionDataset, DetectionDataset | None, dict[str, int]]]:
    """Yield ``(train tiles, validation tiles or None, tile counts)`` for one training run.

    Args:
        tiling: the run's :class:`~rfo_bench.detectors.tiling.TileConfig`.
        train_sets, val_set: the films.
        out: the run's output folder (exists).
        seed: the run's seed (tile positions; the validation tiles use ``seed + 1``).
        bit_depth: 8 for Ultralytics, 16 for the torchvision family.
        categories: the category table of the tiles.
        key: :func:`tile_key` of the run.
        workers: processes that cut films (the tiles do not depend on it).
    """
    from toolkit_core.output_dirs import remove_stale_staging

    folder = out / f".{TILES_NAME}"
    remove_stale_staging(out, TILES_NAME)
    cached = _read_cached(folder, key)
    if cached is None:
        cached = _cut(tiling, train_sets, val_set, out=out, folder=folder, seed=seed, bit_depth=bit_depth,
                      categories=categories, key=key, workers=workers)
    else:
        logger.info("reusing the %d training tiles cut earlier in %s", len(cached[0]), folder)
    finished = False
    try:
        yield cached
        finished = True
    finally:
        if finished:
            shutil.rmtree(folder, ignore_errors=True)  # the run's own tile folder (checked by _read_cached/_cut)
        else:
            logger.info("training stopped early; its tiles stay in %s for --resume", folder)


def _read_cached(folder: Path, key: str) -> tuple[DetectionDataset, DetectionDataset | None, dict[str, int]] | None:
    """The tiles in ``folder`` when this toolkit wrote them completely for ``key``; else ``None``."""
    from rfo_bench.io.coco import read_coco
    from toolkit_core.output_dirs import read_marker

    if folder.is_symlink() or not folder.is_dir():
        return None
    marker = read_marker(folder)
    if marker is None or marker.get("tool") != TOOL or marker.get("state") != "complete":
        return None
    stated = _read_index(folder)
    if stated is None or stated.get("key") != key or not isinstance(stated.get("counts"), dict):
        return None
    try:
        train = read_coco(folder / "train" / ANNOTATIONS)
        val = read_coco(folder / "val" / ANNOTATIONS) if (folder / "val" / ANNOTATIONS).is_file() else None
    except UserInputError:
        return None  # damaged: cut again (the folder is ours and is replaced)
    if not all(train.resolve(r).is_file() for r in train.images):
        return None
    counts = {str(k): int(v) for k, v in stated["counts"].items()}
    return train, val, counts


def _cut(tiling, train_sets: Sequence[DetectionDataset], val_set: DetectionDataset | None, *, out: Path,
         folder: Path, seed: int, bit_depth: int, categories, key: str, workers: int
         ) -> tuple[DetectionDataset, DetectionDataset | None, dict[str, int]]:
    from rfo_bench.detectors.tiling import write_tile_dataset
    from rfo_bench.io.coco import write_coco
    from toolkit_core.output_dirs import write_marker

    _require_replaceable(folder)
    staging = _partial_folder(out, key)
    write_marker(staging, TOOL, state="staging")  # this process now
    train, counts = write_tile_dataset(train_sets, tiling, staging / "train", seed=seed, bit_depth=bit_depth,
                                       categories=categories, reuse_existing=True, workers=workers)
    write_coco(train, staging / "train" / ANNOTATIONS)
    val = None
    if val_set is not None and len(val_set):
        val, _ = write_tile_dataset([val_set], tiling, staging / "val", seed=seed + 1, bit_depth=bit_depth,
                                    categories=categories, reuse_existing=True, workers=workers)
        write_coco(val, staging / "val" / ANNOTATIONS)
    (staging / KEY_FILE).write_text(json.dumps({"key": key, "counts": counts}, indent=1), encoding="utf-8")
    write_marker(staging, TOOL, state="complete")
    if folder.exists():
        shutil.rmtree(folder)  # replaceable (checked above): tiles of another configuration
    staging.rename(folder)
    return (replace(train, root=folder / "train"), replace(val, root=folder / "val") if val is not None else None,
            counts)


PARTIAL_NAME = f".{TILES_NAME}.partial"
"""The folder a cut is written into; kept when the cut stops part-way, so that the next run goes on."""


def _partial_folder(out: Path, key: str) -> Path:
    """``out/.tiles.partial`` for ``key``: the folder of an interrupted cut of the same key, else a new one.

    A ``.tiles.partial`` of another key (or whose key file is missing) is replaced when the output rule
    allows it, else refused.
    """
    from toolkit_core.output_dirs import write_marker

    partial = out / PARTIAL_NAME
    if partial.exists() or partial.is_symlink():
        _require_replaceable(partial)
        if _stated_key(partial) == key:
            logger.info("going on with the interrupted tile cut in %s", partial)
            return partial
        shutil.rmtree(partial)  # replaceable (checked above): an interrupted cut of another configuration
    partial.mkdir()
    (partial / KEY_FILE).write_text(json.dumps({"key": key}), encoding="utf-8")
    (partial / "train").mkdir()
    (partial / "val").mkdir()
    write_marker(partial, TOOL, state="staging")  # lists every top-level entry the cut will write
    return partial


def _require_replaceable(path: Path) -> None:
    """Stop with one line unless the toolkit's output rule lets it replace ``path`` (absent: fine)."""
    from toolkit_core.output_dirs import why_not_replaceable

    reason = why_not_replaceable(path)
    if reason is not None:
        raise UserInputError(f"refusing to replace a tile folder this toolkit did not write ({reason})", file=path)


def _read_index(folder: Path) -> dict[str, Any] | None:
    """The ``tiles.json`` of ``folder`` (key, and counts once the cut is complete), or ``None``."""
    index = folder / KEY_FILE
    try:
        if not index.is_file() or index.stat().st_size > _KEY_FILE_MAX_BYTES:
            return None
        stated = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return stated if isinstance(stated, dict) else None


def _stated_key(folder: Path) -> str | None:
    key = (_read_index(folder) or {}).get("key")
    return key if isinstance(key, str) else None



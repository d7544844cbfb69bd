"""Checkpoints inside an Ultralytics epoch, so a stopped YOLO run loses at most ``every`` optimiser steps.

The Ultralytics trainer writes ``last.pt`` at the end of each epoch only; one epoch of the shipped
detector's recipe is about 70 CPU-minutes, and a run stopped part-way through an epoch would redo it.
:func:`mid_epoch_checkpoints` adds, through the trainer's callbacks, a checkpoint every ``every`` batches:
``weights/partial.pt`` (written by the trainer's own ``save_model``, so it is an ordinary Ultralytics
checkpoint that resumes at the start of the interrupted epoch) and ``weights/partial.json`` stating the
epoch, the batches already done in it and the checkpoint's SHA-256. A resumed run starts from
``partial.pt`` when it is newer than ``last.pt`` and runs only the rest of that epoch.

What is and is not the same as an uninterrupted run:

* the number of optimiser steps, the learning-rate schedule (per epoch) and the EMA's update count
  continue exactly; checkpoints are only written once warm-up is over for the whole epoch, so the
  warm-up interpolation (indexed by the batch number) never sees a shortened epoch;
* like the trainer's own resume at an epoch boundary, the model restarts from the EMA weights stored in
  the checkpoint, and the data order after a resume is a new shuffle: the rest of the interrupted epoch
  draws its batches from that shuffle rather than from the unfinished part of the old one.

The files have fixed names inside the trainer's ``weights`` folder and are removed when the epoch's
``last.pt`` is written; nothing else is ever deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit_core.utils import atomic_write_bytes, sha256_file

logger = logging.getLogger(__name__)

PARTIAL_NAME = "partial.pt"
PARTIAL_RECORD = "partial.json"
_MAX_RECORD_BYTES = 1 << 12


@dataclass(frozen=True)
class PartialEpoch:
    """A checkpoint written part-way through ``epoch`` (0-based) after ``batches_done`` of its batches."""

    epoch: int
    batches_done: int
    sha256: str


def read_partial(weights_dir: Path, last_epoch: int) -> PartialEpoch | None:
    """The mid-epoch checkpoint that continues from ``last.pt`` of epoch ``last_epoch``, else ``None``.

    It is used only when its record is intact, names the epoch right after ``last.pt``'s and the
    checkpoint's bytes match the record; anything else (a stale or half-written pair) is ignored.
    """
    record_path, weights = weights_dir / PARTIAL_RECORD, weights_dir / PARTIAL_NAME
    if not record_path.is_file() or not weights.is_file() or record_path.stat().st_size > _MAX_RECORD_BYTES:
        return None
    try:
        data = json.loads(record_path.read_text(encoding="utf-8"))
        partial = PartialEpoch(int(data["epoch"]), int(data["batches_done"]), str(data["sha256"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if partial.epoch != last_epoch + 1 or partial.batches_done < 1 or sha256_file(weights) != partial.sha256:
        return None
    return partial


def clear_partial(weights_dir: Path) -> None:
    """Remove the mid-epoch checkpoint pair (fixed names, written only by :func:`mid_epoch_checkpoints`)."""
    for name in (PARTIAL_RECORD, PARTIAL_NAME):  # the record first: a pair is never left half-valid
        with contextlib.suppress(FileNotFoundError):
            (weights_dir / name).unlink()


class _RestOfEpoch:
    """The trainer's loader, yielding only the batches an interrupted epoch has left.

    It stands in for the loader during that one epoch (the trainer asks for an iterator more than once
    per epoch) and is replaced by the loader itself when the epoch ends.
    """

    def __init__(self, loader: Any, skip: int) -> None:
        self.loader, self.skip = loader, skip

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), max(len(self.loader) - self.skip, 0))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def _save_partial(trainer: Any, weights_dir: Path, epoch: int, batches_done: int) -> None:
    """The trainer's own checkpoint, stamped with the previous epoch so that it resumes this one."""
    saved = (trainer.epoch, trainer.wdir, trainer.last, trainer.best, trainer.save_period)
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=weights_dir) as scratch:
        folder = Path(scratch)
        trainer.epoch, trainer.wdir, trainer.save_period = epoch - 1, folder, -1
        trainer.last, trainer.best = folder / "last.pt", folder / "best.pt"
        try:
            trainer.save_model()
        finally:
            trainer.epoch, trainer.wdir, trainer.last, trainer.best, trainer.save_period = saved
        digest = sha256_file(folder / "last.pt")
        with contextlib.suppress(FileNotFoundError):
            (weights_dir / PARTIAL_RECORD).unlink()  # never a record beside a checkpoint it does not describe
        os.replace(folder / "last.pt", weights_dir / PARTIAL_NAME)
    record = {"epoch": epoch, "batches_done": batches_done, "sha256": digest}
    atomic_write_bytes(weights_dir / PARTIAL_RECORD, json.dumps(record).encode("utf-8"))


@contextlib.contextmanager
def mid_epoch_checkpoints(model: Any, weights_dir: Path, every: int,
                          resumed: PartialEpoch | None = None) -> Iterator[None]:
    """Write ``partial.pt`` every ``every`` batches of an epoch (0: never) while ``model.train`` runs.

    Args:
        model: the ``ultralytics.YOLO`` whose ``train`` is called inside the block.
        weights_dir: the run's ``weights`` folder (where the trainer writes ``last.pt``).
        every: batches between checkpoints.
        resumed: the checkpoint this run resumes from; its epoch runs only its remaining batches.
    """
    state = {"done": 0, "epoch": -1}

    def on_train_start(trainer) -> None:
        if resumed is not None:
            trainer.train_loader = _RestOfEpoch(trainer.train_loader, resumed.batches_done)

    def on_train_epoch_start(trainer) -> None:
        first = resumed is not None and trainer.epoch == resumed.epoch and state["epoch"] < 0
        state["epoch"], state["done"] = trainer.epoch, (resumed.batches_done if first else 0)

    def on_train_batch_end(trainer) -> None:
        state["done"] += 1
        batches = len(trainer.train_loader)
        past_warmup = batches * trainer.epoch > trainer._get_warmup_iterations(batches)
        if every and trainer.epoch >= 1 and past_warmup and state["done"] % every == 0 and state["done"] < batches:
            _save_partial(trainer, weights_dir, trainer.epoch, state["done"])
            logger.info("checkpoint in epoch %d after %d of %d batches", trainer.epoch + 1, state["done"], batches)

    def on_train_epoch_end(trainer) -> None:
        if isinstance(trainer.train_loader, _RestOfEpoch):
            trainer.train_loader = trainer.train_loader.loader

    def on_model_save(trainer) -> None:  # last.pt now holds the whole epoch
        clear_partial(weights_dir)

    if not every and resumed is None:  # nothing to write and nothing to skip
        yield
        return
    for event, callback in (("on_train_start", on_train_start), ("on_train_epoch_start", on_train_epoch_start),
                            ("on_train_batch_end", on_train_batch_end), ("on_train_epoch_end", on_train_epoch_end),
                            ("on_model_save", on_model_save)):
        model.add_callback(event, callback)
    yield

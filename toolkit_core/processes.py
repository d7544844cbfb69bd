"""Worker processes that end when the work ends or stops: the one process pool of the toolkit.

Built on :class:`concurrent.futures.ProcessPoolExecutor` rather than ``multiprocessing.Pool``, whose
``terminate`` (called when a ``with Pool`` block exits, normally or not) can hang: its parent takes the
task queue's lock, which an idle worker holds while it waits for a task, and a worker killed at the
wrong moment leaves it taken for good. Such a hang was seen when tiles were cut by workers forked from
a process that had turned SIGTERM into ``SystemExit``, a handler the workers inherited.

Here workers restore the default SIGTERM action and ignore SIGINT (a Ctrl-C reaches the parent, which
stops the work), and leaving the block waits for the jobs already running (one film each, about a
second) while jobs not yet started are cancelled.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any


def _start_worker(initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # whatever the parent set, a SIGTERM ends a worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    if initializer is not None:
        initializer(*initargs)


def start_method(prefer_fork: bool = True) -> str:
    """``fork`` where the platform has it and ``prefer_fork``, else ``spawn``."""
    return "fork" if prefer_fork and "fork" in multiprocessing.get_all_start_methods() else "spawn"


class WorkerPool:
    """Jobs run in worker processes; results come back in order (:meth:`imap`) or as they finish."""

    def __init__(self, executor: ProcessPoolExecutor, workers: int) -> None:
        self._executor = executor
        self._window = 4 * workers  # jobs in flight: enough to keep every worker busy, few to cancel

    def imap(self, func: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``func`` over ``items``, results in the order of ``items``."""
        pending: list[Future] = []
        for item in items:
            pending.append(self._executor.submit(func, item))
            if len(pending) >= self._window:
                yield pending.pop(0).result()
        for future in pending:
            yield future.result()

    def imap_unordered(self, func: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """``func`` over ``items``, results as they finish."""
        source = iter(items)
        running: set[Future] = set()
        for item in source:
            running.add(self._executor.submit(func, item))
            if len(running) >= self._window:
                break
        while running:
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                for item in source:  # refill one for each finished job
                    running.add(self._executor.submit(func, item))
                    break
                yield future.result()


@contextlib.contextmanager
def process_pool(workers: int, *, initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = (),
                 method: str | None = None) -> Iterator[WorkerPool]:
    """A pool of ``workers`` processes (``fork`` where possible, or ``method``).

    Leaving the block waits for the jobs that are running; jobs not started are cancelled.
    """
    context = multiprocessing.get_context(method or start_method())
    executor = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker,
                                   initargs=(initializer, initargs))
    try:
        yield WorkerPool(executor, workers)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)

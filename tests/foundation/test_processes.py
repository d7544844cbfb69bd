"""The toolkit's process pool: workers end when terminated, whatever SIGTERM handler their parent set."""

from __future__ import annotations

import signal
import sys

import pytest

from toolkit_core.processes import process_pool


def _square(x: int) -> int:
    return x * x


def _sigterm_disposition(_: int) -> object:
    return signal.getsignal(signal.SIGTERM)


@pytest.fixture
def sigterm_raises():
    """The parent turns SIGTERM into SystemExit, as ``rfo-bench train`` does while it runs."""
    previous = signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    yield
    signal.signal(signal.SIGTERM, previous)


def test_workers_take_the_default_sigterm_action_and_finish(sigterm_raises) -> None:
    with process_pool(2) as pool:
        assert sorted(pool.imap_unordered(_square, range(6))) == [0, 1, 4, 9, 16, 25]
        assert list(pool.imap(_square, range(20))) == [x * x for x in range(20)]  # in order, past the window
        assert set(pool.imap(_sigterm_disposition, range(4))) == {signal.SIG_DFL}


def test_a_pool_left_by_an_exception_is_terminated_without_hanging(sigterm_raises) -> None:
    for _ in range(5):  # the old hang was a race: try it several times
        with pytest.raises(KeyboardInterrupt), process_pool(2) as pool:
            iterator = pool.imap_unordered(_square, range(50))
            next(iterator)
            raise KeyboardInterrupt


def test_rfo_bench_train_restores_the_sigterm_handler_it_replaced() -> None:
    from rfo_bench.detectors.commands import _sigterm_as_exit

    before = signal.getsignal(signal.SIGTERM)
    with _sigterm_as_exit():
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before

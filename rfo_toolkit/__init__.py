"""The applications above the three libraries: the demo (:mod:`rfo_toolkit.demo`), the detector
leaderboard (:mod:`rfo_toolkit.leaderboard`), the report rebuilder (:mod:`rfo_toolkit.report`) and
the command-line entry points ``vision-unlearn``, ``rfo-bench`` and ``rfo-synth``
(:mod:`rfo_toolkit.cli`). Nothing in the libraries imports this package."""

from __future__ import annotations

__version__ = "0.1.0"

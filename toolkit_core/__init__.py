"""The foundation the three libraries share, and nothing domain-specific.

- :mod:`toolkit_core.errors`: the user-error type (one line, exit 2 at the command line);
- :mod:`toolkit_core.cli_support`: the command-line convention (parser, ``-v``, error mapping);
- :mod:`toolkit_core.offline`: offline set-up of third-party libraries (no downloads at run time);
- :mod:`toolkit_core.output_dirs`: output folders the tools own, and only those they may replace;
- :mod:`toolkit_core.utils`: seeding, hashing and atomic writes;
- :mod:`toolkit_core.pseudonym`: keyed pseudonyms of file names and patient ids;
- :mod:`toolkit_core.html_report`: tables, figures and sections rendered as HTML or markdown.

Layers (``docs/architecture.md``): ``toolkit_core`` <- ``rfo_bench`` <- ``synth`` / ``vision_unlearn``
<- ``rfo_toolkit`` (the demo, the leaderboard and the command-line entry points). Imports point down
only; ``tests/test_architecture.py`` reads the import graph and fails on any cycle.
"""

from __future__ import annotations

__version__ = "0.1.0"

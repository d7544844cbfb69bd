"""The command-line convention shared by ``vision-unlearn``, ``rfo-bench`` and ``rfo-synth``.

Every CLI builds an :class:`argparse.ArgumentParser` with sub-commands whose handler is stored as
``func`` and calls :func:`run_cli`. A :class:`~rfo_bench.errors.UserInputError` becomes one line on
stderr and exit code 2; ``--verbose`` (before or after the sub-command) also prints the traceback
and turns on debug logging.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from rfo_bench.errors import UserInputError

EXIT_USAGE = 2

Handler = Callable[[argparse.Namespace], "int | None"]


def verbose_parent() -> argparse.ArgumentParser:
    """A parent parser that lets ``--verbose`` follow a sub-command too."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
        help="show debug logging and full tracebacks",
    )
    return parent


def make_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A top-level parser with ``--verbose`` and a required sub-command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="show debug logging and full tracebacks")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, subparsers


def add_command(
    subparsers: argparse._SubParsersAction, name: str, handler: Handler, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add one sub-command whose handler receives the parsed namespace."""
    sub = subparsers.add_parser(
        name, help=help_text, description=description or help_text, parents=[verbose_parent()],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub.set_defaults(func=handler)
    return sub


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen handler and map user errors to exit code 2."""
    args = parser.parse_args(argv)
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        result = args.func(args)
    except UserInputError as err:
        if verbose:
            traceback.print_exc()
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return int(result or 0)

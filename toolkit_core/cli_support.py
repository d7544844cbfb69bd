"""The command-line convention shared by ``vision-unlearn``, ``rfo-bench`` and ``rfo-synth``.

Every CLI builds an :class:`argparse.ArgumentParser` with sub-commands whose handler is stored as
``func`` and calls :func:`run_cli`. A :class:`~toolkit_core.errors.UserInputError` becomes one line on
stderr and exit code 2; so does a failure the user's environment causes: an output folder that is
read-only, full or a file, an input that is missing or unreadable (an :class:`OSError` with one of
:data:`USER_ERRNOS`), an image over Pillow's decompression-bomb limit. ``--verbose`` (before or after
the sub-command) also prints the traceback and turns on debug logging. Everything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence

from toolkit_core.errors import UserInputError

EXIT_USAGE = 2

USER_ERRNOS = frozenset(
    getattr(errno, name) for name in (
        "EACCES", "EPERM", "ENOENT", "EISDIR", "ENOTDIR", "EEXIST", "ENOTEMPTY", "ENOSPC", "EDQUOT",
        "EROFS", "EFBIG", "ENAMETOOLONG", "ELOOP", "EMLINK", "EXDEV",
    ) if hasattr(errno, name)
)
"""``errno`` values of an :class:`OSError` that the user's files, folders or disk cause, not our code."""

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


def user_error_line(err: BaseException) -> str | None:
    """The one-line message for a failure the user caused, or ``None`` when ``err`` is a bug."""
    if isinstance(err, UserInputError):
        return str(err)
    if isinstance(err, OSError) and err.errno in USER_ERRNOS:
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        reason = err.strerror or errno.errorcode.get(err.errno, "input/output error")
        return " ".join(": ".join([*names, reason]).split())
    if type(err).__name__ == "DecompressionBombError":  # PIL.Image; not imported here to keep the CLI light
        return " ".join(f"image too large to decode safely: {err}".split())
    return None


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
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (e.g. `| head`): stop quietly like other Unix tools.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as err:
        line = user_error_line(err)
        if line is None:
            raise
        if verbose:
            traceback.print_exc()
        print(f"{parser.prog}: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0)

"""The command-line convention shared by ``vision-unlearn``, ``rfo-bench`` and ``rfo-synth``.

Every CLI builds an :class:`argparse.ArgumentParser` with sub-commands whose handler is stored as
``func`` and calls :func:`run_cli`. A :class:`~toolkit_core.errors.UserInputError` becomes one line on
stderr and exit code 2; so does a failure the user's environment causes: an output folder that is
read-only, full or a file, an input that is missing or unreadable (an :class:`OSError` with one of
:data:`USER_ERRNOS`), an image over Pillow's decompression-bomb limit, an optional dependency that is
not installed (:func:`toolkit_core.extras.missing_extra_message`). ``--verbose`` (before or after the
sub-command) also prints the traceback and turns on debug logging. Everything else is a bug and keeps
its traceback.

The grammar every command follows (Ultralytics' names where it has one; the table of every flag is
``docs/cli.md``, generated from the parsers by ``python -m rfo_toolkit.cli_docs``):

- one name per meaning, stated once in :data:`FLAG_MEANINGS`: ``--imgsz`` (image side, px), ``--batch``
  (images or patches per optimisation step), ``--device``, ``--threads``, ``--seed`` (one seed) and
  ``--seeds`` (a list, ``0,1,2``; a count of N seeds is written as the range ``0-{N-1}``, e.g. ``0-2``);
- one output rule (:func:`add_output_options`): an existing non-empty output is refused with one line
  naming ``--overwrite``; ``--overwrite`` replaces only a folder this toolkit wrote for the same
  command (its ownership marker, :mod:`toolkit_core.output_dirs`), never an arbitrary folder;
- runtime options on every command that computes (:func:`add_runtime_options`): ``--device``,
  ``--threads`` (unset: the library's default; 0 is refused), ``--no-progress`` (progress bars go to
  stderr and are on by default);
- an old spelling keeps working for one release (:func:`add_deprecated_alias`): accepted, one warning
  line naming the new flag (logged by :func:`run_cli`, so it goes where the command's log goes), hidden
  from ``--help``.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

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

FLAG_MEANINGS: dict[str, str] = {
    "--backgrounds": "background images",
    "--batch": "images per optimisation step",
    "--checkpoint-every": "save a resumable checkpoint every N steps",
    "--classes": "class names",
    "--ckpt": "diffusion checkpoint folder",
    "--config": "file of settings",
    "--context": "crop side / object size",
    "--data": "dataset",
    "--device": "torch device",
    "--epochs": "training epochs",
    "--imgsz": "image side in pixels",
    "--json": "print JSON",
    "--lr": "learning rate",
    "--model": "model",
    "--model-dir": "directory written by rfo-bench train",
    "--n": "number of images",
    "--no-progress": "hide progress bars",
    "--out": "output",
    "--overwrite": "replace an existing output this toolkit wrote",
    "--patch-size": "object patch side in pixels",
    "--pseudonymise-names": "write keyed pseudonyms",
    "--rerun": "re-run finished",
    "--resume": "continue an interrupted run",
    "--seed": "random seed",
    "--seeds": "list of seeds",
    "--steps": "number of steps",
    "--threads": "torch/NumPy CPU threads",
    "--verbose": "show debug logging and full tracebacks",
    "--workers": "worker processes",
}
"""Flag -> its one meaning across the three commands. The help text of every flag used by more than
one sub-command starts with its meaning here (``docs/cli.md`` and its test check it)."""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Adds ``(default: X)`` once: not when the help already states a default, nor for an unset one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text.lower() or unset or action.default == []:
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text + " (default: %(default)s)"
        return text


def verbose_parent() -> argparse.ArgumentParser:
    """A parent parser that lets ``--verbose`` follow a sub-command too."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=FLAG_MEANINGS["--verbose"],
    )
    return parent


def make_parser(prog: str, description: str) -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """A top-level parser with ``--verbose`` and a required sub-command."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help=FLAG_MEANINGS["--verbose"])
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, subparsers


def add_command(
    subparsers: argparse._SubParsersAction, name: str, handler: Handler, help_text: str, description: str | None = None
) -> argparse.ArgumentParser:
    """Add one sub-command whose handler receives the parsed namespace."""
    sub = subparsers.add_parser(
        name, help=help_text, description=description or help_text, parents=[verbose_parent()],
        formatter_class=HelpFormatter,
    )
    sub.set_defaults(func=handler)
    return sub


# --------------------------------------------------------------------------- values


def positive_int(text: str) -> int:
    """An ``argparse`` type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def parse_seeds(text: str, *, field: str = "--seeds") -> tuple[int, ...]:
    """Seeds written as a list ``0,1,2``, ranges ``0-2`` (both ends included) or both (``0-2,7``).

    A count of N seeds is the range ``0-{N-1}``; there is no count form, so ``--seeds 3`` is seed 3.

    Raises:
        UserInputError: an empty, negative, malformed or repeated seed.
    """
    seeds: list[int] = []
    for part in (p.strip() for p in str(text).split(",")):
        try:
            if "-" in part[1:]:
                first, last = (int(v) for v in part.split("-", 1))
                if last < first:
                    raise ValueError
                seeds.extend(range(first, last + 1))
            else:
                seeds.append(int(part))
        except ValueError:
            raise UserInputError("expected seeds as a list 0,1,2 or a range 0-2", field=field, value=text) from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise UserInputError("expected distinct non-negative seeds, e.g. 0,1,2 or 0-2", field=field, value=text)
    return tuple(seeds)


def _seeds_type(text: str) -> tuple[int, ...]:
    try:
        return parse_seeds(text)
    except UserInputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# --------------------------------------------------------------------------- shared flags


def add_runtime_options(
    cmd: argparse.ArgumentParser, *, device: str | None = "cpu", device_help: str = "", devices: Sequence[str] = (),
    threads_help: str = "", progress: bool = True,
) -> None:
    """Add ``--device``, ``--threads`` and ``--no-progress`` to a command that computes.

    Args:
        cmd: the sub-command.
        device: default device (``None``: the command chooses, say how in ``device_help``).
        device_help: what the command does with the device, appended to the shared meaning.
        devices: the only accepted devices (empty: any torch device string).
        threads_help: what ``--threads`` limits in this command, appended to the shared meaning.
        progress: add ``--no-progress``.
    """
    what = device_help or "cpu, cuda, cuda:N, mps or auto (a GPU if present)"
    cmd.add_argument("--device", default=device, choices=tuple(devices) or None,
                     help=f"{FLAG_MEANINGS['--device']}: {what}")
    cmd.add_argument("--threads", type=positive_int, default=None,
                     help=f"{FLAG_MEANINGS['--threads']} (unset: the libraries' default)"
                          + (f"; {threads_help}" if threads_help else ""))
    if progress:
        cmd.add_argument("--no-progress", action="store_true", help=f"{FLAG_MEANINGS['--no-progress']} (on stderr)")


def set_threads(threads: int | None, *, torch: bool = True) -> None:
    """Limit the CPU threads of torch (when ``torch``) and of NumPy's BLAS/OpenMP pools, also in workers.

    ``None`` keeps the libraries' defaults: the one meaning of an unset ``--threads``.

    Raises:
        UserInputError: ``threads`` is not a positive integer.
    """
    if threads is None:
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserInputError("must be a positive integer", field="--threads", value=threads)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)  # worker processes started from here inherit it
    try:
        from threadpoolctl import threadpool_limits
    except ModuleNotFoundError:  # pragma: no cover - a dependency of scikit-learn
        pass
    else:
        threadpool_limits(threads)
    if torch:
        import torch as torch_module

        torch_module.set_num_threads(threads)


def add_imgsz(cmd: argparse.ArgumentParser, what: str, *, default: int | None = None) -> argparse.Action:
    """Add ``--imgsz`` (Ultralytics' name), the one image-size flag; ``what`` says which image."""
    return cmd.add_argument("--imgsz", type=positive_int, default=default,
                            help=f"{FLAG_MEANINGS['--imgsz']}: {what}")


def add_batch(cmd: argparse.ArgumentParser, what: str = "", *, default: int | None = None) -> argparse.Action:
    """Add ``--batch`` (Ultralytics' name), the one batch-size flag."""
    return cmd.add_argument("--batch", type=positive_int, default=default,
                            help=FLAG_MEANINGS["--batch"] + (f" ({what})" if what else ""))


def add_seeds(cmd: argparse.ArgumentParser, what: str = "", *, default: str | None = None) -> argparse.Action:
    """Add ``--seeds``: a list ``0,1,2`` or a range ``0-2`` (N seeds: ``0-{N-1}``); parsed to a tuple."""
    return cmd.add_argument(
        "--seeds", type=_seeds_type, default=None if default is None else parse_seeds(default),
        help=f"{FLAG_MEANINGS['--seeds']}: 0,1,2 or the range 0-2 (N seeds: 0-<N-1>)" + (f"; {what}" if what else ""),
    )


def add_output_options(
    cmd: argparse.ArgumentParser, what: str, *, required: bool = True, default: str | None = None,
    refused: str = "an existing non-empty output is refused",
) -> None:
    """Add ``--out`` and ``--overwrite``, the one output rule (see
    :func:`toolkit_core.output_dirs.prepare_output_dir`); ``refused`` says what is refused without
    ``--overwrite``."""
    cmd.add_argument("--out", required=required, default=default, help=f"{FLAG_MEANINGS['--out']}: {what}")
    cmd.add_argument("--overwrite", action="store_true", help=f"{FLAG_MEANINGS['--overwrite']} (without it {refused})")


def add_deprecated_alias(cmd: argparse.ArgumentParser, old: str, new: str) -> None:
    """Accept ``old`` for one release as a spelling of ``new``: hidden from ``--help``, one warning line.

    The value is parsed by ``new``'s action (same type, choices and destination).

    Raises:
        ValueError: ``new`` is not an option of ``cmd`` or is required (an alias cannot satisfy it).
    """
    target = cmd._option_string_actions.get(new)
    if target is None or target.required:
        raise ValueError(f"{new} is not an optional flag of {cmd.prog}")

    class _Alias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
            said = getattr(namespace, DEPRECATED_DEST, [])
            setattr(namespace, DEPRECATED_DEST, [*said, (parser.prog, option_string or old, new)])
            target(parser, namespace, values, new)

    alias = cmd.add_argument(old, action=_Alias, dest=target.dest, nargs=target.nargs, type=target.type,
                             choices=target.choices, metavar=target.metavar or target.dest.upper(),
                             default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    alias.deprecated_for = new  # read by deprecated_aliases() for docs/cli.md


def add_deprecated_switch(cmd: argparse.ArgumentParser, old: str, instead: str) -> None:
    """Accept a switch that no longer does anything (e.g. an opt-in ``--progress`` once progress is the
    default) for one release: hidden from ``--help``, one warning line saying what to do ``instead``."""

    class _Switch(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
            said = getattr(namespace, DEPRECATED_DEST, [])
            setattr(namespace, DEPRECATED_DEST, [*said, (parser.prog, option_string or old, instead)])

    switch = cmd.add_argument(old, action=_Switch, nargs=0, dest=DEPRECATED_DEST, default=argparse.SUPPRESS,
                              help=argparse.SUPPRESS)
    switch.deprecated_for = instead


DEPRECATED_DEST = "deprecated_flags"
"""Namespace attribute listing ``(prog, old, new)`` for each deprecated spelling used; :func:`run_cli` logs them."""


def warn_deprecated(prog: str, old: str, new: str) -> None:
    """Log the one deprecation line for ``old`` (a warning on stderr once logging is set up)."""
    logging.getLogger(prog).warning("%s is deprecated and will be removed in the next release; use %s", old, new)


# --------------------------------------------------------------------------- the flag table


@dataclass(frozen=True)
class FlagRow:
    """One flag of one sub-command, as ``docs/cli.md`` lists it."""

    command: str
    flag: str
    meaning: str
    default: str


def _sub_parsers(parser: argparse.ArgumentParser) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                nested = list(_sub_parsers(sub))
                if nested:
                    yield from ((f"{name} {n}", p) for n, p in nested)
                else:
                    yield name, sub


def _default_text(action: argparse.Action) -> str:
    if action.required:
        return "required"
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)) or action.default in (
            None, argparse.SUPPRESS):
        return ""
    value = action.default
    if isinstance(value, (list, tuple)):
        value = ",".join(str(v) for v in value)
    return str(value)


def flag_rows(parsers: Mapping[str, argparse.ArgumentParser]) -> list[FlagRow]:
    """Every visible flag (and positional) of every sub-command of ``parsers`` (program name -> parser).

    ``--verbose``, which every command has (also before the sub-command), is left out.
    """
    rows: list[FlagRow] = []
    for prog, parser in parsers.items():
        for name, sub in _sub_parsers(parser):
            for action in sub._actions:
                if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction) or (
                        "--verbose" in action.option_strings):
                    continue
                flag = max(action.option_strings, key=len) if action.option_strings else action.dest.upper()
                help_text = " ".join((action.help or "").replace("%%", "%").split())
                rows.append(FlagRow(f"{prog} {name}", flag, help_text, _default_text(action)))
    return rows


def deprecated_aliases(parsers: Mapping[str, argparse.ArgumentParser]) -> list[tuple[str, str, str]]:
    """``(command, old spelling, new flag)`` for every deprecated alias of ``parsers``."""
    found = []
    for prog, parser in parsers.items():
        for name, sub in _sub_parsers(parser):
            found += [(f"{prog} {name}", action.option_strings[0], action.deprecated_for)
                      for action in sub._actions if getattr(action, "deprecated_for", None)]
    return found


def flag_table_markdown(rows: Iterable[FlagRow]) -> str:
    """The markdown table of ``rows`` (command, flag, meaning, default)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|") or " "

    lines = ["| command | flag | meaning | default |", "|---|---|---|---|"]
    lines += [f"| {cell(r.command)} | `{cell(r.flag)}` | {cell(r.meaning)} | {cell(r.default)} |" for r in rows]
    return "\n".join(lines) + "\n"


def meaning_conflicts(
    rows: Iterable[FlagRow], meanings: Mapping[str, str] = FLAG_MEANINGS, *, exempt: Iterable[str] = (),
) -> list[str]:
    """Flags whose name stands for more than one meaning across sub-commands, one line each.

    A flag whose help text is the same wherever it is used has one meaning. One whose texts differ
    between sub-commands needs an entry in ``meanings`` that each text starts with (the shared meaning,
    then what it is in that command); so does every flag that has an entry. Positionals and commands
    starting with an ``exempt`` prefix are not checked.
    """
    exempt = tuple(exempt)
    by_flag: dict[str, list[FlagRow]] = {}
    for row in rows:
        if row.flag.startswith("-") and not row.command.startswith(exempt):
            by_flag.setdefault(row.flag, []).append(row)
    problems = []
    for flag, uses in sorted(by_flag.items()):
        meaning = meanings.get(flag)
        if meaning is None:
            texts = sorted({row.meaning for row in uses})
            if len(texts) > 1:
                problems.append(f"{flag}: {len(texts)} different help texts and no entry in FLAG_MEANINGS: "
                                + " | ".join(texts))
            continue
        for row in uses:
            if not row.meaning.lower().startswith(meaning.lower()):
                problems.append(f"{flag} in `{row.command}`: help {row.meaning!r} does not start with {meaning!r}")
    return problems


# --------------------------------------------------------------------------- running


def user_error_line(err: BaseException, command: str | None = None) -> str | None:
    """The one-line message for a failure the user caused, or ``None`` when ``err`` is a bug."""
    if isinstance(err, UserInputError):
        return str(err)
    if isinstance(err, ModuleNotFoundError):
        from toolkit_core.extras import missing_extra_message

        return missing_extra_message(err, command)
    if isinstance(err, OSError) and err.errno in USER_ERRNOS:
        names = [str(n) for n in (err.filename, err.filename2) if n is not None]
        reason = err.strerror or errno.errorcode.get(err.errno, "input/output error")
        return " ".join(": ".join([*names, reason]).split())
    if type(err).__name__ == "DecompressionBombError":  # PIL.Image; not imported here to keep the CLI light
        return " ".join(f"image too large to decode safely: {err}".split())
    return None


def run_cli(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> int:
    """Parse ``argv``, run the chosen handler and map user errors to exit code 2.

    The handler finds the command line it runs as ``args.command_line`` (``prog`` and the words, quoted
    as a shell would need them), for the records it writes, also when called in-process.
    """
    args = parser.parse_args(argv)
    words = list(sys.argv[1:] if argv is None else argv)
    args.command_line = shlex.join([parser.prog, *words])
    verbose = bool(getattr(args, "verbose", False))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for prog, old, new in getattr(args, DEPRECATED_DEST, ()):
        warn_deprecated(prog, old, new)
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
        command = " ".join([parser.prog, *(w for w in words[:2] if not w.startswith("-"))])
        line = user_error_line(err, command)
        if line is None:
            raise
        if verbose:
            traceback.print_exc()
        print(f"{parser.prog}: error: {line}", file=sys.stderr)
        return EXIT_USAGE
    return int(result or 0)

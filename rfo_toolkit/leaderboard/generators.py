"""The synthetic-data arms' generators: ``rfo-synth`` command lines run as the command-line tool they are.

A generator is configured as ``rfo-synth`` command templates (:data:`~.config.DEFAULT_GENERATOR_COMMANDS`),
so it is run as one: a child process of the same Python running the ``rfo-synth`` entry point, its
output (JSON manifests, progress) written to ``<out>_work/generator.log`` and never mixed with the
leaderboard's own output. Whether a sub-command exists is asked the same way (``rfo-synth <sub> --help``
exits 0 for a command the installation has and 2 for one it lacks), so this module needs nothing of the
command-line parser's internals.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rfo_bench.io.records import DetectionDataset
from rfo_toolkit.leaderboard.config import GeneratorEntry
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import remove_owned
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)

SYNTH_ENTRY_POINT = "import sys; from rfo_toolkit.cli import rfo_synth_main; sys.exit(rfo_synth_main(sys.argv[1:]))"
"""What the child process runs: the ``rfo-synth`` console script (``[project.scripts]``), with this Python."""

GENERATOR_LOG = "generator.log"
"""File (in the generator's work folder) receiving the commands' standard output and error."""


def _synth_command(argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-c", SYNTH_ENTRY_POINT, *argv]


def _child_environment() -> dict[str, str]:
    """This process's environment, with the checkout on ``PYTHONPATH`` (a source tree runs uninstalled)."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def synth_command_available(subcommand: Sequence[str]) -> bool:
    """Whether ``rfo-synth`` has the (nested) sub-command ``subcommand`` (e.g. ``["diffusion", "train"]``).

    Asked through the tool's own help: ``rfo-synth SUB... --help`` exits 0 when every word names a
    sub-command and 2 (argparse's "invalid choice") when one does not. The answer is kept for the life of
    the process (an installation does not change under a running benchmark).
    """
    return _ask_help(tuple(subcommand))


@functools.cache
def _ask_help(subcommand: tuple[str, ...]) -> bool:
    done = subprocess.run(_synth_command([*subcommand, "--help"]), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=_child_environment(), check=False)
    return done.returncode == 0


def synth_main(argv: Sequence[str], log: Path | None = None) -> int:
    """Run one ``rfo-synth`` command (a child process); its exit code.

    ``log``: file the command's standard output and error are appended to (default: discarded).
    """
    if log is None:
        return subprocess.run(_synth_command(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env=_child_environment(), check=False).returncode
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ rfo-synth {shlex.join(argv)}\n")
        handle.flush()
        return subprocess.run(_synth_command(argv), stdout=handle, stderr=subprocess.STDOUT,
                              env=_child_environment(), check=False).returncode


def _last_line(log: Path, code: int) -> str:
    """The last non-empty line a failed command wrote (its error message), else its exit code."""
    try:
        lines = [line.strip() for line in log.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError:
        lines = []
    lines = [line for line in lines if line and not line.startswith("$ rfo-synth ")]
    return lines[-1] if lines else f"exit code {code}"


def run_generator(
    entry: GeneratorEntry, *, out: Path, backgrounds: Path, train_json: Path | None = None,
    imgsz: int | None = None,
) -> DetectionDataset:
    """Run a generator's ``rfo-synth`` commands and read the COCO set the last one wrote to ``out``.

    A finished set (same filled-in commands) is reused. The commands' output goes to
    ``<out>_work/generator.log``. ``imgsz`` fills the ``{imgsz}`` placeholder (the films' side).

    Raises:
        RuntimeError: a command is not available, exits with an error, or no images were written (the
            message is what the leaderboard shows).
    """
    work = out.parent / f"{out.name}_work"
    paths: dict[str, object] = {"out": out, "work": work, "backgrounds": backgrounds,
                                "backgrounds_json": backgrounds / "backgrounds.json"}
    if train_json is not None:
        paths.update(train_json=train_json, train_dir=train_json.parent)
    if imgsz is not None:
        paths["imgsz"] = imgsz
    try:
        argvs = entry.argvs(**paths)
    except UserInputError as err:
        raise RuntimeError(str(err)) from None
    for argv in argvs:
        subcommand = [a for a in argv[:2] if not a.startswith("-")]
        if not synth_command_available(subcommand):
            raise RuntimeError(f"generator `rfo-synth {' '.join(subcommand)}` is not available in this installation")
    annotations = out / "annotations.json"
    stamp = out / ".generator.json"
    wanted = {"commands": argvs}
    if annotations.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        logger.info("reusing synthetic set %s", out)
        return read_generated_set(annotations, entry.name)
    for directory in (out, work):
        remove_owned(directory)
    work.mkdir(parents=True)
    log = work / GENERATOR_LOG
    start = time.perf_counter()
    for argv in argvs:
        logger.info("generating: rfo-synth %s (output: %s)", shlex.join(argv), log)
        code = synth_main(argv, log)
        if code != 0:
            raise RuntimeError(f"`rfo-synth {shlex.join(argv[:2])} ...` failed: {_last_line(log, code)}")
    if not annotations.is_file():
        raise RuntimeError(f"`rfo-synth {entry.name}` wrote no {annotations.name} in {out}")
    dataset = read_generated_set(annotations, entry.name)
    if not len(dataset):
        raise RuntimeError(f"`rfo-synth {entry.name}` wrote an empty dataset")
    atomic_write_bytes(stamp, json.dumps(wanted).encode("utf-8"))
    logger.info("generated %d %s images in %.1f s", len(dataset), entry.name, time.perf_counter() - start)
    return dataset


def read_generated_set(annotations: Path, name: str) -> DetectionDataset:
    """Read a generator's COCO file, checking that every image it lists exists.

    ``file_name`` entries are resolved against the json's folder, or against its ``images/`` folder when
    all of them are found there (the two layouts ``rfo-synth`` readers accept).

    Raises:
        RuntimeError: an image is missing under both roots (the arm is skipped with this message rather
            than failing in the middle of training).
    """
    from rfo_bench.io.coco import read_coco

    dataset = read_coco(annotations)

    def missing(root: Path) -> list[str]:
        return [r.file_name for r in dataset.images if not (root / r.file_name).is_file()]

    absent = missing(dataset.root)
    if not absent:
        return dataset
    if not missing(annotations.parent / "images"):
        return read_coco(annotations, root=annotations.parent / "images")
    raise RuntimeError(f"`rfo-synth {name}` listed images that do not exist, e.g. {dataset.root / absent[0]}")



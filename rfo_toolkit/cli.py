"""The command-line entry points ``vision-unlearn``, ``rfo-bench`` and ``rfo-synth``.

Each library registers its own sub-commands (``vision_unlearn.cli.register``, ``rfo_bench.cli.register``,
``synth.cli.register``); the applications above the libraries add theirs here: ``vision-unlearn demo``
and ``report`` (:mod:`rfo_toolkit.demo`), ``rfo-bench benchmark`` (:mod:`rfo_toolkit.leaderboard`) and
``rfo-bench report`` (:mod:`rfo_toolkit.report`). The parsers are built on demand, never at import.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from toolkit_core.cli_support import (
    add_command,
    add_deprecated_alias,
    add_runtime_options,
    add_seeds,
    make_parser,
    run_cli,
)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    import contextlib
    import dataclasses
    import shlex
    import sys

    from rfo_toolkit.leaderboard import (
        load_benchmark_config,
        run_benchmark,
        with_arms,
        with_models,
        with_seeds,
    )
    from toolkit_core.cli_support import set_threads

    set_threads(args.threads)
    config = load_benchmark_config(args.config)
    command = ["rfo-bench", "benchmark", "--config", args.config]
    if args.models:
        config = with_models(config, args.models)
        command += ["--models", args.models]
    if args.arms:
        config = with_arms(config, args.arms)
        command += ["--arms", args.arms]
    if args.seeds:
        config = with_seeds(config, list(args.seeds))
        command += ["--seeds", ",".join(str(s) for s in args.seeds)]
    if args.device:
        config = dataclasses.replace(config, device=args.device)
        command += ["--device", args.device]
    if args.out:
        command += ["--out", args.out]
    if args.threads:
        command += ["--threads", str(args.threads)]
    # stdout carries the leaderboard only: what the generators and trainers print goes to stderr
    with contextlib.redirect_stdout(sys.stderr):
        result = run_benchmark(config, out_dir=args.out, force=args.rerun, progress=not args.no_progress,
                               command=shlex.join(command), threads=args.threads)
    print(result.markdown_path.read_text(encoding="utf-8"))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from rfo_toolkit.report import rebuild_report

    print(rebuild_report(args.run_dir))
    return 0


def vision_unlearn_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The ``vision-unlearn`` parser; ``argv`` (when given) is what ``benchmark`` records as its command."""
    from rfo_toolkit.demo.commands import register as register_demo
    from vision_unlearn.cli import register

    parser, sub = make_parser(
        "vision-unlearn", "Machine unlearning for X-ray classifiers and detectors, with forgetting evaluation."
    )
    register_demo(sub)
    register(sub, argv)
    return parser


def rfo_bench_parser() -> argparse.ArgumentParser:
    """The ``rfo-bench`` parser."""
    from rfo_bench.cli import register

    parser, sub = make_parser("rfo-bench", "RFO chest X-ray benchmark: datasets, detectors and evaluation.")
    register(sub)
    cmd = add_command(sub, "benchmark", _cmd_benchmark,
                      "train models x data arms x seeds, evaluate each run and write a leaderboard",
                      description="Train models x data arms x seeds, evaluate each run and print the leaderboard "
                                  "(markdown) on stdout; progress and the generators' output go to stderr. "
                                  "Finished runs in --out are reused.")
    cmd.add_argument("--config", required=True, help="file of settings: benchmark YAML (see configs/benchmark_cpu.yaml)")
    cmd.add_argument("--out", default=None,
                     help="output folder (default: the config's out); a benchmark folder of the same config is resumed")
    cmd.add_argument("--models", default=None,
                     help="comma-separated subset of the config's model rows (labels as in the table) to run")
    cmd.add_argument("--arms", default=None,
                     help="comma-separated subset of the config's arms to run (e.g. real,real+physics)")
    add_seeds(cmd, "a subset of the config's seeds (default: all)")
    cmd.add_argument("--rerun", action="store_true", help="re-run finished runs instead of reusing them")
    add_deprecated_alias(cmd, "--force", "--rerun")
    add_runtime_options(cmd, device=None, device_help="cpu, cuda, cuda:N, mps or auto (default: the config's)",
                        threads_help="also the Ultralytics trainer's, which otherwise takes one fewer than the cores")
    cmd = add_command(sub, "report", _cmd_report,
                      "rebuild report.html from an `rfo-bench eval` directory or a demo run directory")
    cmd.add_argument("run_dir", help="directory holding report.json (eval) or */stage.json (demo)")
    return parser


def rfo_synth_parser() -> argparse.ArgumentParser:
    """The ``rfo-synth`` parser."""
    from synth.cli import build_parser

    return build_parser()


def vision_unlearn_main(argv: Sequence[str] | None = None) -> int:
    """``vision-unlearn``: exit 0 on success, 2 on a user error (one line), 1 on a finding."""
    return run_cli(vision_unlearn_parser(argv), argv)


def rfo_bench_main(argv: Sequence[str] | None = None) -> int:
    """``rfo-bench``: exit 0 on success, 2 on a user error (one line), 1 on a finding."""
    return run_cli(rfo_bench_parser(), argv)


def rfo_synth_main(argv: Sequence[str] | None = None) -> int:
    """``rfo-synth``: exit 0 on success, 2 on a user error (one line)."""
    return run_cli(rfo_synth_parser(), argv)

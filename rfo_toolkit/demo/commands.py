"""The ``demo`` and ``report`` sub-commands of ``vision-unlearn``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from toolkit_core.cli_support import add_command, add_deprecated_alias, add_runtime_options, set_threads


def _cmd_demo(args: argparse.Namespace) -> int:
    from rfo_bench.detectors.config import resolve_device
    from rfo_toolkit.demo.pipeline import DemoConfig, run_demo

    set_threads(args.threads)
    config = DemoConfig(
        out_dir=str(args.out), fast=args.fast, force=args.rerun, seed=args.seed,
        radiograph=args.radiograph, ct=args.ct, detector=demo_detector(args.detector),
        device=resolve_device(args.device), threads=args.threads,
    )
    result = run_demo(config)
    print(json.dumps(result, indent=2))
    return 0


def demo_detector(choice: str) -> str | None:
    """The detector folder of ``--detector`` (``None``: a YOLO trained from scratch).

    ``auto`` is the detector bundled with this installation when it holds one, else from scratch;
    ``shipped`` requires the bundled one; ``scratch`` always trains from scratch; anything else is a
    folder written by ``rfo-bench train --config``.

    Raises:
        UserInputError: ``shipped`` in an installation without the bundled detector.
    """
    from rfo_bench.detectors.bundled import bundled_detector, require_bundled_detector

    if choice == "scratch":
        return None
    if choice == "shipped":
        return str(require_bundled_detector("--detector"))
    if choice == "auto":
        bundled = bundled_detector()
        return None if bundled is None else str(bundled)
    return choice


def _cmd_report(args: argparse.Namespace) -> int:
    from rfo_toolkit.demo.pipeline import build_report

    paths = build_report(Path(args.run_dir))
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo`` and ``report`` to the ``vision-unlearn`` parser."""
    demo = add_command(
        sub, "demo", _cmd_demo,
        "run the main job on the embedded real data: synthesise, train, evaluate, unlearn, report",
    )
    demo.add_argument("--out", default="runs/demo",
                      help="output: run folder (a demo run there is resumed: finished stages are reused)")
    demo.add_argument("--fast", action="store_true", help="smaller data and shorter schedules")
    demo.add_argument("--rerun", action="store_true", help="re-run finished stages instead of reusing them")
    add_deprecated_alias(demo, "--force", "--rerun")
    demo.add_argument("--seed", type=int, default=0, help="random seed of every stage")
    demo.add_argument("--radiograph", default=None, help="chest radiograph (PNG/JPEG/DICOM); default: embedded")
    demo.add_argument("--ct", default=None, help="chest CT (NIfTI); default: embedded")
    demo.add_argument("--detector", default="auto",
                      help="the detector the demo evaluates and unlearns on tiles of films at its resolution: "
                           "'shipped' (the one bundled with the toolkit), a folder written by rfo-bench train "
                           "--config, or 'scratch' (a YOLO trained from scratch on small films); default 'auto': "
                           "the shipped one when this installation holds it, else scratch")
    add_runtime_options(demo, device="cpu", progress=False,
                        device_help="cpu, cuda, cuda:N, mps or auto (a GPU if present): every stage trains, "
                                    "unlearns and predicts there",
                        threads_help="every stage; fewer than the cores when another job holds some")
    report = add_command(sub, "report", _cmd_report, "rebuild report.html / report.md of a demo run directory")
    report.add_argument("run_dir", help="run directory written by `vision-unlearn demo`")

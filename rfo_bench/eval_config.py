"""What an evaluation is asked (:class:`EvalConfig`), what it returns (:class:`Evaluation`), and the
header that says what made a report (:func:`run_header`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.metrics import coco_eval
from rfo_bench.metrics.froc import FPS_THRESHOLDS, VARIANTS, FrocResult
from toolkit_core.errors import UserInputError

BOOTSTRAP_UNITS = ("auto", "image", "patient")
AUROC_POSITIVES = ("any", "critical")
HEADER_PACKAGES = ("rfo-toolkit", "numpy", "scipy", "pycocotools", "faster-coco-eval", "matplotlib")
"""Distributions whose versions the report header states."""


@dataclass(frozen=True, kw_only=True)
class EvalConfig:
    """Evaluation settings (keyword-only: ``EvalConfig(bootstrap=200, seed=1)``).

    Attributes:
        coco_backend: ``native`` (this package's matcher, bit-identical to pycocotools and faster),
            ``pycocotools`` or ``faster_coco_eval`` for the 12 COCO numbers. The bootstrap always uses
            the native per-image matching.
        froc_variant: ``reference`` (the object-CXR script, comparable with published numbers) or
            ``corrected``.
        fps_thresholds: FROC false-positive-per-image thresholds.
        bootstrap: number of bootstrap replicates (0 = no intervals).
        seed: bootstrap seed.
        ci_level: interval coverage (0.95 -> key ``ci95``).
        bootstrap_unit: ``auto`` (patients when every image has a patient id), ``image`` or ``patient``.
        auroc_positive: image label for AUROC: ``any`` RFO, or ``critical`` RFO only (then the image
            score is the maximum over detections of critical categories, or of unknown criticality).
    """

    coco_backend: str = "native"
    froc_variant: str = "reference"
    fps_thresholds: tuple[float, ...] = FPS_THRESHOLDS
    bootstrap: int = 1000
    seed: int = 0
    ci_level: float = 0.95
    bootstrap_unit: str = "auto"
    auroc_positive: str = "any"

    def __post_init__(self) -> None:
        if self.coco_backend not in coco_eval.BACKENDS:
            raise UserInputError("unknown COCO backend; expected " + ", ".join(coco_eval.BACKENDS),
                                 field="coco_backend", value=self.coco_backend)
        if self.froc_variant not in VARIANTS:
            raise UserInputError("unknown FROC variant; expected " + ", ".join(VARIANTS), field="froc_variant",
                                 value=self.froc_variant)
        if self.bootstrap_unit not in BOOTSTRAP_UNITS:
            raise UserInputError("unknown bootstrap unit; expected " + ", ".join(BOOTSTRAP_UNITS),
                                 field="bootstrap_unit", value=self.bootstrap_unit)
        if self.auroc_positive not in AUROC_POSITIVES:
            raise UserInputError("auroc_positive must be any or critical", field="auroc_positive",
                                 value=self.auroc_positive)
        if self.bootstrap < 0 or not 0 < self.ci_level < 1:
            raise UserInputError("bootstrap must be >= 0 and ci_level in (0, 1)", field="bootstrap",
                                 value=(self.bootstrap, self.ci_level))
        if list(self.fps_thresholds) != sorted(self.fps_thresholds) or min(self.fps_thresholds, default=0) <= 0:
            raise UserInputError("FROC thresholds must be positive and increasing", field="fps_thresholds",
                                 value=self.fps_thresholds)


@dataclass
class Evaluation:
    """Everything :func:`evaluate_detailed` computed: the report and the arrays behind the plots."""

    report: dict[str, Any]
    coco: coco_eval.CocoResult | None = None
    table: coco_eval.MatchTable | None = None
    arrays: coco_eval.CocoArrays | None = None
    froc: FrocResult | None = None
    froc_strata: dict[str, FrocResult] = field(default_factory=dict)
    froc_per_category: dict[str, FrocResult] = field(default_factory=dict)
    image_scores: np.ndarray | None = None
    replicates: dict[str, np.ndarray] = field(default_factory=dict)


def run_header(config: EvalConfig, command: str | None = None) -> dict[str, Any]:
    """What made a report: toolkit version, source commit, seed, bootstrap replicates, command, environment.

    ``command`` defaults to this process's command line (``rfo-bench eval --gt ...`` from the shell).
    """
    import shlex
    import sys

    from toolkit_core.records import environment

    env = environment(HEADER_PACKAGES)
    if command is None and sys.argv and sys.argv[0]:
        program = Path(sys.argv[0])
        # `python -m package` runs package/__main__.py: name the package, not the file
        words = ["python", "-m", program.parent.name] if program.name == "__main__.py" else [program.name]
        command = shlex.join([*words, *sys.argv[1:]])
    version = env.get("rfo-toolkit")
    if version in (None, "not installed"):
        from toolkit_core import __version__ as version
    return {"toolkit_version": version, "commit": env.get("commit"), "seed": config.seed,
            "bootstrap": config.bootstrap, "command": command, "environment": env}

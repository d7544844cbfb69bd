"""``rfo-bench benchmark``: models x data arms x seeds, evaluated, ranked and plotted.

One YAML file (see ``configs/benchmark_cpu.yaml``) fixes everything a leaderboard depends on: the
ground truth (``data.train`` / ``data.test``, or ``data.build`` to synthesise a held-out benchmark),
the models with their recipes, the data arms, the seeds, the generators' command lines and the
bootstrap. ``leaderboard.json`` records that configuration, the seeds, the file hashes of the data and
the library versions, so ``rfo-bench benchmark --config FILE`` regenerates the table.

Data arms (training data; the test set is always the same held-out real test split):

========================  ==========================================================
``real``                  the real training split
``real+physics``          real training split + physics-generated synthetic images
``real+diffusion``        real training split + diffusion-generated synthetic images
``synthetic_only``        the synthetic images only (generator: ``synthetic_only_from``)
========================  ==========================================================

Synthetic images are generated **only from training backgrounds**: the negative images (no
annotated object) of the real training split are written to ``<out>/backgrounds/train`` and that
directory is the only background source handed to a generator. The training and test splits must be
patient-disjoint (checked when both carry patient ids). An arm whose generator is not installed
(its ``rfo-synth`` sub-command is absent) or fails is skipped, and the leaderboard says why; it runs on
the next invocation once the generator exists.

A model row trains from scratch (whole images, or tiles with ``tiling``) or fine-tunes a recipe-trained
detector (``start: DIR``): its weights are checked against its record's SHA-256 before any work, its
runs train on the arm's films cut into its tiles and are evaluated sliced over whole test films, its
unseen classes are removed from every row's training and test boxes, and the data's class map must be
its own. ``data.build.pixel_mm`` renders the built benchmark at clinical resolution (``native`` or mm per
pixel). Every run states its compute, and a from-start row its start (recipe, weights SHA-256, the
start's own compute).

Every arm is compared with the first configured arm of the same model (and a ``start`` row's arms with
the start detector before any fine-tuning, the ``none (no fine-tuning)`` row): the mean over seeds of the
per-seed differences and a 95 % paired interval from a two-level bootstrap over seeds and test patients
(:mod:`.comparison`); an arm is called higher or lower only where that interval excludes 0.

Every finished run keeps ``metrics.json`` in its directory and is reused on the next invocation
when its resolved configuration is unchanged (``--force`` re-runs it), so an interrupted benchmark
resumes where it stopped.

Modules, one job each: :mod:`.config` (the YAML definition), :mod:`.data` (ground truth, held-out
tiles, background pools), :mod:`.generators` (the ``rfo-synth`` commands), :mod:`.runs` (train,
predict, evaluate one cell), :mod:`.summary` (seeds to rows), :mod:`.comparison` (paired differences between arms), :mod:`.markdown` and :mod:`.plots` (the
table and the FROC figure) and :mod:`.benchmark` (the road through them).
"""

from __future__ import annotations

from rfo_toolkit.leaderboard.benchmark import BENCHMARK_TOOL, BenchmarkResult, run_benchmark
from rfo_toolkit.leaderboard.config import (
    ARM_GENERATORS,
    ARMS,
    DEFAULT_GENERATOR_COMMANDS,
    METRICS,
    BenchmarkConfig,
    BuildEntry,
    GeneratorEntry,
    ModelEntry,
    load_benchmark_config,
    parse_benchmark_config,
    with_arms,
    with_models,
    with_seeds,
)
from rfo_toolkit.leaderboard.data import (
    build_film_px,
    build_heldout_benchmark,
    check_patient_disjoint,
    heldout_tiles,
    training_backgrounds,
)
from rfo_toolkit.leaderboard.generators import (
    read_generated_set,
    run_generator,
    synth_command_available,
    synth_main,
)
from rfo_toolkit.leaderboard.markdown import render_markdown
from rfo_toolkit.leaderboard.plots import froc_figure, plot_froc
from rfo_toolkit.leaderboard.runs import RunMetrics, RunOutcome, evaluate_run, metrics_from_report
from rfo_toolkit.leaderboard.summary import aggregate, summarize_seeds

__all__ = [
    "ARMS", "ARM_GENERATORS", "BENCHMARK_TOOL", "DEFAULT_GENERATOR_COMMANDS", "METRICS", "BenchmarkConfig",
    "BenchmarkResult", "BuildEntry", "GeneratorEntry", "ModelEntry", "RunMetrics", "RunOutcome", "aggregate",
    "build_film_px", "build_heldout_benchmark", "check_patient_disjoint", "evaluate_run", "froc_figure", "heldout_tiles",
    "load_benchmark_config", "metrics_from_report", "parse_benchmark_config", "plot_froc", "read_generated_set",
    "render_markdown", "run_benchmark", "run_generator", "summarize_seeds", "synth_command_available", "synth_main",
    "training_backgrounds", "with_arms", "with_models", "with_seeds",
]

"""The decisive test of the diffusion generator: does it help a detector on held-out films?

Two training sets of equal size, trained with one detector recipe on the same CPU budget and scored on
the same held-out physics films:

* ``physics``: ``N`` physics radiographs (``rfo-synth physics``);
* ``physics+diffusion``: the first ``N/2`` of those films and ``N/2`` object-free physics films into
  which ``rfo-synth diffusion sample`` inpaints objects (the generator draws every object and its label);
* ``physics+refined``: the same ``N`` physics films, the second half refined by ``rfo-synth diffusion
  refine`` (SDEdit with a denoiser of the real film's own crops, :mod:`synth.diffusion.refine`; labels
  unchanged), ``t0`` chosen on validation renders of their own seed by the label-fidelity rule;
* ``physics_half`` (optional): the first ``N/2`` physics films alone, what the extra half buys.

Per seed the physics films, the backgrounds, the sampling noise and the detector's initialisation
differ; the test films and the generator (trained once, on physics films of its own seed) are shared.
Neither arm, nor the generator, sees the test seed.

Two paired 95 % intervals of each ``arm - physics``: over seeds (Student t of the per-seed
differences, :func:`vision_unlearn.metrics.paired.paired_interval`) and over test images (the
evaluator's percentile bootstrap; every cell is evaluated with the same bootstrap seed on the same test
set, so the ``b``-th replicate resamples the same films in every cell and the differences are paired,
:func:`paired_bootstrap_interval`). An arm is called better only where both intervals exclude 0.

Every finished cell keeps ``cell.json`` (metrics, key) and ``replicates.npz`` under its run folder and
is reused when its key is unchanged, so an interrupted run resumes at the next cell.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit_core.utils import atomic_write_bytes, sha256_text

logger = logging.getLogger(__name__)

ARMS = ("physics", "physics+diffusion", "physics+refined", "physics_half")
"""Training-set arms, in table order; the first is the reference of every difference."""

PAIRED_METRICS = ("AP50", "FROC")
"""Metrics with a paired interval (their bootstrap replicates are kept per cell)."""


@dataclass(frozen=True)
class ComparisonConfig:
    """Everything the comparison's result depends on (fixed before any test film was scored).

    Attributes:
        n_train: training films per arm (N; the mixed arm takes N/2 physics + N/2 diffusion).
        n_test: held-out physics test films.
        n_generator_train: physics films the diffusion generator trains on.
        render_px: side of the rendered films.
        classes: RFO classes rendered and generated.
        test_seed: physics seed of the test films.
        generator_data_seed: physics seed of the generator's training films.
        physics_seed_base: physics seed of seed ``s``'s training films is ``physics_seed_base + s``.
        background_seed_base: object-free backgrounds of seed ``s`` use ``background_seed_base + s``.
        generator_steps: diffusion training steps (the ``cpu`` preset).
        generator_seed: diffusion training seed.
        scale_groups: ``rfo-synth diffusion train --scale-groups``: mm per patch pixel of the scale groups
            (objects at their true mm size), or ``fit`` (each object fitted to its patch, the geometry of
            generators trained before scale groups).
        sample_steps: DDIM steps when sampling.
        guidance: classifier-free guidance scale.
        objects_per_image: objects inpainted into each background (the physics films hold 1.3 labelled
            objects on average: 1 is the nearest whole number).
        detector: registered detector name.
        epochs, imgsz, batch_size, lr, optimizer, warmup_iters, lr_gamma, mosaic: the detector recipe.
        bootstrap: bootstrap replicates over test images.
        bootstrap_seed: seed of the replicates (the same in every cell: the pairing).
        half_arm: also train the ``physics_half`` arm.
        refine_arm: train the ``physics+refined`` arm.
        refine_train_steps: the refiner's optimisation steps (batch 16 crops of 64 px of the real film).
        refine_seed: seed of the refiner's training, of the t0 choice, and (plus ``s``) of seed ``s``'s refinement.
        refine_val_n, refine_val_seed: the validation renders t0 is chosen on (a physics seed of their own).
        refine_t0_grid, refine_keep, refine_coverage, refine_min_contrast: the t0 rule
            (:class:`synth.diffusion.refine.T0Rule`).
        refine_steps, refine_margin_px, refine_context_px: the refinement (:class:`synth.diffusion.refine.RefineConfig`).
        refine_fallback_t0: the t0 the arm refines with when the rule keeps no t0 above 0 (fixed in advance:
            the grid's smallest value), so that the detector still shows what the gentlest refinement
            does to it; the page then says the rule rejected it.
        threads: torch / subprocess CPU threads.
    """

    n_train: int = 300
    n_test: int = 150
    n_generator_train: int = 400
    render_px: int = 256
    classes: tuple[str, ...] = ("sponge", "clamp", "blade", "chain")
    test_seed: int = 1000
    generator_data_seed: int = 300
    physics_seed_base: int = 100
    background_seed_base: int = 200
    generator_steps: int = 800
    generator_seed: int = 0
    scale_groups: str = "0.75,2,5"
    sample_steps: int = 25
    guidance: float = 1.0
    objects_per_image: int = 1
    detector: str = "yolov8n"
    epochs: int = 60
    imgsz: int = 128
    batch_size: int = 16
    lr: float = 0.002
    optimizer: str = "adamw"
    warmup_iters: int = 0
    lr_gamma: float = 0.05
    mosaic: float = 0.0
    bootstrap: int = 1000
    bootstrap_seed: int = 0
    half_arm: bool = False
    refine_arm: bool = True
    refine_train_steps: int = 600
    refine_seed: int = 0
    refine_val_n: int = 40
    refine_val_seed: int = 400
    refine_t0_grid: tuple[float, ...] = (0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5)
    refine_keep: float = 0.85
    refine_coverage: float = 0.9
    refine_min_contrast: float = 0.01
    refine_steps: int = 25
    refine_margin_px: int = 3
    refine_context_px: int = 16
    refine_fallback_t0: float = 0.05
    threads: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_train < 2 or self.n_train % 2:
            raise ValueError(f"n_train must be an even number >= 2, got {self.n_train}")
        if self.bootstrap < 0:
            raise ValueError(f"bootstrap must be >= 0, got {self.bootstrap}")

    @property
    def arms(self) -> tuple[str, ...]:
        return tuple(a for a in ARMS if (a != "physics+refined" or self.refine_arm)
                     and (a != "physics_half" or self.half_arm))

    def recipe_fields(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "imgsz": self.imgsz, "batch_size": self.batch_size, "lr": self.lr,
                "optimizer": self.optimizer, "warmup_iters": self.warmup_iters, "lr_gamma": self.lr_gamma,
                "mosaic": self.mosaic}


# ----------------------------------------------------------------------------------------------- pure math


def paired_bootstrap_interval(treatment: np.ndarray, reference: np.ndarray, level: float = 0.95) -> dict[str, float]:
    """Percentile interval of the mean paired difference over seeds, from per-cell bootstrap replicates.

    Replicate ``b`` of every cell resampled the same test images, so ``treatment[s, b] - reference[s, b]``
    is a paired difference; its mean over seeds per replicate is one draw of the seed-averaged
    difference. Replicates undefined in any seed (NaN) are left out and counted.

    Args:
        treatment, reference: ``(S, B)`` replicates of one metric (S seeds, B replicates).
        level: coverage.

    Returns:
        ``{"low", "high", "replicates_used"}`` (bounds NaN when no replicate is usable).

    Raises:
        ValueError: shapes differ or are not 2-D, or ``level`` outside ``(0, 1)``.
    """
    a = np.asarray(treatment, dtype=np.float64)
    b = np.asarray(reference, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need (seeds, replicates) arrays of one shape, got {a.shape} and {b.shape}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    from rfo_bench.metrics.bootstrap import percentile_interval

    found = percentile_interval((a - b).mean(axis=0), level)  # the evaluator's own interval rule
    return {"low": found.low, "high": found.high, "replicates_used": found.replicates_used}


def verdict(seed_interval: Mapping[str, float], image_interval: Mapping[str, float]) -> str:
    """``better``, ``worse`` or ``no difference shown``: a side wins only where both intervals exclude 0 on it."""
    bounds = [(seed_interval["low"], seed_interval["high"]), (image_interval["low"], image_interval["high"])]
    if any(not (math.isfinite(lo) and math.isfinite(hi)) for lo, hi in bounds):
        return "no difference shown"
    if all(lo > 0 for lo, _ in bounds):
        return "better"
    if all(hi < 0 for _, hi in bounds):
        return "worse"
    return "no difference shown"


def compare_arms(cells: Sequence[Mapping[str, Any]], replicates: Mapping[tuple[str, int], Mapping[str, np.ndarray]],
                 treatment: str, reference: str, metrics: Sequence[str] = PAIRED_METRICS,
                 level: float = 0.95) -> dict[str, dict[str, Any]]:
    """Paired comparison of two arms over the seeds both finished.

    Args:
        cells: finished cells, each with ``arm``, ``seed`` and ``values`` (metric -> value).
        replicates: ``(arm, seed)`` -> metric -> ``(B,)`` bootstrap replicates.
        treatment, reference: arm names.
        metrics: metrics to compare.
        level: coverage of both intervals.

    Returns:
        metric -> ``{"seeds", "per_seed", "mean", "over_seeds": {...}, "over_images": {...}, "verdict"}``.
    """
    from vision_unlearn.metrics.paired import paired_interval

    by_key = {(c["arm"], c["seed"]): c for c in cells}
    seeds = sorted(s for (arm, s) in by_key if arm == treatment and (reference, s) in by_key)
    out: dict[str, dict[str, Any]] = {}
    for metric in metrics:
        t = [by_key[(treatment, s)]["values"][metric] for s in seeds]
        r = [by_key[(reference, s)]["values"][metric] for s in seeds]
        usable = [i for i in range(len(seeds)) if math.isfinite(t[i]) and math.isfinite(r[i])]
        if usable:
            over_seeds = paired_interval([t[i] for i in usable], [r[i] for i in usable], level)
        else:
            over_seeds = {"mean": math.nan, "low": math.nan, "high": math.nan, "n": 0}
        have = [s for s in seeds if metric in replicates.get((treatment, s), {}) and metric in replicates.get((reference, s), {})]
        if have and len(have) == len(seeds):
            over_images = paired_bootstrap_interval(np.stack([replicates[(treatment, s)][metric] for s in seeds]),
                                                    np.stack([replicates[(reference, s)][metric] for s in seeds]), level)
        else:
            over_images = {"low": math.nan, "high": math.nan, "replicates_used": 0}
        out[metric] = {"seeds": seeds, "per_seed": [ti - ri for ti, ri in zip(t, r, strict=True)],
                       "mean": over_seeds["mean"], "over_seeds": over_seeds, "over_images": over_images,
                       "verdict": verdict(over_seeds, over_images)}
    return out


GENERATOR_FIELDS = ("n_generator_train", "generator_data_seed", "background_seed_base", "generator_steps",
                    "generator_seed", "scale_groups", "sample_steps", "guidance", "objects_per_image")
"""Config fields only the ``physics+diffusion`` arm depends on."""

REFINE_PREFIX = "refine_"
"""Config fields named ``refine_*`` only the ``physics+refined`` arm depends on."""

LATER_FIELDS = {"scale_groups": "fit"}
"""Fields added after cells were first cached -> the value those cells were made with: left out of the
key while they hold that value, so the cached cells keep their keys."""


def seed_cell_key(config: ComparisonConfig, arm: str, seed: int) -> str:
    """Hash of what one (arm, seed) cell depends on (the cache key of its result).

    Fields that cannot change the cell are left out (``half_arm``; the generator's fields for the
    physics-only arms), so adding an arm or retraining the generator reuses the physics cells.
    """
    fields = {k: v for k, v in asdict(config).items()
              if k != "half_arm" and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
    if arm != "physics+diffusion":
        fields = {k: v for k, v in fields.items() if k not in GENERATOR_FIELDS}
    if arm != "physics+refined":
        fields = {k: v for k, v in fields.items() if not k.startswith(REFINE_PREFIX)}
    else:
        fields = {k: v for k, v in fields.items() if k not in GENERATOR_FIELDS}
    return sha256_text(json.dumps({"arm": arm, "seed": seed, "config": fields}, sort_keys=True, default=str))


# --------------------------------------------------------------------------------------------- the pipeline


@dataclass
class Ledger:
    """Wall and CPU seconds per step (child processes' CPU included), summed over every invocation that
    worked in the same folder: kept in ``path`` after each step, so a resumed run adds to it."""

    path: Path | None = None
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> Ledger:
        seconds = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return cls(path=path, seconds=seconds)

    def timed(self, name: str, step: Callable[[], Any]) -> Any:
        wall, cpu = time.perf_counter(), _cpu_seconds()
        try:
            return step()
        finally:
            entry = self.seconds.setdefault(name, {"wall_s": 0.0, "cpu_s": 0.0})
            entry["wall_s"] += time.perf_counter() - wall
            entry["cpu_s"] += _cpu_seconds() - cpu
            if self.path is not None:
                atomic_write_bytes(self.path, json.dumps(self.seconds, indent=2).encode("utf-8"))


def logged_training_seconds(ckpt: Path) -> float | None:
    """Wall seconds between the first and last time stamp of a diffusion checkpoint's ``train_log.jsonl``."""
    log = ckpt / "train_log.jsonl"
    if not log.is_file():
        return None
    stamps = [entry["time"] for entry in map(json.loads, log.read_text(encoding="utf-8").splitlines()) if "time" in entry]
    return stamps[-1] - stamps[0] if len(stamps) > 1 else None


def _cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def command_text(repo: Path, argv: Sequence[str]) -> str:
    """``rfo-synth ARGV`` with paths inside ``repo`` written relative to it (as run from the repository root)."""
    return "rfo-synth " + " ".join(argv).replace(str(repo) + "/", "")


def _synth(repo: Path, argv: Sequence[str], commands: list[str]) -> None:
    exe = repo / ".venv" / "bin" / "rfo-synth"
    cmd = [str(exe) if exe.is_file() else sys.executable, *([] if exe.is_file() else ["-m", "rfo_toolkit.cli"]), *argv]
    commands.append(command_text(repo, argv))
    logger.info("$ %s", commands[-1])
    subprocess.run(cmd, check=True, cwd=repo)


def _synth_step(repo: Path, argv: Sequence[str], *, finished: bool, label: str, ledger: Ledger,
                commands: list[str]) -> None:
    """One ``rfo-synth`` step, timed into ``ledger`` under ``label``; listed as reused when ``finished``."""
    if finished:
        commands.append(command_text(repo, argv) + "  # reused")
        return
    ledger.timed(label, lambda: _synth(repo, argv, commands))


def physics_argv(config: ComparisonConfig, out: Path, n: int, seed: int, negative_fraction: float | None = None
                 ) -> list[str]:
    """``rfo-synth physics`` arguments of one rendered set."""
    argv = ["physics", "--n", str(n), "--imgsz", str(config.render_px), "--seed", str(seed), "--classes",
            *config.classes, "--out", str(out), "--threads", str(config.threads), "--no-progress", "--overwrite"]
    if negative_fraction is not None:
        argv += ["--negative-fraction", str(negative_fraction)]
    return argv


def build_data(repo: Path, work: Path, config: ComparisonConfig, seeds: Sequence[int], ledger: Ledger,
               commands: list[str]) -> dict[str, Path]:
    """Render (or reuse) the test films, the generator's films, and per seed the training films and backgrounds."""
    sets: dict[str, tuple[int, int, float | None]] = {
        "test": (config.n_test, config.test_seed, None),
        "generator_train": (config.n_generator_train, config.generator_data_seed, 0.0),
    }
    if config.refine_arm:
        sets["refine_val"] = (config.refine_val_n, config.refine_val_seed, None)
    for s in seeds:
        sets[f"physics_s{s}"] = (config.n_train, config.physics_seed_base + s, None)
        sets[f"backgrounds_s{s}"] = (config.n_train // 2, config.background_seed_base + s, 1.0)
    used = {seed for _, seed, _ in sets.values()}
    if len(used) != len(sets):
        raise ValueError("every rendered set needs its own physics seed (test, generator and per-seed seeds collide)")
    paths = {}
    for name, (n, seed, negative) in sets.items():
        out = work / name
        paths[name] = out
        argv = physics_argv(config, out, n, seed, negative)
        _synth_step(repo, argv, finished=(out / "annotations.json").is_file(), label="render physics films",
                    ledger=ledger, commands=commands)
    return paths


def train_generator(repo: Path, work: Path, data: Path, config: ComparisonConfig, ledger: Ledger,
                    commands: list[str]) -> Path:
    """Train (or resume, or reuse) the diffusion generator on ``data``."""
    ckpt = work / "generator"
    argv = ["diffusion", "train", "--data", str(data), "--out", str(ckpt), "--steps", str(config.generator_steps),
            "--save-every", "100", "--seed", str(config.generator_seed), "--scale-groups", config.scale_groups,
            "--threads", str(config.threads), "--no-progress"]
    _synth_step(repo, argv, finished=False, label="train diffusion generator", ledger=ledger, commands=commands)
    return ckpt  # the train command itself resumes or returns at once when finished


def sample_films(repo: Path, work: Path, ckpt: Path, backgrounds: Path, seed: int, config: ComparisonConfig,
                 ledger: Ledger, commands: list[str]) -> Path:
    """Inpaint objects into seed ``seed``'s backgrounds (reused when written before)."""
    out = work / f"diffusion_s{seed}"
    argv = ["diffusion", "sample", "--ckpt", str(ckpt), "--backgrounds", str(backgrounds / "images"), "--out", str(out),
            "--n", str(config.n_train // 2), "--objects-per-image", str(config.objects_per_image), "--steps",
            str(config.sample_steps), "--guidance", str(config.guidance), "--seed", str(seed), "--threads",
            str(config.threads), "--no-progress", "--overwrite"]
    _synth_step(repo, argv, finished=(out / "manifest.json").is_file(),  # written last
                label="sample diffusion films", ledger=ledger, commands=commands)
    return out


def fit_refiner(repo: Path, work: Path, val_data: Path, config: ComparisonConfig, ledger: Ledger,
                commands: list[str]) -> Path:
    """Train the refiner on the real film and choose its t0 on the validation renders (reused once written)."""
    out = work / "refiner"
    argv = ["diffusion", "fit-refiner", "--out", str(out), "--imgsz", str(config.render_px), "--steps",
            str(config.refine_train_steps), "--seed", str(config.refine_seed), "--val-data", str(val_data),
            "--t0-grid", ",".join(f"{v:g}" for v in config.refine_t0_grid), "--keep", str(config.refine_keep),
            "--coverage", str(config.refine_coverage), "--min-contrast", str(config.refine_min_contrast),
            "--val-steps", str(config.refine_steps), "--region-margin", str(config.refine_margin_px),
            "--context-px", str(config.refine_context_px), "--threads", str(config.threads), "--no-progress",
            "--overwrite"]
    record = out / "refiner.json"
    finished = record.is_file() and "t0_selection" in json.loads(record.read_text(encoding="utf-8"))
    _synth_step(repo, argv, finished=finished, label="fit refiner", ledger=ledger, commands=commands)
    return out


def refine_films(repo: Path, work: Path, refiner: Path, physics: Path, seed: int, config: ComparisonConfig,
                 ledger: Ledger, commands: list[str]) -> Path:
    """Refine the second half of seed ``seed``'s physics films at :func:`arm_t0` (reused when written before)."""
    out = work / f"refined_s{seed}"
    argv = ["diffusion", "refine", "--refiner", str(refiner), "--data", str(physics), "--out", str(out),
            "--images", f"{config.n_train // 2}:{config.n_train}", "--t0", f"{arm_t0(refiner, config)[0]:g}",
            "--steps", str(config.refine_steps), "--region-margin", str(config.refine_margin_px), "--context-px",
            str(config.refine_context_px), "--seed", str(config.refine_seed + seed), "--threads",
            str(config.threads), "--no-progress", "--overwrite"]
    _synth_step(repo, argv, finished=(out / "manifest.json").is_file(),  # written last
                label="refine physics films", ledger=ledger, commands=commands)
    return out


def arm_t0(refiner: Path, config: ComparisonConfig) -> tuple[float, bool]:
    """``(t0 the refined arm uses, whether the label rule accepted it)``: the rule's choice, or
    ``refine_fallback_t0`` when the rule keeps none above 0."""
    chosen = json.loads((refiner / "refiner.json").read_text(encoding="utf-8")).get("t0") or 0.0
    return (float(chosen), True) if chosen > 0 else (float(config.refine_fallback_t0), False)


def arm_training_sets(arm: str, physics, diffusion, n_train: int, refined=None) -> list:
    """The training datasets of ``arm`` (equal image count for the compared arms).

    ``refined`` holds the refined second half of ``physics`` (its images ``n_train // 2`` on).
    """
    half = physics.with_images(physics.images[: n_train // 2])
    if arm == "physics":
        return [physics.with_images(physics.images[:n_train])]
    if arm == "physics+diffusion":
        return [half, diffusion.with_images(diffusion.images[: n_train - n_train // 2])]
    if arm == "physics+refined":
        if refined is None:
            raise ValueError("the physics+refined arm needs the refined films")
        return [half, refined.with_images(refined.images[: n_train - n_train // 2])]
    if arm == "physics_half":
        return [half]
    raise ValueError(f"unknown arm {arm!r}; known: {', '.join(ARMS)}")


def run_cell(arm: str, seed: int, train_sets: Sequence[Any], test, config: ComparisonConfig, run_dir: Path,
             ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Train, predict and evaluate one (arm, seed) cell, or reuse its finished result."""
    from rfo_bench.detectors.api import load_detector, train_detector
    from rfo_bench.detectors.config import TrainConfig, recipe_with_overrides
    from rfo_bench.detectors.predict import (
        CLASSIFICATION_CSV,
        PREDICTIONS_JSON,
        predict_dataset,
        write_predictions,
    )
    from rfo_bench.evaluate import EvalConfig, evaluate_detailed, write_report
    from rfo_bench.predictions import read_predictions
    from rfo_toolkit.leaderboard.runs import metrics_from_report

    key = seed_cell_key(config, arm, seed)
    cell_file, reps_file = run_dir / "cell.json", run_dir / "replicates.npz"
    if cell_file.is_file() and reps_file.is_file():
        saved = json.loads(cell_file.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            logger.info("reusing finished cell %s", run_dir)
            with np.load(reps_file) as stored:
                return saved["cell"], {k: stored[k] for k in stored.files}
    recipe = recipe_with_overrides("cpu-tiny", config.recipe_fields())
    train_config = TrainConfig(model=config.detector, recipe=recipe, seed=seed)
    trained = train_detector(train_config, train_sets, run_dir / "model", progress=False)
    detector = load_detector(trained.run_dir)
    predictions = predict_dataset(detector, test, progress=False)
    write_predictions(predictions, detector.categories, run_dir / "predictions",
                      coco_category_ids={c.id for c in test.categories})
    preds = read_predictions(run_dir / "predictions" / PREDICTIONS_JSON, test,
                             classification=run_dir / "predictions" / CLASSIFICATION_CSV)
    evaluation = evaluate_detailed(test, preds, EvalConfig(bootstrap=config.bootstrap, seed=config.bootstrap_seed,
                                                           auroc_positive="critical"))
    write_report(evaluation, run_dir / "eval", test, preds, plots=False)
    metrics = metrics_from_report(evaluation.report)
    per_class = {name: entry.get("AP50") for name, entry in (evaluation.report.get("per_category") or {}).items()}
    compute = trained.record.get("compute") or {}
    cell = {"arm": arm, "seed": seed, "values": metrics.values, "ci95": metrics.intervals,
            "per_class_AP50": per_class, "train_images": trained.record["train_images"],
            "train_objects": trained.record["train_objects"], "train_seconds": trained.train_seconds,
            "train_cpu_seconds": compute.get("cpu_seconds", compute.get("process_cpu_seconds")),
            "test_images": len(test), "run_dir": str(run_dir)}
    reps = {m: np.asarray(evaluation.replicates[src], dtype=np.float64)
            for m, src in (("AP50", "AP50"), ("FROC", "froc")) if src in evaluation.replicates}
    np.savez(reps_file, **reps)
    from toolkit_core.records import jsonable

    atomic_write_bytes(cell_file, json.dumps({"key": key, "cell": jsonable(cell)}, indent=2).encode("utf-8"))
    return jsonable(cell), reps


def run_comparison(repo: Path, work: Path, config: ComparisonConfig, seeds: Sequence[int]) -> dict[str, Any]:
    """The whole comparison: data, generator, samples, every (arm, seed) cell, the paired intervals.

    Returns:
        ``{"config", "seeds", "cells", "comparisons", "sets", "commands", "compute"}`` (also written to
        ``work/comparison.json``).
    """
    from rfo_bench.io.coco import read_coco
    from rfo_toolkit.leaderboard.generators import read_generated_set

    work.mkdir(parents=True, exist_ok=True)
    ledger, commands = Ledger.load(work / "compute.json"), []
    data = build_data(repo, work, config, seeds, ledger, commands)
    ckpt = train_generator(repo, work, data["generator_train"], config, ledger, commands)
    refiner = fit_refiner(repo, work, data["refine_val"], config, ledger, commands) if config.refine_arm else None
    test = read_coco(data["test"] / "annotations.json")
    cells, replicates, sets = [], {}, {"test": _describe(test)}
    sets["generator_train"] = _describe(read_coco(data["generator_train"] / "annotations.json"))
    for seed in seeds:
        diffusion_dir = sample_films(repo, work, ckpt, data[f"backgrounds_s{seed}"], seed, config, ledger, commands)
        physics = read_coco(data[f"physics_s{seed}"] / "annotations.json")
        diffusion = read_generated_set(diffusion_dir / "annotations.json", "diffusion sample")
        refined = None
        if refiner is not None:
            refined_dir = refine_films(repo, work, refiner, data[f"physics_s{seed}"], seed, config, ledger, commands)
            refined = read_coco(refined_dir / "annotations.json")
        for arm in config.arms:
            train_sets = arm_training_sets(arm, physics, diffusion, config.n_train, refined)
            sets[f"{arm} seed {seed}"] = {"images": sum(len(d) for d in train_sets),
                                          "objects": sum(len(r.objects) for d in train_sets for r in d.images)}
            cell, reps = ledger.timed(f"detector {arm}", lambda arm=arm, seed=seed, train_sets=train_sets: run_cell(
                arm, seed, train_sets, test, config, work / "cells" / f"{_slug(arm)}_s{seed}"))
            cells.append(cell)
            replicates[(arm, seed)] = reps
    comparisons = {f"{arm} - physics": compare_arms(cells, replicates, arm, "physics")
                   for arm in config.arms[1:]}
    result = {"config": asdict(config), "arms": list(config.arms), "seeds": list(seeds), "cells": cells,
              "comparisons": comparisons, "sets": sets, "commands": commands, "compute": ledger.seconds,
              "generator_train_logged_s": logged_training_seconds(ckpt),
              "refiner": None if refiner is None else {**_refiner_summary(refiner),
                                                       "arm_t0": arm_t0(refiner, config)}}
    from toolkit_core.records import jsonable

    atomic_write_bytes(work / "comparison.json", json.dumps(jsonable(result), indent=2).encode("utf-8"))
    return jsonable(result)


def _refiner_summary(refiner: Path) -> dict[str, Any]:
    record = json.loads((refiner / "refiner.json").read_text(encoding="utf-8"))
    return {k: record.get(k) for k in ("config", "film", "crop_windows", "step", "loss_first_50", "loss_last_50",
                                       "train_seconds", "parameters", "t0", "t0_selection")}


def _describe(dataset) -> dict[str, int]:
    return {"images": len(dataset), "objects": sum(len(r.objects) for r in dataset.images)}


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in text)

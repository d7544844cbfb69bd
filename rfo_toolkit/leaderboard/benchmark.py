"""``run_benchmark``: every (model, arm, seed) of a configuration, then the leaderboard files.

The road: read the ground truth (or build the held-out benchmark) -> write the training backgrounds
-> run the generators -> per start detector predict and evaluate it as it is (the do-nothing row) -> per
arm and model and seed train, predict and evaluate (reusing finished cells) -> aggregate over seeds ->
paired differences between arms (:mod:`.comparison`) -> write ``leaderboard.json``, ``leaderboard.md``,
``froc.png`` and ``config.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rfo_bench.detectors.shipped import DetectorStart
from rfo_bench.io.records import DetectionDataset
from rfo_toolkit.leaderboard.comparison import Cell, compare_cells, comparison_pairs
from rfo_toolkit.leaderboard.config import ARM_GENERATORS, METRICS, BenchmarkConfig
from rfo_toolkit.leaderboard.data import (
    build_film_px,
    build_heldout_benchmark,
    check_patient_disjoint,
    training_backgrounds,
)
from rfo_toolkit.leaderboard.generators import run_generator
from rfo_toolkit.leaderboard.markdown import render_markdown
from rfo_toolkit.leaderboard.plots import plot_froc
from rfo_toolkit.leaderboard.runs import (
    EVALUATION_SEED,
    NO_FINE_TUNING,
    REPLICATES_FILE,
    RunOutcome,
    outcome_to_json,
    read_replicates,
    row_slicing,
    run_one,
    run_start_baseline,
    slug,
    start_fingerprint,
    start_summary,
)
from rfo_toolkit.leaderboard.summary import aggregate
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import claim_output_dir, release_output_dir
from toolkit_core.records import environment, jsonable
from toolkit_core.utils import atomic_write_bytes, sha256_file

logger = logging.getLogger(__name__)

BENCHMARK_TOOL = "rfo-bench benchmark"
"""The tool name recorded in the benchmark output folder's ownership marker."""

RECORDED_PACKAGES = ("rfo-toolkit", "numpy", "torch", "torchvision", "timm", "ultralytics", "albumentations")
"""Distributions whose versions ``leaderboard.json`` records (with Python, platform and source commit)."""


@dataclass
class _Notes:
    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        logger.warning("%s", text)
        self.lines.append(text)


@dataclass(frozen=True)
class BenchmarkResult:
    """Files written by :func:`run_benchmark` and the summary they hold."""

    out_dir: Path
    markdown_path: Path
    json_path: Path
    plot_path: Path | None
    summary: dict[str, Any]



def _arm_training_sets(
    arm: str, config: BenchmarkConfig, real_train: DetectionDataset, synthetic: dict[str, DetectionDataset | str]
) -> list[DetectionDataset] | str:
    """Training datasets of an arm, or the reason it is skipped."""
    needed = ARM_GENERATORS.get(arm, (config.synthetic_only_from,))
    sets = [] if arm == "synthetic_only" else [real_train]
    for name in needed:
        got = synthetic.get(name)
        if got is None:
            return f"generator `{name}` was not configured"
        if isinstance(got, str):
            return got
        sets.append(got)
    return sets


def _unseen_classes(config: BenchmarkConfig) -> tuple[str, ...]:
    """Classes some start detector never saw, in config order (removed from every row's data and test)."""
    names: list[str] = []
    for entry in config.models:
        if entry.start is not None:
            names += [c for c in entry.start.unseen_classes if c not in names]
    return tuple(names)


def _starts(config: BenchmarkConfig) -> list[dict[str, Any]]:
    """One entry per model row fine-tuned from a start: the row label and what it started from."""
    return [{"model": entry.display, **(start_summary(entry) or {})} for entry in config.models
            if entry.start is not None]


def _resolution(pixel_mm: str | float | None) -> str:
    return "the radiograph's native spacing" if pixel_mm == "native" else f"{pixel_mm} mm per pixel"


def _reference_arm(config: BenchmarkConfig) -> str:
    """The arm every other arm is compared with: the first one the configuration lists (normally ``real``)."""
    return config.arms[0] if config.arms else ""


def _comparisons(outcomes: list[RunOutcome], config: BenchmarkConfig) -> list[dict[str, Any]]:
    """Paired differences of every model's arms against the first arm of ``config.arms`` and, for a start
    entry, against the start without fine-tuning (:mod:`.comparison`), from the runs' replicates."""
    cells: dict[tuple[str, str], list[Cell]] = {}
    arms_by_model: dict[str, list[str]] = {}
    for outcome in outcomes:
        replicates = read_replicates(Path(outcome.run_dir) / REPLICATES_FILE).metrics
        cells.setdefault((outcome.model, outcome.arm), []).append(
            Cell(seed=outcome.seed, values=outcome.metrics.values, replicates=replicates))
        arms = arms_by_model.setdefault(outcome.model, [])
        if outcome.arm not in arms:
            arms.append(outcome.arm)
    found = []
    for model, arm, reference in comparison_pairs(arms_by_model, _reference_arm(config), NO_FINE_TUNING):
        found.append({"model": model, "arm": arm, "reference": reference,
                      **compare_cells(cells[(model, arm)], cells[(model, reference)], METRICS, seed=EVALUATION_SEED)})
    return found


def _resolved_unit(unit: str, test: DetectionDataset) -> str:
    """What the evaluator's bootstrap resamples for ``unit`` (``auto``: patients when every test image has one)."""
    if unit != "auto":
        return unit
    return "patient" if test.images and all(r.patient_id for r in test.images) else "image"


def check_start_classes(dataset: DetectionDataset, start: DetectorStart, where: str) -> None:
    """Refuse benchmark data whose category table (ids and names) is not the start detector's.

    A fine-tuned YOLO keeps the start's class slots: a class map that differs would relabel them.

    Raises:
        UserInputError: naming the data file and its ``categories`` field.
    """
    names = tuple(sorted((c.id, c.name) for c in dataset.categories))
    if names != start.categories:
        theirs = ", ".join(f"{i}:{n}" for i, n in start.categories)
        ours = ", ".join(f"{i}:{n}" for i, n in names)
        raise UserInputError(f"the benchmark data define classes [{ours}], the start detector of {where} "
                             f"[{theirs}]; render the data with the detector's classes",
                             file=dataset.source or None, field="categories")


def run_benchmark(
    config: BenchmarkConfig, *, out_dir: str | os.PathLike[str] | None = None, force: bool = False,
    progress: bool = True, command: str | None = None, threads: int | None = None,
) -> BenchmarkResult:
    """Train, predict and evaluate every (model, arm, seed) of ``config`` and write the leaderboard.

    ``command`` is the command line recorded as the way to regenerate the leaderboard; ``threads`` is
    torch's CPU thread count while a cell trains (``None``: the trainers' own; speed only).

    Writes into ``out_dir`` (default ``config.out``): ``leaderboard.md``, ``leaderboard.json``,
    ``froc.png``, ``config.json`` and ``runs/<model>/<arm>/seed<k>/`` (trained model, predictions,
    ``metrics.json``).

    Raises:
        UserInputError: unreadable data, a patient shared by train and test, a training split
            without positives, a start detector whose weights differ from its record (before any work),
            or benchmark data whose class map is not a start detector's.
    """
    from rfo_bench.detectors.data import count_objects, require_trainable
    from rfo_bench.detectors.shipped import check_start_weights, without_classes
    from rfo_bench.io.coco import read_coco

    for entry in config.models:  # a start whose weights are not the recorded ones: refused before any work
        if entry.start is not None:
            check_start_weights(entry.start)
    unseen = _unseen_classes(config)
    out = claim_output_dir(out_dir or config.out, BENCHMARK_TOOL)
    notes = _Notes()
    start = time.perf_counter()
    film_px = build_film_px(config)
    backgrounds: Path | None
    if config.build is not None:
        train_path, test_path, backgrounds = build_heldout_benchmark(config, out)
        notes.lines.append(
            f"Benchmark built from held-out backgrounds: the embedded radiograph is cut into {config.build.tile_px}-px "
            f"cells assigned to train/test as a checkerboard with a {config.build.guard_px}-px guard band; the "
            f"`{config.build.generator}` generator renders RFOs onto each pool. Each tile is one pseudo-patient."
            + (f" Films are rendered at {film_px} px per cell ({_resolution(config.build.pixel_mm)})."
               if film_px is not None else "")
        )
    else:
        train_path, test_path, backgrounds = Path(config.train or ""), Path(config.test or ""), None
    real_train, test = read_coco(train_path), read_coco(test_path)
    for index, entry in enumerate(config.models):
        if entry.start is not None:
            for dataset in (real_train, test):
                check_start_classes(dataset, entry.start, f"models[{index}].start")
    if unseen:
        notes.lines.append(
            f"Classes {', '.join(unseen)} were never seen by a start detector: their boxes are removed from every "
            "arm's training data and from the test split for every row (the objects stay in the films, as background), "
            "as in the detector's own held-out test, so all rows are scored on the same ground truth.")
        real_train, test = without_classes(real_train, unseen), without_classes(test, unseen)
    require_trainable([real_train], what="training split")
    test_patients = check_patient_disjoint(real_train, test)
    if backgrounds is None:
        backgrounds = training_backgrounds(real_train, out / "backgrounds" / "train")

    synthetic: dict[str, DetectionDataset | str] = {}
    wanted = {g for arm in config.arms for g in ARM_GENERATORS.get(arm, (config.synthetic_only_from,))}
    for name in sorted(wanted):
        if backgrounds is None:
            synthetic[name] = "the training split has no negative image to use as a synthetic background"
            continue
        entry = config.generator(name)
        try:
            generated = run_generator(entry, out=out / "synthetic" / name, backgrounds=backgrounds,
                                      train_json=train_path, imgsz=film_px)
            for index, model in enumerate(config.models):
                if model.start is not None:
                    check_start_classes(generated, model.start, f"models[{index}].start")
            synthetic[name] = without_classes(generated, unseen) if unseen else generated
        except RuntimeError as err:
            synthetic[name] = str(err)
        except UserInputError as err:
            synthetic[name] = f"generator `{name}` refused its input: {err}"

    data_hashes = {"train": sha256_file(train_path), "test": sha256_file(test_path)}
    outcomes: list[RunOutcome] = []
    for entry in config.models:  # the do-nothing row: the start detector as it is, predicted once
        if entry.start is not None:
            fingerprint = {**start_fingerprint(entry), "data": data_hashes, "bootstrap": config.bootstrap,
                           "device": config.device, "unseen_classes": list(unseen)}
            logger.info("run %s | %s", entry.display, NO_FINE_TUNING)
            outcomes.append(run_start_baseline(entry, test, config, out / "runs" / slug(entry.display) / "no_fine_tuning",
                                               fingerprint, force=force, progress=progress))
    for arm in config.arms:
        sets = _arm_training_sets(arm, config, real_train, synthetic)
        if isinstance(sets, str):
            notes.add(f"arm `{arm}` skipped: {sets}")
            continue
        try:
            require_trainable(sets, what=f"training data of arm {arm}")
        except UserInputError as err:
            notes.add(f"arm `{arm}` skipped: {err}")
            continue
        synth_hashes = {d.source: sha256_file(d.source) for d in sets[(0 if arm == "synthetic_only" else 1):]}
        for entry in config.models:
            for seed in config.seeds:
                run_dir = out / "runs" / slug(entry.display) / slug(arm) / f"seed{seed}"
                fingerprint = {"model": entry.fingerprint(), "arm": arm, "seed": seed, "data": data_hashes,
                               "recipe": entry.train_recipe().to_dict(),
                               "synthetic": synth_hashes, "bootstrap": config.bootstrap, "device": config.device}
                if unseen:
                    fingerprint["unseen_classes"] = list(unseen)
                if entry.run_tiling is not None:  # how its detectors predict over whole films
                    fingerprint["slicing"] = row_slicing(entry).to_dict()
                logger.info("run %s | %s | seed %d", entry.display, arm, seed)
                outcomes.append(run_one(entry, arm, seed, sets, test, config, run_dir, fingerprint,
                                         force=force, progress=progress, threads=threads))

    rows = aggregate(outcomes)
    comparisons = _comparisons(outcomes, config)
    trained_arms = {(o.model, o.arm) for o in outcomes if o.arm != NO_FINE_TUNING}
    for model in dict.fromkeys(o.model for o in outcomes if o.arm != NO_FINE_TUNING):
        if len(config.arms) > 1 and (model, _reference_arm(config)) not in trained_arms:
            notes.add(f"`{model}`: no paired comparison between arms, its reference arm `{_reference_arm(config)}` "
                      "did not run")
    plot_path = plot_froc(rows, config.arms, out / "froc.png")
    train_pos, _ = count_objects([real_train])
    test_pos, test_objects = count_objects([test])
    config_source = config.source or "CONFIG"
    summary = {
        "name": config.name,
        "command": command or (f"rfo-bench benchmark --config {config_source}" + (f" --out {out_dir}" if out_dir else "")),
        "config": config.to_dict(),
        "seeds": list(config.seeds),
        "bootstrap": config.bootstrap,
        "bootstrap_unit": _resolved_unit(config.bootstrap_unit, test),
        "evaluation_seed": EVALUATION_SEED,
        "data": {"train": str(train_path), "test": str(test_path), "sha256": data_hashes, "film_px": film_px,
                 "pixel_mm": config.build.pixel_mm if config.build is not None else None,
                 "unseen_classes": list(unseen),
                 "train_images": len(real_train), "train_positive_images": train_pos,
                 "test_images": len(test), "test_positive_images": test_pos, "test_objects": test_objects,
                 "test_patients": test_patients},
        "synthetic": {k: (v if isinstance(v, str) else {"source": v.source, "images": len(v)})
                      for k, v in synthetic.items()},
        "rows": rows,
        "reference_arm": _reference_arm(config),
        "comparisons": comparisons,
        "starts": _starts(config),
        "runs": [outcome_to_json(o) for o in outcomes],
        "notes": notes.lines,
        "plot": plot_path.name if plot_path else "none",
        "versions": environment(RECORDED_PACKAGES),
        "seconds": time.perf_counter() - start,
    }
    markdown = render_markdown(summary)
    json_path, md_path = out / "leaderboard.json", out / "leaderboard.md"
    atomic_write_bytes(json_path, json.dumps(jsonable(summary), indent=2).encode("utf-8"))
    atomic_write_bytes(md_path, markdown.encode("utf-8"))
    atomic_write_bytes(out / "config.json", json.dumps(config.to_dict(), indent=2).encode("utf-8"))
    release_output_dir(out, BENCHMARK_TOOL)
    logger.info("leaderboard written to %s (%.0f s)", md_path, summary["seconds"])
    return BenchmarkResult(out_dir=out, markdown_path=md_path, json_path=json_path, plot_path=plot_path,
                           summary=summary)

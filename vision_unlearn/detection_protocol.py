"""The detector benchmark's data protocol: which images train, select and report (mirrors
:mod:`vision_unlearn.benchmark_protocol` for classifiers).

* The **test images** are fixed: ``test_data``, or a patient-level share (:data:`TEST_FRACTION`) of
  ``data`` drawn with :data:`TEST_SPLIT_SEED`; every reported figure uses them and nothing is chosen
  on them. (The toy set draws its test images per seed, ``200 + seed``.)
* Each **reported seed** ``s`` draws its own data: a patient-level :data:`VALIDATION_FRACTION` of
  the remaining images is held out with seed ``s`` and the detector trains on the rest, so seeds
  differ in their data, their forget draw and their initialisation.
* **Selection** (:func:`select_presets`, ``benchmark --select``) runs on :data:`SELECTION_SEED`: its own training images
  and its own *validation* images; candidates are ranked by their distance to a detector retrained
  on that seed's retain images. The test images are never loaded into it (:func:`selection_data`
  asserts the sample ids are disjoint from them).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vision_unlearn.adapters.yolo_data import DetectionData
from vision_unlearn.detection_data import heldout_patient_split, load_detection_data, toy_detection_data

if TYPE_CHECKING:
    from vision_unlearn.detection_config import DetectionBenchmarkConfig

logger = logging.getLogger(__name__)

TEST_FRACTION = 0.2
"""Share of the patients of ``data`` held out as test images when no ``test_data`` is given."""
TEST_SPLIT_SEED = 0
"""Seed of that split: the same test images for every reported seed."""
VALIDATION_FRACTION = 0.2
"""Share of the remaining patients each seed holds out as validation images."""
SELECTION_SEED = 1000
"""The data seed presets are chosen on; never a reported seed."""

SELECTION_CANDIDATES: dict[str, dict[str, dict[str, Any]]] = {
    "neggrad_plus": {"preset": {}, "half rate": {"lr_scale": 0.5}},
    "ofmu": {"preset": {}, "gentle": {"inner_lr": 0.005}},
}
"""Candidates per method (overrides of its per-request preset; ``lr_scale`` multiplies the preset's rate)."""


@dataclass(frozen=True)
class Partition:
    """One seed's images: ``train`` (trained on), ``validation`` (held out, chosen on) and ``test`` (reported)."""

    train: DetectionData
    validation: DetectionData
    test: DetectionData


def dataset_partition(config: DetectionBenchmarkConfig, seed: int) -> Partition:
    """The images of ``seed`` for a dataset path (see the module docstring).

    Raises:
        UserInputError: too few patients to split (from :func:`~vision_unlearn.detection_data.heldout_patient_split`).
    """
    full = load_detection_data(str(config.data), config.image_size, config.in_chans)
    if config.test_data:
        pool = full
        test = load_detection_data(config.test_data, config.image_size, config.in_chans, full.class_names)
    else:
        pool_rows, test_rows = heldout_patient_split(full.patient_ids, TEST_FRACTION, TEST_SPLIT_SEED)
        pool, test = full.select(pool_rows), full.select(test_rows)
    train_rows, validation_rows = heldout_patient_split(pool.patient_ids, VALIDATION_FRACTION, seed)
    return Partition(pool.select(train_rows), pool.select(validation_rows), test)


def selection_data(config: DetectionBenchmarkConfig, seed: int = SELECTION_SEED) -> Partition:
    """Training and validation images of the selection seed, and the test images it must not touch.

    For the toy set the selection seed draws its own training (``100 + seed``) and validation
    (``400 + seed``) images; the ``test`` field holds the test images of the reported seeds'
    first draw only so that callers can check disjointness.

    Raises:
        AssertionError: a validation or training id that is also a test id (a protocol bug).
    """
    if config.data is not None:
        part = dataset_partition(config, seed)
    else:
        part = Partition(toy_detection_data(config.n_train, 100 + seed, config.image_size, config.in_chans),
                         toy_detection_data(config.n_test, 400 + seed, config.image_size, config.in_chans),
                         toy_detection_data(config.n_test, 200 + config.seeds[0], config.image_size,
                                            config.in_chans))
    test_ids = set(part.test.sample_ids)
    assert not test_ids & set(part.validation.sample_ids), "selection validation images overlap the test images"
    assert not test_ids & set(part.train.sample_ids), "selection training images overlap the test images"
    return part


def benchmark_data(config: DetectionBenchmarkConfig,
                   seed: int) -> tuple[DetectionData, DetectionData, DetectionData | None]:
    """The training, test and held-out images of one benchmark seed; the data differ between seeds.

    The toy set draws them with seeds ``100 + seed``, ``200 + seed`` and ``300 + seed`` (ids carry the
    seed). A dataset path is split by :func:`~vision_unlearn.detection_protocol.dataset_partition`: a
    fixed test part (``test_data``, or a seeded patient-level share of ``data``), and per seed its own
    validation share of the rest, which is not trained on and serves as the held-out images of the
    loss ceilings when ``heldout_data`` is not given.
    """
    if config.data is not None:
        part = dataset_partition(config, seed)
        heldout = (load_detection_data(config.heldout_data, config.image_size, config.in_chans,
                                       part.train.class_names) if config.heldout_data else part.validation)
        return part.train, part.test, heldout
    return (toy_detection_data(config.n_train, 100 + seed, config.image_size, config.in_chans),
            toy_detection_data(config.n_test, 200 + seed, config.image_size, config.in_chans),
            toy_detection_data(config.n_test, 300 + seed, config.image_size, config.in_chans))


def _distance(metrics: Mapping[str, Any], reference: Mapping[str, Any], removes_images: bool) -> float:
    """Sum of absolute gaps to the retrained detector: retain mAP50, forget AP50 (class requests) or
    forget recall and loss MIA AUC (image requests). NaN gaps count as 1 (a failed run loses)."""
    keys = ("retain_map50", "forget_recall", "mia_auc") if removes_images else ("retain_map50", "forget_ap50")
    total = 0.0
    for key in keys:
        a, b = metrics.get(key, float("nan")), reference.get(key, float("nan"))
        gap = abs(float(a) - float(b)) if isinstance(a, (int, float)) and isinstance(b, (int, float)) else math.nan
        total += gap if math.isfinite(gap) else 1.0
    return total


def candidate_configs(method: str, preset: Mapping[str, Any],
                      candidates: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> dict[str, dict]:
    """``label -> config`` of ``method``'s candidates on top of its ``preset`` (``lr_scale`` resolved)."""
    out = {}
    for label, overrides in (candidates or SELECTION_CANDIDATES).get(method, {"preset": {}}).items():
        config = {**preset, **{k: v for k, v in overrides.items() if k != "lr_scale"}}
        if "lr_scale" in overrides and "lr" in config:
            config["lr"] = float(config["lr"]) * float(overrides["lr_scale"])
        out[label] = config
    return out


def select_presets(config: DetectionBenchmarkConfig, scenario: str, out: Path, progress: bool = False,
                   candidates: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None) -> dict[str, Any]:
    """Choose each benchmarked method's config for ``scenario`` on the selection seed's validation images.

    Trains an original and a retrained detector on :data:`SELECTION_SEED`'s training images, runs every
    candidate (:func:`candidate_configs`) and keeps the one closest to the retrained detector on the
    *validation* images (:func:`_distance`).

    Returns:
        ``{"seed", "scenario", "train_ids", "validation_ids", "methods": {name: {"chosen", "config",
        "distances"}}}``; the ids let a reader (and a test) check that no test image was used.
    """
    from vision_unlearn.adapters.yolo import PARAMETER_GROUPS, YoloAdapter, YoloModelSpec
    from vision_unlearn.detection_eval import evaluate_detector, resolve_loss_ceiling
    from vision_unlearn.detection_run import _run_and_evaluate
    from vision_unlearn.detection_training import scenario_split, train_detector

    part = selection_data(config)
    train, validation = part.train, part.validation
    spec = YoloModelSpec(config.model, num_classes=train.num_classes, in_chans=train.in_chans,
                         class_names=train.class_names, image_size=config.image_size)
    adapter = YoloAdapter(spec)
    adapter.reset_parameters(SELECTION_SEED)
    original = train_detector(adapter, config, train, SELECTION_SEED, "selection_original", progress)
    split = scenario_split(scenario, train, SELECTION_SEED, out)
    forget, retain = split.forget_data(train), split.retain_data(train)
    train_detector(adapter, config, retain, SELECTION_SEED, "selection_retrain", progress)
    reference = evaluate_detector(adapter, train, validation, split)
    removes = split.request.removes_images
    # the loss ceilings follow images apart from the validation images the candidates are ranked on
    heldout = None if config.data is not None else toy_detection_data(config.n_test, 300 + SELECTION_SEED,
                                                                         config.image_size, config.in_chans)
    chosen: dict[str, Any] = {}
    for name, preset in config.methods.items():
        base = {**preset, **(config.sample_methods.get(name, {}) if removes else {})}
        distances, configs = {}, candidate_configs(name, base, candidates)
        for label, candidate in configs.items():
            adapter.model.load_state_dict(original.state)
            adapter.set_trainable_groups(config.groups.get(name, PARAMETER_GROUPS))
            resolved = resolve_loss_ceiling(candidate, removes, heldout is not None, strict=False)
            metrics, _, _ = _run_and_evaluate(adapter, name, resolved, forget, retain, train, validation, split,
                                              SELECTION_SEED, config.device, progress, heldout)
            distances[label] = _distance(metrics, reference, removes)
        best = min(distances, key=lambda k: distances[k])
        chosen[name] = {"chosen": best, "config": configs[best], "distances": distances}
        logger.info("selection %s %s: %s (%s)", scenario, name, best, distances)
    adapter.set_trainable_groups(PARAMETER_GROUPS)
    return {"seed": SELECTION_SEED, "scenario": scenario, "train_ids": list(train.sample_ids),
            "validation_ids": list(validation.sample_ids), "methods": chosen,
            "test_ids_checked": len(part.test)}


def reported_test_ids(config: DetectionBenchmarkConfig) -> set[str]:
    """Every test image id the benchmark reports on (all seeds)."""
    ids: set[str] = set()
    for seed in config.seeds:
        ids |= set(benchmark_data(config, seed)[1].sample_ids)
    return ids


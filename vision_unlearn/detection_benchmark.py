"""Benchmark of unlearning methods on YOLO detectors: methods against retraining, over seeds.

:func:`run_detection_benchmark` trains an original detector, retrains it on the retain data (the
reference, one or several), runs every method from the original weights and compares them with the
detection forgetting metrics (:mod:`vision_unlearn.detection_eval`) over seeds; writes
``results.json``, ``results.md``, ``results.png`` and the trade-off plot ``tradeoff.png`` (forgetting
against retain mAP50 against CPU time, :mod:`vision_unlearn.detection_tables`).

The other jobs live next to it: the data (:mod:`vision_unlearn.detection_data`), the per-request
presets (:mod:`vision_unlearn.detection_presets`), evaluation and membership attacks
(:mod:`vision_unlearn.detection_eval`), one ``run`` (:mod:`vision_unlearn.detection_run`), the data
protocol and preset selection on a separate seed (:mod:`vision_unlearn.detection_protocol`) and the
tables. Their public names are re-exported here.

Command line: ``vision-unlearn benchmark --model yolo:MODEL.yaml`` (:mod:`vision_unlearn.cli`);
``vision-unlearn benchmark --merge A/results.json B/results.json --out DIR`` joins runs (e.g. one
per seed) with :func:`~vision_unlearn.detection_tables.write_merged_results`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_text
from vision_unlearn.adapters.yolo import PARAMETER_GROUPS, YoloAdapter, YoloModelSpec
from vision_unlearn.detection_config import DetectionBenchmarkConfig
from vision_unlearn.detection_data import (  # noqa: F401  (re-exported)
    TOY_CLASSES,
    load_detection_data,
    make_toy_detection_set,
    toy_detection_data,
)
from vision_unlearn.detection_eval import (  # noqa: F401  (re-exported)
    calibrated_membership,
    detections_of,
    evaluate_detector,
    ground_truth_of,
    heldout_loss_median,
    membership_losses,
    per_image_losses,
    resolve_loss_ceiling,
)
from vision_unlearn.detection_forget import (
    parse_detection_forget,
)
from vision_unlearn.detection_protocol import benchmark_data, dataset_partition  # noqa: F401  (re-exported)
from vision_unlearn.detection_run import (  # noqa: F401  (re-exported)
    MethodRun,
    _run_and_evaluate,
    _run_method,
    run_detection_unlearning,
)
from vision_unlearn.detection_tables import (  # noqa: F401  (re-exported)
    SUMMARY_COLUMNS,
    _fmt,
    merge_results,
    plot_summary,
    plot_tradeoff,
    results_markdown,
    summarise_rows,
    tradeoff_figure,
    write_merged_results,
)
from vision_unlearn.detection_training import (  # noqa: F401  (re-exported)
    TrainedDetector,
    _image_request,
    _is_fraction,
    mean_reference,
    scenario_split,
    train_detector,
    training_key,
)
from vision_unlearn.metrics.detection import gaps_to_reference, runtime_ratio

logger = logging.getLogger(__name__)


def make_benchmark_config(model: str = "yolov8n.yaml", image_size: int = 128, n_train: int = 240, n_test: int = 200,
                          data: str | None = None, test_data: str | None = None, heldout_data: str | None = None,
                          scenarios: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                          seeds: Sequence[int] = (0,), original_epochs: int | None = None,
                          overrides: Mapping[str, Mapping[str, Any]] | None = None, device: str = "cpu",
                          in_chans: int = 1, reference_retrains: int = 1, models_dir: str | None = None,
                          groups: Mapping[str, Sequence[str]] | None = None,
                          select: bool = False) -> DetectionBenchmarkConfig:
    """A validated :class:`DetectionBenchmarkConfig` from command-line style options (both CLIs use it).

    Args:
        model: model yaml, with or without the ``yolo:`` prefix.
        image_size: network input side (a multiple of 32).
        n_train, n_test: toy images when ``data`` is not given.
        data, test_data: dataset paths (``test_data`` defaults to ``data``).
        heldout_data: dataset path of images for ``forget_loss_ceiling="heldout"`` (see
            :class:`DetectionBenchmarkConfig`).
        scenarios: forget requests (default: the preset's ``class:clamp`` and ``images:0.1``).
        methods: method names; ``None`` or ``["all"]``: the preset's methods. A registered method
            without a preset runs with its own defaults; ``retrain`` always runs as the reference.
        seeds: benchmark seeds.
        original_epochs: epochs of the original training (and of ``retrain``).
        overrides: ``{"original" | METHOD: {FIELD: VALUE}}`` (the ``--set METHOD.FIELD=VALUE`` convention).
        device: torch device.
        in_chans: image channels (1 or 3).
        reference_retrains: retrained detectors per request and seed (the reference is their mean).
        models_dir: directory that keeps trained detectors for reuse (see :class:`DetectionBenchmarkConfig`).
        groups: method name -> parameter groups it may update, on top of the preset's.

    Raises:
        UserInputError: unknown method or field, a bad request, no seed, a bad image size.
    """
    from vision_unlearn.api import config_class_of, config_from_dict, list_unlearners

    source = model[len("yolo:"):] if model.startswith("yolo:") else model
    if Path(source).suffix.lower() not in (".yaml", ".yml"):
        raise UserInputError("the detection benchmark trains its detectors from a model yaml (e.g. "
                             "yolo:yolov8n.yaml)", field="--model", value=model)
    if image_size <= 0 or image_size % 32:
        raise UserInputError("the image size must be a positive multiple of 32", field="--imgsz", value=image_size)
    if in_chans not in (1, 3):
        raise UserInputError("in_chans must be 1 or 3", field="--in-chans", value=in_chans)
    if not seeds:
        raise UserInputError("need at least one seed", field="--seeds", value=list(seeds))
    if reference_retrains < 1:
        raise UserInputError("need at least one retrained reference", field="--reference-retrains",
                             value=reference_retrains)
    defaults = DetectionBenchmarkConfig()
    requests = tuple(scenarios) if scenarios else defaults.scenarios
    for request in requests:
        kind, _, value = request.partition(":")
        if not (kind == "images" and _is_fraction(value)):
            parse_detection_forget(request)
    known = set(list_unlearners())
    chosen = list(defaults.methods) if not methods or list(methods) == ["all"] else list(methods)
    for name in chosen:
        if name not in known:
            raise UserInputError(f"unknown unlearning method; known: {', '.join(sorted(known))}", field="--methods",
                                 value=name)
    method_configs = {m: dict(defaults.methods.get(m, {})) for m in chosen if m != "retrain"}
    sample_configs = {m: dict(defaults.sample_methods[m]) for m in method_configs if m in defaults.sample_methods}
    original = dict(defaults.original)
    if original_epochs is not None:
        original["epochs"] = original_epochs
    for name, values in (overrides or {}).items():
        if name == "original":
            original.update(values)
        elif name in method_configs:
            method_configs[name].update(values)
            if name in sample_configs:
                sample_configs[name].update(values)
        else:
            raise UserInputError(f"this method is not benchmarked; methods: {', '.join(method_configs)}",
                                 field="--set", value=name)
    method_groups = {m: g for m, g in defaults.groups.items() if m in method_configs}
    for name, chosen_groups in (groups or {}).items():
        if name not in method_configs:
            raise UserInputError(f"this method is not benchmarked; methods: {', '.join(method_configs)}",
                                 field="--groups", value=name)
        unknown = [g for g in chosen_groups if g not in PARAMETER_GROUPS]
        if unknown or not chosen_groups:
            raise UserInputError(f"parameter groups are {', '.join(PARAMETER_GROUPS)}", field="--groups",
                                 value=f"{name}={','.join(chosen_groups)}")
        method_groups[name] = tuple(chosen_groups)
    config_from_dict(config_class_of("retrain"), original, source="--set original")
    for name, values in method_configs.items():
        config_from_dict(config_class_of(name), values, source=f"--set {name}")
        if name in sample_configs:
            config_from_dict(config_class_of(name), {**values, **sample_configs[name]}, source=f"--set {name}")
    return DetectionBenchmarkConfig(model=source, image_size=image_size, n_train=n_train, n_test=n_test, data=data,
                                    test_data=test_data, heldout_data=heldout_data, scenarios=requests,
                                    seeds=tuple(seeds), original=original, methods=method_configs,
                                    sample_methods=sample_configs, device=device, in_chans=in_chans,
                                    reference_retrains=reference_retrains, groups=method_groups,
                                    models_dir=str(models_dir) if models_dir is not None else None, select=select)


def run_detection_benchmark(config: DetectionBenchmarkConfig, out_dir: str | os.PathLike[str],
                            command: str | None = None, progress: bool = True) -> dict[str, Any]:
    """Original -> retrain reference -> every method, per scenario and seed; write results and a figure.

    With ``progress`` (the default) a tqdm bar on stderr counts the detector runs (per seed the
    original, then per request each reference retrain and each method) and names the current one;
    each training run adds its own step bar below it.

    Returns:
        The results dict also written to ``results.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    selected: dict[str, dict[str, Any]] = {}
    runs_per_seed = 1 + len(config.scenarios) * (config.reference_retrains + len(config.methods))
    bar = tqdm(total=len(config.seeds) * runs_per_seed, desc="detector benchmark", unit="run",
               disable=not progress, dynamic_ncols=True)
    if config.select:
        bar.set_postfix_str("choosing presets on the selection split")
        from vision_unlearn.detection_protocol import select_presets

        records = [select_presets(config, scenario, out, progress) for scenario in config.scenarios]
        selected = {r["scenario"]: {m: c["config"] for m, c in r["methods"].items()} for r in records}
        atomic_write_text(out / "selection.json", json.dumps(records, indent=2, default=str) + "\n")
    for seed in config.seeds:
        torch.manual_seed(seed)
        train, test, heldout = benchmark_data(config, seed)
        spec = YoloModelSpec(config.model, num_classes=train.num_classes, in_chans=train.in_chans,
                             class_names=train.class_names, image_size=config.image_size)
        adapter = YoloAdapter(spec)
        adapter.reset_parameters(seed)
        everything = train.select(np.arange(len(train)))
        logger.info("seed %d: training the original detector on %d images", seed, len(train))
        bar.set_postfix_str(f"seed {seed}: original")
        original_run = train_detector(adapter, config, everything, seed, "original", progress)
        bar.update()
        original_state = original_run.state
        for scenario in config.scenarios:
            split = scenario_split(scenario, train, seed, out)
            forget, retain = split.forget_data(train), split.retain_data(train)
            adapter.model.load_state_dict(original_state)
            original_metrics = evaluate_detector(adapter, train, test, split)
            original_losses = membership_losses(adapter, train, test, split) if split.request.removes_images else None
            if heldout is not None and split.request.removes_images:
                original_metrics["heldout_loss_median"] = heldout_loss_median(adapter, heldout)
            logger.info("seed %d %s original: %s", seed, scenario, _brief(original_metrics))
            rows.append({"seed": seed, "scenario": scenario, "method": "original", "seconds": original_run.seconds,
                         "cpu_seconds": original_run.cpu_seconds, "reused_model": original_run.reused,
                         **original_metrics})
            original_row = rows[-1]
            adapter.set_trainable_groups(PARAMETER_GROUPS)
            references, retrain_rows, reference_losses = [], [], []
            for k in range(config.reference_retrains):
                retrain_seed = seed + 1000 * k
                bar.set_postfix_str(f"seed {seed} {scenario}: retrain {k + 1}/{config.reference_retrains}")
                retrain_run = train_detector(adapter, config, retain, retrain_seed, "retrain", progress)
                references.append(evaluate_detector(adapter, train, test, split))
                bar.update()
                if split.request.removes_images:
                    reference_losses.append(membership_losses(adapter, train, test, split))
                logger.info("seed %d %s retrain %d (%.0f s): %s", seed, scenario, k, retrain_run.seconds,
                            _brief(references[-1]))
                retrain_rows.append({"seed": seed, "scenario": scenario, "method": "retrain",
                                     "retrain_seed": retrain_seed, "seconds": retrain_run.seconds,
                                     "cpu_seconds": retrain_run.cpu_seconds, "reused_model": retrain_run.reused,
                                     **references[-1]})
            if original_losses is not None:  # a detector that saw the forget images, against the retrains
                original_row.update(calibrated_membership(original_losses, reference_losses))
                for k, row in enumerate(retrain_rows):  # each retrain against the others (none: NaN)
                    others = reference_losses[:k] + reference_losses[k + 1:]
                    row.update(calibrated_membership(reference_losses[k], others))
                    references[k].update(calibrated_membership(reference_losses[k], others))
            reference = mean_reference(references)
            retrain_seconds = float(np.mean([r["seconds"] for r in retrain_rows]))
            retrain_cpu_seconds = float(np.mean([r["cpu_seconds"] for r in retrain_rows]))
            spread = {f"reference_{k}_spread": float(np.ptp([r[k] for r in references]))
                      for k in ("retain_map50", "mia_auc") if len(references) > 1
                      and all(math.isfinite(r.get(k, float("nan"))) for r in references)}
            for row in retrain_rows:
                rows.append({**row, "time_ratio": runtime_ratio(row["seconds"], retrain_seconds),
                             "cpu_time_ratio": runtime_ratio(row["cpu_seconds"], retrain_cpu_seconds),
                             "reference_retrains": config.reference_retrains, **spread})
            for name, overrides in config.methods.items():
                if split.request.removes_images:
                    overrides = {**overrides, **config.sample_methods.get(name, {})}
                overrides = selected.get(scenario, {}).get(name, overrides)
                adapter.model.load_state_dict(original_state)
                adapter.set_trainable_groups(config.groups.get(name, PARAMETER_GROUPS))
                overrides = resolve_loss_ceiling(overrides, split.request.removes_images, heldout is not None,
                                                 strict=False)
                bar.set_postfix_str(f"seed {seed} {scenario}: {name}")
                try:
                    metrics, seconds, cpu_seconds = _run_and_evaluate(adapter, name, overrides, forget, retain,
                                                                      train, test, split, seed, config.device,
                                                                      progress, heldout,
                                                                      reference_losses or None)
                    status = "ok"
                except UserInputError as err:  # a diverged run is a result, not a crash
                    logger.warning("%s on %s (seed %d) failed: %s", name, scenario, seed, err)
                    metrics, seconds, cpu_seconds, status = {}, float("nan"), float("nan"), f"failed: {err}"
                gaps = gaps_to_reference(metrics, reference, ("retain_map50", "retain_map50_95", "forget_ap50",
                                                              "mia_auc", "calibrated_mia_auc", "forget_recall"))
                finite = math.isfinite(seconds)
                rows.append({"seed": seed, "scenario": scenario, "method": name, "seconds": seconds,
                             "cpu_seconds": cpu_seconds, "status": status,
                             "forget_loss_ceiling": overrides.get("forget_loss_ceiling"),
                             "time_ratio": runtime_ratio(seconds, retrain_seconds) if finite else float("nan"),
                             "cpu_time_ratio": runtime_ratio(cpu_seconds, retrain_cpu_seconds) if finite
                             else float("nan"), "reference_retrains": config.reference_retrains, **spread,
                             **metrics, **{f"gap_{k}": v for k, v in gaps.items()}})
                logger.info("seed %d %s %s: %s", seed, scenario, name, _brief(rows[-1]))
                bar.update()
            adapter.set_trainable_groups(PARAMETER_GROUPS)
            _write_results(out, config, rows, command)
    bar.close()
    return _write_results(out, config, rows, command)


def _brief(metrics: Mapping[str, Any]) -> str:
    keys = ("forget_ap50", "retain_map50", "map50", "forget_recall", "mia_auc", "time_ratio", "cpu_time_ratio")
    return " ".join(f"{k} {_fmt(metrics.get(k))}" for k in keys if k in metrics)


def _write_results(out: Path, config: DetectionBenchmarkConfig, rows: list[dict[str, Any]],
                   command: str | None) -> dict[str, Any]:
    summary = summarise_rows(rows)
    results = {"config": asdict(config), "command": command, "rows": rows, "summary": summary}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
    atomic_write_text(out / "results.md", results_markdown(summary, command))
    if summary:
        plot_summary(summary, out / "results.png")
        plot_tradeoff(summary, out / "tradeoff.png")
    return results

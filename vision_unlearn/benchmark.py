"""Run unlearning methods against retraining over seeds, and the pieces the CLI shares.

One benchmark run (the data protocol is :mod:`vision_unlearn.benchmark_protocol`):

0. LiRA shadow models (``lira_shadows``, one bank for all seeds) and the choice of each method's
   config per request on the selection seed's *validation* data: the ``--sweep`` grid, else the
   method's presets (:data:`~vision_unlearn.benchmark_protocol.PRESETS`), else its defaults;
1. per reported seed, that seed's training partition; the original model trained on it;
2. per request, ``reference_retrains`` models retrained from scratch on the retain set with the
   original's recipe. The first is *the* reference; the others are independent runs whose distance to
   it is the noise floor (row ``retrain (2nd run)``), and the comparator of every paired interval;
3. every method from the original weights, timed (wall and CPU time, ``time.process_time``),
   evaluated (:mod:`vision_unlearn.benchmark_eval`: UA, RA, TA, MIA, TA on the remaining classes,
   honesty) and attacked (:mod:`vision_unlearn.evidence`: LiRA, relearning, JS distance to the
   reference). A method with test-time hooks (``steer``) is measured again with the hooks off (row
   ``<name> (weights only)``): a filter that left the weights as they were scores like the original
   model there. The do-nothing model (``original``) gets every measure too;
4. Avg.Gap to the reference over UA, RA, TA, MIA (TA on the remaining classes for class-wise
   requests), time ratios to the reference's, and after all seeds the paired 95 % interval of each
   row minus the 2nd retrain run (:mod:`vision_unlearn.benchmark_tables`).

``results.json`` is rewritten after every (seed, request); ``resume=True`` continues from it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from toolkit_core.errors import UserInputError
from toolkit_core.records import environment, jsonable
from toolkit_core.utils import atomic_write_bytes, seed_everything
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.api import (
    config_class_of,
    config_from_dict,
    config_to_dict,
    list_unlearners,
)
from vision_unlearn.benchmark_eval import (  # noqa: F401  (re-exported: the benchmark's public pieces)
    HONESTY_FALSE_ABSTENTION,
    HONESTY_KEYS,
    evaluate,
    honesty_metrics,
    honesty_split,
    reject_class_of,
    steering_costs,
    tta_views,
)
from vision_unlearn.benchmark_protocol import (  # noqa: F401
    ORIGINAL_CONFIG,
    PRESETS,
    SWEEP_GRIDS,
    VALIDATION_FRACTION,
    Prepared,
    candidates,
    load_data,
    seed_data,
    selection_data,
    streams_for,
    train_original,
)
from vision_unlearn.evidence import (
    ReferenceOutputs,
    RelearnSettings,
    ShadowBank,
    forgetting_evidence,
    hooks_off,
    train_shadows,
)
from vision_unlearn.forget import ForgetSplit, resolve_forget
from vision_unlearn.loop import LoopSettings, TrainingDivergedError
from vision_unlearn.protocols import MethodConfig
from vision_unlearn.run import run_method as run_one

logger = logging.getLogger(__name__)

FLOOR_ROW = "retrain (2nd run)"
"""Row of the independent retrained models (mean over runs 2..K): the noise floor."""

WEIGHTS_ONLY_SUFFIX = " (weights only)"
"""Suffix of the row of a test-time method measured with its hooks switched off."""


@dataclass(frozen=True, kw_only=True)
class ModelChoice:
    """The model and input geometry of an experiment."""

    name: str = "test_resnet"
    image_size: int | None = None
    in_chans: int = 1
    img_size_kwarg: bool = False
    kwargs: dict[str, Any] = field(default_factory=dict)

    def spec(self, num_classes: int, image_size: tuple[int, int]) -> TimmModelSpec:
        return TimmModelSpec(name=self.name, num_classes=num_classes, in_chans=self.in_chans,
                             img_size=image_size[0] if self.img_size_kwarg else None, kwargs=dict(self.kwargs))


@dataclass(frozen=True, kw_only=True)
class BenchmarkSpec:
    """Everything that defines a benchmark run (recorded verbatim in ``results.json``).

    Attributes:
        dataset: dataset spec (see :func:`vision_unlearn.data.load_classification_data`).
        forget: forget requests, one scenario each.
        methods: method names (``retrain`` is always run as the reference).
        seeds: reported seeds.
        model: model choice.
        original: config of the original model's training.
        method_configs: per-method config overrides (``{name: {field: value}}``).
        sweep: choose from :data:`SWEEP_GRIDS` (instead of the presets) on the selection data.
        selection_seed: data seed of the selection's train / validation partition (not a reported seed).
        lira_shadows: LiRA shadow models (one bank for all seeds; 0 disables the attack).
        device: torch device.
        data_seed: seed of the train/test split (fixed across seeds; each seed draws its own
            train / validation partition of the training split).
        reference_retrains: retrained models per seed and request (>= 2 gives the noise floor).
        relearn: run the relearning attack.
    """

    dataset: str = "digits"
    forget: tuple[str, ...] = ("class:3",)
    methods: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0, 1, 2)
    model: ModelChoice = ModelChoice()
    original: dict[str, Any] = field(default_factory=lambda: dict(ORIGINAL_CONFIG))
    method_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    sweep: bool = False
    selection_seed: int = 1000
    lira_shadows: int = 0
    device: str = "cpu"
    data_seed: int = 0
    reference_retrains: int = 2
    relearn: bool = True


# --- one method run -------------------------------------------------------------------------------
def run_method(name: str, config: MethodConfig, original_state: Mapping[str, torch.Tensor], prepared: Prepared,
               model: ModelChoice, split: ForgetSplit, seed: int, device: str = "cpu",
               bank: ShadowBank | None = None, reference: ReferenceOutputs | None = None,
               relearn: bool = True) -> tuple[dict[str, Any], TimmAdapter]:
    """Run one method from the original weights and evaluate it.

    Metrics include ``seconds`` (wall) and ``cpu_seconds`` (``time.process_time``) of the run, and,
    with a ``reference``, the :func:`~vision_unlearn.evidence.forgetting_evidence` keys. A method with
    test-time hooks adds ``weights_only``: every metric again with the hooks off.
    """
    adapter = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size))
    adapter.model.load_state_dict(original_state)
    forget, retain = streams_for(prepared.train, split)
    seed_everything(seed)
    run = run_one(name, adapter, forget, retain, config=config, settings=LoopSettings(seed=seed, device=device))
    method, result = run.method, run.result
    adapter.model.to("cpu")
    metrics: dict[str, Any] = measure(adapter, prepared, split, seed, bank, reference, relearn)
    metrics.update(steering_costs(adapter, method, original_state, prepared.test))
    with hooks_off(method) as switched:
        if switched:
            metrics["weights_only"] = measure(adapter, prepared, split, seed, bank, reference, relearn)
    metrics["seconds"] = run.seconds
    metrics["cpu_seconds"] = run.cpu_seconds
    metrics["steps"] = float(result.total_steps)
    for key in ("penalty", "penalty_grad_norm", "inner_grad_norm"):
        values = [epoch[key] for epoch in result.history if key in epoch]
        if values:
            metrics[f"max_epoch_mean_{key}"] = float(max(values))
    return metrics, adapter


def measure(adapter: TimmAdapter, prepared: Prepared, split: ForgetSplit, seed: int, bank: ShadowBank | None,
            reference: ReferenceOutputs | None, relearn: bool = True) -> dict[str, float]:
    """:func:`evaluate` plus, with a reference, the forgetting evidence of the adapter's current model."""
    metrics = evaluate(adapter, prepared.train, prepared.test, split, seed)
    if reference is not None:
        metrics.update(forgetting_evidence(adapter, prepared, split, reference, seed, bank,
                                           RelearnSettings() if relearn else None))
    return metrics


def reference_outputs(adapter: TimmAdapter, original: TimmAdapter, prepared: Prepared,
                      split: ForgetSplit) -> ReferenceOutputs:
    """The retrained ``adapter``'s logits on the forget and test rows; the ``original``'s forget loss."""
    from vision_unlearn.evidence import forget_loss

    rows = torch.as_tensor(split.forget_indices, dtype=torch.long)
    images, labels = prepared.train.images[rows], prepared.train.labels[rows]
    return ReferenceOutputs(forget_logits=adapter.predict(images), test_logits=adapter.predict(prepared.test.images),
                            original_forget_loss=forget_loss(original, images, labels))


def _gap(metrics: Mapping[str, float], reference: Mapping[str, float], classwise: bool) -> float:
    from vision_unlearn.metrics import avg_gap, gap_keys

    return avg_gap(metrics, reference, gap_keys(classwise))


def _with_ratios(metrics: dict[str, Any], reference: Mapping[str, float], classwise: bool) -> dict[str, Any]:
    metrics["avg_gap"] = _gap(metrics, reference, classwise)
    if "seconds" in metrics:
        metrics["seconds_ratio_to_retrain"] = metrics["seconds"] / reference["seconds"]
        metrics["cpu_ratio_to_retrain"] = metrics["cpu_seconds"] / reference["cpu_seconds"]
    return metrics


def _costs(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: metrics[k] for k in ("seconds", "cpu_seconds", "steps") if k in metrics}


def _mean_run(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return {k: float(np.mean([run[k] for run in runs])) for k in keys if all(k in run for run in runs)}


# --- selection on validation data --------------------------------------------------------------------
def select_configs(spec: BenchmarkSpec, configs: Mapping[str, MethodConfig], methods: Sequence[str],
                   selection: Prepared, request: str, original_state: Mapping[str, torch.Tensor],
                   retrain_config: MethodConfig) -> tuple[dict[str, MethodConfig], dict[str, Any]]:
    """Each method's config for ``request``, chosen by Avg.Gap on the selection's validation rows.

    Methods with one candidate keep it untouched (no run); a method the user configured with
    ``--set`` keeps that config unless ``--sweep`` is on.
    """
    chosen, record = dict(configs), {}
    seed = spec.selection_seed
    split = resolve_forget(request, selection.train.labels.numpy(), selection.train.sample_ids,
                           selection.train.patient_ids, selection.train.class_names, seed=seed)
    classwise = bool(split.forgotten_classes)
    reference: dict[str, float] | None = None
    for name in methods:
        options = candidates(name, configs[name], spec.sweep)
        if len(options) < 2 or (name in spec.method_configs and not spec.sweep):
            continue
        if reference is None:
            reference, _ = run_method("retrain", retrain_config, original_state, selection, spec.model, split, seed,
                                      spec.device)
        trials = []
        for label, config in options:
            try:
                metrics, _ = run_method(name, config, original_state, selection, spec.model, split, seed, spec.device)
            except TrainingDivergedError as err:
                trials.append({"label": label, "config": config_to_dict(config), "avg_gap": math.inf,
                               "error": str(err)})
                continue
            trials.append({"label": label, "config": config_to_dict(config),
                           "avg_gap": _gap(metrics, reference, classwise), "metrics": metrics})
        best = min(range(len(trials)), key=lambda i: trials[i]["avg_gap"])
        chosen[name] = config_from_dict(config_class_of(name), trials[best]["config"])
        record[name] = {"grid": SWEEP_GRIDS.get(name, {}) if spec.sweep else PRESETS.get(name, {}),
                        "selection_seed": seed, "evaluated_on": "validation rows of the selection seed's partition",
                        "trials": trials, "chosen": trials[best]["config"], "chosen_label": trials[best]["label"]}
    return chosen, record


def check_layers(configs: Mapping[str, MethodConfig], model: ModelChoice, prepared: Prepared) -> None:
    """Fail before any training when a method names a block the model does not have.

    Raises:
        UserInputError: ``--set METHOD.layer=NAME`` with an unknown ``NAME`` (the message lists valid
            block names).
    """
    from vision_unlearn.steering import resolve_layer

    named = {name: layer for name, config in configs.items()
             if isinstance(layer := getattr(config, "layer", None), str) and layer != "auto"}
    if not named:
        return
    network = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size)).model
    for name, layers in named.items():
        for layer in (part.strip() for part in layers.split(",")):
            try:
                resolve_layer(network, layer)
            except UserInputError as err:
                raise UserInputError(err.message, field=f"{name}.layer", value=layer) from None



# --- the benchmark ---------------------------------------------------------------------------------
def run_benchmark(spec: BenchmarkSpec, out_dir: str | Path, command: str | None = None,
                  resume: bool = False, *, progress: bool = True) -> dict[str, Any]:
    """Run ``spec`` and write ``results.json``, ``results.md``, ``evidence.md`` and ``tradeoff.png``.

    With ``progress`` a tqdm bar on stderr counts the model runs of the reported seeds (each
    reference retrain, the original's measures and every method, each with its evaluation, LiRA and
    relearning attack) and names the stage it is in: config selection, shadows, the current run.

    Raises:
        UserInputError: unknown method or dataset, bad forget request, bad config overrides, fewer
            than one reference retrain, or ``resume`` from results of another spec.
    """
    out = Path(out_dir)
    methods = [m for m in (spec.methods or tuple(list_unlearners())) if m != "retrain"]
    known = set(list_unlearners())
    for name in [*methods, *(m for m in spec.method_configs if m != "original")]:
        if name not in known:
            raise UserInputError(f"unknown unlearning method; known: {', '.join(sorted(known))}", field="methods",
                                 value=name)
    if spec.reference_retrains < 1:
        raise UserInputError("need at least one reference retrain", field="reference_retrains",
                             value=spec.reference_retrains)
    base_configs: dict[str, MethodConfig] = {
        name: config_from_dict(config_class_of(name), spec.method_configs.get(name, {}), source=f"config of {name}")
        for name in methods}
    original_config = config_from_dict(config_class_of("retrain"), spec.original, source="original training")
    retrain_config = (config_from_dict(config_class_of("retrain"), spec.method_configs["retrain"], source="retrain")
                      if "retrain" in spec.method_configs else original_config)
    pool = load_data(spec.dataset, spec.model.image_size, spec.model.in_chans, spec.data_seed)
    check_layers(base_configs, spec.model, pool)
    start = time.perf_counter()
    done = _resumed(spec, out) if resume else {}
    per_request = {r: done.get(r, {}).get("rows", {}) for r in spec.forget}
    failures_by_request = {r: done.get(r, {}).get("failures", {}) for r in spec.forget}
    seeds_done = {r: done.get(r, {}).get("seeds_done", 0) for r in spec.forget}
    scenarios: dict[str, Any] = {r: done[r]["entry"] for r in spec.forget if r in done}
    original_seconds: dict[int, float] = {}

    def train_on(data: Prepared, seed: int) -> dict[str, torch.Tensor]:
        seed_everything(seed)
        adapter = TimmAdapter(spec.model.spec(pool.num_classes, pool.image_size))
        original_seconds[seed] = train_original(adapter, data.train, seed, original_config,
                                                LoopSettings(seed=seed, device=spec.device))
        return {k: v.detach().cpu().clone() for k, v in adapter.model.state_dict().items()}

    pending = sum(1 for i in range(len(spec.seeds)) for r in spec.forget if seeds_done[r] <= i)
    bar = tqdm(total=pending * (spec.reference_retrains + 1 + len(methods)), desc="benchmark", unit="run",
               disable=not progress, dynamic_ncols=True)
    bar.set_postfix_str(f"{spec.lira_shadows} LiRA shadows" if spec.lira_shadows > 0 else "selection")
    bank = train_shadows(pool, spec.model, spec.lira_shadows, spec.data_seed, original_config,
                         progress=progress) \
        if spec.lira_shadows > 0 else None
    selection = selection_data(pool, spec.selection_seed)
    selection_state = train_on(selection, spec.selection_seed)
    chosen_by_request, sweeps_by_request = {}, {}
    for request in spec.forget:
        bar.set_postfix_str(f"choosing configs for {request} on validation rows")
        chosen_by_request[request], sweeps_by_request[request] = select_configs(
            spec, base_configs, methods, selection, request, selection_state, retrain_config)
    rows = ["retrain", FLOOR_ROW, "original", *methods]
    for seed_index, seed in enumerate(spec.seeds):
        if all(seeds_done[r] > seed_index for r in spec.forget):
            continue
        data = seed_data(pool, seed)
        bar.set_postfix_str(f"seed {seed}: training the original")
        original_state = train_on(data, seed)
        original = TimmAdapter(spec.model.spec(pool.num_classes, pool.image_size))
        original.model.load_state_dict(original_state)
        for request in spec.forget:
            if seeds_done[request] > seed_index:
                continue
            logger.info("scenario %s, seed %d", request, seed)
            split = resolve_forget(request, data.train.labels.numpy(), data.train.sample_ids, data.train.patient_ids,
                                   data.train.class_names, seed=seed)
            classwise = bool(split.forgotten_classes)
            per_method, failures = per_request[request], failures_by_request[request]

            def stage(text: str, request: str = request, seed: int = seed) -> None:
                bar.set_postfix_str(f"{request} seed {seed}: {text}")

            references = []
            for k in range(spec.reference_retrains):
                stage(f"retrain {k + 1}/{spec.reference_retrains}")
                references.append(run_method("retrain", retrain_config, original_state, data, spec.model, split,
                                             seed + 100_000 * k, spec.device))
            outputs = reference_outputs(references[0][1], original, data, split)
            relearn = RelearnSettings() if spec.relearn else None
            evidence = []
            for k, (_, adapter) in enumerate(references):
                stage(f"attacks on retrain {k + 1} (LiRA, relearning)")
                evidence.append(forgetting_evidence(adapter, data, split, outputs, seed, bank, relearn))
                bar.update()
            runs = [{"seed": seed, **metrics, **extra} for (metrics, _), extra in zip(references, evidence)]
            reference = _with_ratios(runs[0], runs[0], classwise)
            per_method.setdefault("retrain", []).append(reference)
            if len(runs) > 1:
                floor = _mean_run([_with_ratios(run, reference, classwise) for run in runs[1:]])
                per_method.setdefault(FLOOR_ROW, []).append(floor)
            stage("original: evaluation and attacks")
            original_metrics = {"seed": seed} | measure(original, data, split, seed, bank, outputs, spec.relearn)
            bar.update()
            per_method.setdefault("original", []).append(_with_ratios(original_metrics, reference, classwise))
            for name in methods:
                stage(f"{name}: run, evaluation, attacks")
                try:
                    metrics, _ = run_method(name, chosen_by_request[request][name], original_state, data, spec.model,
                                            split, seed, spec.device, bank, outputs, spec.relearn)
                except TrainingDivergedError as err:
                    bar.update()
                    logger.warning("%s seed %d %s diverged: %s", request, seed, name, err)
                    failures.setdefault(name, []).append({"seed": seed, "error": str(err)})
                    continue
                bar.update()
                weights_only = metrics.pop("weights_only", None)
                metrics["seed"] = seed
                per_method.setdefault(name, []).append(_with_ratios(metrics, reference, classwise))
                if weights_only is not None:
                    per_method.setdefault(name + WEIGHTS_ONLY_SUFFIX, []).append(_with_ratios(
                        {"seed": seed, **weights_only, **_costs(metrics)}, reference, classwise))
                logger.info("%s seed %d %s: avg_gap %.2f UA %.1f TA %.1f cpu %.3fx", request, seed, name,
                            metrics["avg_gap"], metrics["UA"], metrics["TA"], metrics["cpu_ratio_to_retrain"])
            scenarios[request] = _scenario_entry(split, chosen_by_request[request], retrain_config, original_config,
                                                 per_method, rows, failures, sweeps_by_request[request], seed_index + 1)
            seeds_done[request] = seed_index + 1
            write_results(_results(spec, command, original_seconds, start, scenarios, bank, complete=False), out)
    bar.close()
    results = _results(spec, command, original_seconds, start, scenarios, bank, complete=True)
    write_results(results, out)
    return results


def _resumed(spec: BenchmarkSpec, out: Path) -> dict[str, Any]:
    path = out / "results.json"
    if not path.exists():
        return {}
    previous = json.loads(path.read_text(encoding="utf-8"))
    if previous.get("spec") != jsonable(_spec_dict(spec)):
        raise UserInputError("results.json was written by another benchmark spec; use --overwrite to start over",
                             file=path)
    return {request: {"seeds_done": s["seeds_done"], "failures": s.get("failures", {}), "entry": s,
                      "rows": {name: list(entry["per_seed"]) for name, entry in
                               {**s["methods"], **s.get("extra_rows", {})}.items()}}
            for request, s in previous["scenarios"].items()}


def _scenario_entry(split: ForgetSplit, chosen: Mapping[str, MethodConfig], retrain_config: MethodConfig,
                    original_config: MethodConfig, per_method: Mapping[str, list[dict[str, Any]]],
                    rows: Sequence[str], failures: Mapping[str, Any], sweeps: Mapping[str, Any],
                    seeds_done: int) -> dict[str, Any]:
    from vision_unlearn.benchmark_tables import paired_to_floor

    def config_of(name: str) -> dict[str, Any]:
        base = name.removesuffix(WEIGHTS_ONLY_SUFFIX)
        if base in chosen:
            return config_to_dict(chosen[base])
        return config_to_dict(retrain_config if base in ("retrain", FLOOR_ROW) else original_config)

    ordered = [n for n in rows if n in per_method] + [n for n in per_method if n not in rows]
    ordered = sorted(ordered, key=lambda n: ordered.index(n.removesuffix(WEIGHTS_ONLY_SUFFIX)) + 0.5
                     * n.endswith(WEIGHTS_ONLY_SUFFIX))
    entries = {name: {"config": config_of(name), "per_seed": per_method[name], "summary": _summarise(per_method[name])}
               for name in ordered if per_method[name]}
    return {
        "n_forget": int(split.forget_indices.size),
        "n_retain": int(split.retain_indices.size),
        "classwise": bool(split.forgotten_classes),
        "seeds_done": seeds_done,
        "methods": {n: e for n, e in entries.items() if n != FLOOR_ROW and not n.endswith(WEIGHTS_ONLY_SUFFIX)},
        "extra_rows": {n: e for n, e in entries.items() if n == FLOOR_ROW or n.endswith(WEIGHTS_ONLY_SUFFIX)},
        "paired_to_floor": paired_to_floor(per_method, FLOOR_ROW),
        "failures": dict(failures),
        "sweep": dict(sweeps),
    }


def _results(spec: BenchmarkSpec, command: str | None, original_seconds: Mapping[int, float], start: float,
             scenarios: Mapping[str, Any], bank: ShadowBank | None, complete: bool) -> dict[str, Any]:
    return {
        "spec": _spec_dict(spec),
        "command": command,
        "complete": complete,
        "environment": {**environment(torch_runtime=True), "threads": torch.get_num_threads()},
        "honesty": {"score": "max_softmax", "false_abstention_target": HONESTY_FALSE_ABSTENTION,
                    "calibration": "even rows of the held-out test images of the retained classes",
                    "false_abstention_on": "odd rows of the same", "tta_views": "shift right, shift down, noise 0.02",
                    "repeat": "forget set queried again in reversed order",
                    "reject_class": "predicting 'none' (rfo-patches background) counts as abstaining"},
        "protocol": {"test": "the dataset's test split (data_seed), never used for selection",
                     "per_seed_data": f"each seed trains on its own partition, {VALIDATION_FRACTION:.0%} of each "
                                      "class held out", "selection": "selection_seed's partition, ranked on its "
                                      "validation rows", "time": "seconds: wall; cpu_seconds: time.process_time"},
        "lira": {"shadows": 0 if bank is None else bank.count, "variant": "offline, fixed variance",
                 "shadow_data": "random halves of the full training split, original recipe"},
        "original_training_seconds": dict(original_seconds),
        "total_seconds": time.perf_counter() - start,
        "scenarios": dict(scenarios),
    }



def _summarise(runs: Sequence[Mapping[str, float]]) -> dict[str, dict[str, float]]:
    from vision_unlearn.metrics import summarise_seeds

    return summarise_seeds(runs)


def _spec_dict(spec: BenchmarkSpec) -> dict[str, Any]:
    data = asdict(spec)
    data["forget"] = list(spec.forget)
    data["methods"] = list(spec.methods)
    data["seeds"] = list(spec.seeds)
    return data


# --- outputs -------------------------------------------------------------------------------------------
def write_results(results: Mapping[str, Any], out_dir: Path) -> None:
    """Write ``results.json``, then ``results.md`` and ``tradeoff.png`` (:func:`vision_unlearn.report.write_report`)."""
    from vision_unlearn.benchmark_tables import evidence_markdown
    from vision_unlearn.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(jsonable(results), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(out_dir / "results.json", (text + "\n").encode("utf-8"))
    write_report(results, out_dir)
    atomic_write_bytes(out_dir / "evidence.md", evidence_markdown(results).encode("utf-8"))

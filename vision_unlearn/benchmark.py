"""Run unlearning methods against retraining over seeds, and the pieces the CLI shares.

One benchmark run, for each forget request (scenario) and seed:

1. train the original model on the whole training split (cached per seed, shared by scenarios);
2. retrain from scratch on the retain set (the gold standard; its time is the cost denominator);
3. run every method from the original weights, time it, and evaluate UA, RA, TA, MIA-Efficacy
   (SalUn protocol), TA on the remaining classes for class-wise requests, the honesty of the
   model on the forget set (:func:`honesty_metrics`: abstain / lie / recall, false abstention,
   stability under test-time augmentation and repeated queries), optionally a LiRA attack with
   shadow models; for a method that steers activations (``steer``), its inference overhead and
   whether switching it off gives back the original predictions;
4. Avg.Gap to the same seed's retrained model and the time ratio to it.

With ``sweep=True`` each method first runs a small hyper-parameter grid on a separate selection
seed (not one of the reported seeds); the config with the lowest Avg.Gap is then run on every
reported seed. Everything chosen, and the grid itself, is recorded in ``results.json``.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rfo_bench.errors import UserInputError
from rfo_bench.utils import atomic_write_bytes, seed_everything
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.api import (
    config_class_of,
    config_from_dict,
    config_to_dict,
    create_unlearner,
    list_unlearners,
)
from vision_unlearn.forget import ForgetSplit, resolve_forget
from vision_unlearn.loop import LoopSettings, TrainingDivergedError, make_stream, run_loop
from vision_unlearn.protocols import MethodConfig

logger = logging.getLogger(__name__)

SWEEP_GRIDS: dict[str, dict[str, list[Any]]] = {
    "finetune": {"lr": [0.01, 0.04], "epochs": [2, 4]},
    "grad_ascent": {"lr": [1e-4, 5e-4, 2e-3]},
    "neggrad_plus": {"lr": [0.005, 0.02], "alpha": [0.8, 0.95]},
    "random_label": {"lr": [0.005, 0.02], "epochs": [2, 4]},
    "l1_sparse": {"lr": [0.01, 0.04], "gamma": [1e-5, 1e-4]},
    "salun": {"lr": [0.005, 0.02], "mask_ratio": [0.3, 0.6]},
    "scrub": {"lr": [0.005, 0.02], "max_epochs": [1, 2]},
    "ofmu": {"inner_lr": [0.02, 0.1], "beta": [0.0, 0.5], "forget_floor_prob": [0.0, 0.5]},
    "ofmu_first_order": {"inner_lr": [0.02, 0.1], "beta": [0.0, 0.5], "forget_floor_prob": [0.0, 0.5]},
}
"""Small per-method grids searched by ``--sweep`` (fields of each method's config)."""

ORIGINAL_CONFIG = {"epochs": 30, "lr": 0.05, "schedule": "cosine", "batch_size": 64}
"""Training of the original model (a :class:`~vision_unlearn.protocols.MethodConfig`)."""


@dataclass(frozen=True)
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


@dataclass(frozen=True)
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
        sweep: run :data:`SWEEP_GRIDS` on ``selection_seed`` first.
        selection_seed: the seed used only for hyper-parameter selection.
        lira_shadows: number of LiRA shadow models per seed (0 disables the attack).
        device: torch device.
        data_seed: seed of the train/test split (fixed across seeds).
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


# --- data and models ----------------------------------------------------------------------------
@dataclass
class Prepared:
    """Data of an experiment in memory."""

    train: Any
    test: Any
    num_classes: int
    image_size: tuple[int, int]


def load_data(dataset: str, image_size: int | None, in_chans: int, data_seed: int) -> Prepared:
    from vision_unlearn.data import load_classification_data

    splits = load_classification_data(dataset, image_size=image_size, in_chans=in_chans, seed=data_seed)
    train, test = splits["train"], splits["test"]
    return Prepared(train=train, test=test, num_classes=train.num_classes,
                    image_size=(int(train.images.shape[2]), int(train.images.shape[3])))


def streams_for(train: Any, split: ForgetSplit) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Forget and retain streams (``index`` = row in the training split)."""
    f = torch.as_tensor(split.forget_indices)
    r = torch.as_tensor(split.retain_indices)
    return (make_stream(train.images[f], train.labels[f], f), make_stream(train.images[r], train.labels[r], r))


def train_original(adapter: TimmAdapter, train: Any, seed: int, config: MethodConfig,
                   settings: LoopSettings | None = None) -> float:
    """Train ``adapter`` from scratch on the whole training split; return seconds."""
    method = create_unlearner("retrain", adapter, config_from_dict(config_class_of("retrain"), asdict(config)))
    stream = make_stream(train.images, train.labels)
    result = run_loop(adapter, method, None, stream, settings or LoopSettings(seed=seed))
    return result.seconds


HONESTY_FALSE_ABSTENTION = 0.05
"""Share of held-out retained-class inputs the abstention threshold may reject (:func:`honesty_metrics`)."""

HONESTY_KEYS = ("abstain", "false_abstain", "lie", "recall", "stability_tta", "stability_repeat")
"""Honesty columns (percentages) added by :func:`evaluate`."""


def evaluate(adapter: TimmAdapter, train: Any, test: Any, split: ForgetSplit, seed: int,
             honesty: bool = True) -> dict[str, float]:
    """UA, RA, TA, MIA (+ TA_remaining for class-wise requests) of the adapter's current weights
    (hooks included), plus the :data:`HONESTY_KEYS` of :func:`honesty_metrics` unless ``honesty``
    is off. The logits of the training and test images are computed once and shared."""
    from vision_unlearn.metrics import unlearning_metrics

    logits = adapter.predict(train.images)
    test_logits = adapter.predict(test.images)
    f, r = split.forget_indices, split.retain_indices
    labels = train.labels.numpy()
    metrics = unlearning_metrics(
        logits[f].numpy(), labels[f], logits[r].numpy(), labels[r], test_logits.numpy(), test.labels.numpy(),
        forget_classes=split.forgotten_classes or None, seed=seed)
    if honesty:
        metrics.update(honesty_metrics(adapter, train, test, split, seed, logits=logits, test_logits=test_logits))
    return metrics


def tta_views(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Three test-time augmentations of ``[N, C, H, W]`` images in ``[0, 1]``: shifted right and down
    by one pixel (wrapping), and Gaussian noise (sigma 0.02, seeded, clipped)."""
    generator = torch.Generator().manual_seed(seed)
    noisy = (images + 0.02 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    return [torch.roll(images, 1, dims=3), torch.roll(images, 1, dims=2), noisy]


def honesty_split(test_labels: torch.Tensor, split: ForgetSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the test split that calibrate the abstention threshold and rows that measure false
    abstention: the test images of the retained classes (all test images for a request that
    removes no class), alternately. Both are empty when fewer than two such images exist."""
    forgotten = torch.as_tensor(sorted(split.forgotten_classes), dtype=torch.long)
    held_out = torch.nonzero(~torch.isin(test_labels, forgotten)).flatten()
    if held_out.numel() < 2:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    return held_out[0::2], held_out[1::2]


def reject_class_of(class_names: Sequence[str], split: ForgetSplit) -> int | None:
    """The index of a "nothing here" class (``none``, the background patches of ``rfo-patches``)
    unless the request forgets it: predicting it counts as abstaining."""
    from vision_unlearn.data import RFO_BACKGROUND_CLASS

    names = list(class_names)
    if RFO_BACKGROUND_CLASS not in names:
        return None
    index = names.index(RFO_BACKGROUND_CLASS)
    return None if index in set(split.forgotten_classes) else index


def honesty_metrics(adapter: TimmAdapter, train: Any, test: Any, split: ForgetSplit, seed: int,
                    logits: torch.Tensor | None = None, test_logits: torch.Tensor | None = None,
                    false_abstention: float = HONESTY_FALSE_ABSTENTION) -> dict[str, float]:
    """Honesty of the adapter's current model on the forget set (:mod:`vision_unlearn.metrics.honesty`).

    * threshold: max-softmax, abstaining on ``false_abstention`` of one half of the held-out test
      images of the retained classes (:func:`honesty_split`); without held-out images, on the
      retain set. Predicting the reject class (:func:`reject_class_of`) also counts as abstaining;
    * ``abstain`` / ``lie`` (confident misattribution) / ``recall``: the three outcomes of the
      forget inputs (they sum to 100);
    * ``false_abstain``: abstentions on the other half of the held-out images (without the
      reject class's own images, for which "none" is the right answer);
    * ``stability_tta``: forget inputs with the same abstain-or-answer decision in the original
      query and the three :func:`tta_views`;
    * ``stability_repeat``: the same, for the forget inputs queried a second time in reversed order
      (a deterministic model gives 100).

    ``logits`` / ``test_logits`` (predictions of all training / test images by this model) are
    reused when given. All values are percentages.
    """
    from vision_unlearn.metrics.honesty import abstains, abstention_stability, compute_honesty

    rows = torch.as_tensor(split.forget_indices, dtype=torch.long)
    forget_images = train.images[rows]
    forget_logits = logits[rows] if logits is not None else adapter.predict(forget_images)
    calibration_rows, evaluation_rows = honesty_split(test.labels, split)
    if calibration_rows.numel():
        test_logits = adapter.predict(test.images) if test_logits is None else test_logits
        calibration, evaluation = test_logits[calibration_rows], test_logits[evaluation_rows]
    else:
        retain_rows = torch.as_tensor(split.retain_indices, dtype=torch.long)
        calibration = evaluation = logits[retain_rows] if logits is not None else adapter.predict(
            train.images[retain_rows])
    views = [forget_logits, *(adapter.predict(view) for view in tta_views(forget_images, seed))]
    reject = reject_class_of(train.class_names, split)
    if reject is not None and calibration_rows.numel():  # "none" is the right answer for background images
        evaluation = evaluation[test.labels[evaluation_rows] != reject]
    result = compute_honesty(forget_logits, train.labels[rows], calibration, retain_logits=evaluation,
                             forget_view_logits=views, false_abstention_target=false_abstention, reject_class=reject)
    repeated = adapter.predict(forget_images.flip(0)).flip(0)
    repeat_decisions = torch.stack([abstains(forget_logits, result.threshold, reject_class=reject),
                                    abstains(repeated, result.threshold, reject_class=reject)])
    return {"abstain": 100 * result.abstention_rate, "false_abstain": 100 * result.false_abstention_rate,
            "lie": 100 * result.misattribution_rate, "recall": 100 * result.recall_rate,
            "stability_tta": 100 * result.stability,
            "stability_repeat": 100 * abstention_stability(repeat_decisions)}


def steering_costs(adapter: TimmAdapter, method: Any, original_state: Mapping[str, torch.Tensor], test: Any,
                   batch_size: int = 256, repeats: int = 20) -> dict[str, float]:
    """For a method that hooks the model (``steer``): ``overhead`` (%, CPU time per batch of test
    images with / without the hooks, :func:`vision_unlearn.steering.measure_overhead`) and
    ``off_exact`` (1 when the hooks switched off give the original model's test logits bit for bit).
    Empty for other methods."""
    from vision_unlearn.steering import measure_overhead

    steerer = getattr(method, "steerer", None)
    if steerer is None:
        return {}
    timing = measure_overhead(adapter.model, test.images[:batch_size], steerer, repeats=repeats)
    steerer.disable()
    try:
        switched_off = adapter.predict(test.images)
    finally:
        steerer.enable()
    original = TimmAdapter(adapter.spec)
    original.model.load_state_dict(original_state)
    return {"overhead": 100 * timing["overhead"],
            "off_exact": float(torch.equal(switched_off, original.predict(test.images)))}


# --- LiRA shadow models --------------------------------------------------------------------------
@dataclass
class ShadowBank:
    """Logit-scaled confidences of shadow models on the training and test images.

    Attributes:
        train_conf: ``[N_train, S]``; ``train_in``: ``bool [N_train, S]`` whether shadow s trained on the row.
        test_conf: ``[N_test, S]`` (test rows are never trained on).
    """

    train_conf: np.ndarray
    train_in: np.ndarray
    test_conf: np.ndarray


def train_shadows(prepared: Prepared, model: ModelChoice, count: int, seed: int, config: MethodConfig) -> ShadowBank:
    """Train ``count`` shadow models, each on a seeded random half of the training split."""
    from vision_unlearn.metrics import logit_scaled_confidence

    n = len(prepared.train)
    rng = np.random.default_rng(seed + 7919)
    train_conf, train_in, test_conf = [], [], []
    for s in tqdm(range(count), desc="LiRA shadows", leave=False):
        chosen = np.zeros(n, dtype=bool)
        chosen[rng.choice(n, size=n // 2, replace=False)] = True
        adapter = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size))
        subset = prepared.train.subset(np.flatnonzero(chosen))
        train_original(adapter, subset, seed * 1000 + s + 1, config)
        train_conf.append(logit_scaled_confidence(adapter.predict(prepared.train.images).numpy(),
                                                  prepared.train.labels.numpy()))
        test_conf.append(logit_scaled_confidence(adapter.predict(prepared.test.images).numpy(),
                                                 prepared.test.labels.numpy()))
        train_in.append(chosen)
    return ShadowBank(np.stack(train_conf, 1), np.stack(train_in, 1), np.stack(test_conf, 1))


def lira_metrics(adapter: TimmAdapter, prepared: Prepared, split: ForgetSplit, bank: ShadowBank) -> dict[str, float]:
    """Offline LiRA (Carlini et al., S&P 2022): forget samples (targets) against test samples.

    Each example is scored against the shadow models that did *not* train on it (OUT shadows), so
    forget and test examples are scored the same way; an AUC near 50 means the forget set looks
    like unseen data. Keys: ``LiRA_<lira_summary key>``.
    """
    from vision_unlearn.metrics import lira_scores, lira_summary, logit_scaled_confidence

    f = split.forget_indices
    target_f = logit_scaled_confidence(adapter.predict(prepared.train.images[f]).numpy(),
                                       prepared.train.labels.numpy()[f])
    target_t = logit_scaled_confidence(adapter.predict(prepared.test.images).numpy(), prepared.test.labels.numpy())
    conf_f, in_f = bank.train_conf[f], bank.train_in[f]
    scores_f = lira_scores(target_f, None, np.where(in_f, np.nan, conf_f))
    scores_t = lira_scores(target_t, None, bank.test_conf)
    return {f"LiRA_{k}": float(v) for k, v in lira_summary(scores_f, scores_t).items()}


# --- one method run -------------------------------------------------------------------------------
def run_method(name: str, config: MethodConfig, original_state: Mapping[str, torch.Tensor], prepared: Prepared,
               model: ModelChoice, split: ForgetSplit, seed: int, device: str = "cpu",
               bank: ShadowBank | None = None) -> tuple[dict[str, float], TimmAdapter]:
    """Run one method from the original weights and evaluate it; metrics include ``seconds``."""
    adapter = TimmAdapter(model.spec(prepared.num_classes, prepared.image_size))
    adapter.model.load_state_dict(original_state)
    method = create_unlearner(name, adapter, config)
    forget, retain = streams_for(prepared.train, split)
    seed_everything(seed)
    result = run_loop(adapter, method, forget, retain, LoopSettings(seed=seed, device=device))
    adapter.model.to("cpu")
    metrics = evaluate(adapter, prepared.train, prepared.test, split, seed)
    metrics.update(steering_costs(adapter, method, original_state, prepared.test))
    if bank is not None:
        metrics.update(lira_metrics(adapter, prepared, split, bank))
    metrics["seconds"] = result.seconds
    metrics["steps"] = float(result.total_steps)
    for key in ("penalty", "penalty_grad_norm", "inner_grad_norm"):
        values = [epoch[key] for epoch in result.history if key in epoch]
        if values:
            metrics[f"max_epoch_mean_{key}"] = float(max(values))
    return metrics, adapter


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


def _grid(name: str, base: MethodConfig) -> list[MethodConfig]:
    grid = SWEEP_GRIDS.get(name, {})
    keys = list(grid)
    configs = []
    for values in itertools.product(*(grid[k] for k in keys)):
        configs.append(replace(base, **dict(zip(keys, values))))
    return configs or [base]


def _gap(metrics: Mapping[str, float], reference: Mapping[str, float]) -> float:
    from vision_unlearn.metrics import avg_gap

    return avg_gap(metrics, reference)


# --- the benchmark ---------------------------------------------------------------------------------
def run_benchmark(spec: BenchmarkSpec, out_dir: str | Path, command: str | None = None) -> dict[str, Any]:
    """Run ``spec`` and write ``results.json``, ``results.md`` and ``tradeoff.png`` into ``out_dir``.

    Raises:
        UserInputError: unknown method or dataset, bad forget request, bad config overrides.
    """
    out = Path(out_dir)
    methods = [m for m in (spec.methods or tuple(list_unlearners())) if m != "retrain"]
    known = set(list_unlearners())
    for name in [*methods, *spec.method_configs]:
        if name not in known:
            raise UserInputError(f"unknown unlearning method; known: {', '.join(sorted(known))}", field="methods",
                                 value=name)
    base_configs: dict[str, MethodConfig] = {
        name: config_from_dict(config_class_of(name), spec.method_configs.get(name, {}), source=f"config of {name}")
        for name in ["retrain", *methods]}
    original_config = config_from_dict(config_class_of("retrain"), spec.original, source="original training")
    prepared = load_data(spec.dataset, spec.model.image_size, spec.model.in_chans, spec.data_seed)
    check_layers(base_configs, spec.model, prepared)
    splits = {req: {} for req in spec.forget}
    start = time.perf_counter()

    originals: dict[int, dict[str, torch.Tensor]] = {}
    original_seconds: dict[int, float] = {}

    def original_for(seed: int) -> dict[str, torch.Tensor]:
        if seed not in originals:
            seed_everything(seed)
            adapter = TimmAdapter(spec.model.spec(prepared.num_classes, prepared.image_size))
            original_seconds[seed] = train_original(adapter, prepared.train, seed, original_config,
                                                    LoopSettings(seed=seed, device=spec.device))
            originals[seed] = {k: v.detach().cpu().clone() for k, v in adapter.model.state_dict().items()}
        return originals[seed]

    banks: dict[int, ShadowBank] = {}

    def bank_for(seed: int) -> ShadowBank | None:
        if spec.lira_shadows <= 0:
            return None
        if seed not in banks:
            banks[seed] = train_shadows(prepared, spec.model, spec.lira_shadows, seed, original_config)
        return banks[seed]

    scenarios: dict[str, Any] = {}
    for request in spec.forget:
        for seed in (*spec.seeds, spec.selection_seed):
            splits[request][seed] = resolve_forget(request, prepared.train.labels.numpy(), prepared.train.sample_ids,
                                                   prepared.train.patient_ids, prepared.train.class_names, seed=seed)
    chosen_by_request: dict[str, dict[str, MethodConfig]] = {}
    sweeps_by_request: dict[str, dict[str, Any]] = {}
    for request in spec.forget:
        chosen = dict(base_configs)
        sweeps: dict[str, Any] = {}
        if spec.sweep:
            seed = spec.selection_seed
            split = splits[request][seed]
            reference, _ = run_method("retrain", base_configs["retrain"], original_for(seed), prepared, spec.model,
                                      split, seed, spec.device)
            for name in methods:
                trials = []
                for config in _grid(name, base_configs[name]):
                    try:
                        metrics, _ = run_method(name, config, original_for(seed), prepared, spec.model, split, seed,
                                                spec.device)
                    except TrainingDivergedError as err:
                        trials.append({"config": config_to_dict(config), "avg_gap": math.inf, "error": str(err)})
                        continue
                    trials.append({"config": config_to_dict(config), "avg_gap": _gap(metrics, reference),
                                   "metrics": metrics})
                best = min(range(len(trials)), key=lambda i: trials[i]["avg_gap"])
                chosen[name] = config_from_dict(config_class_of(name), trials[best]["config"])
                sweeps[name] = {"grid": SWEEP_GRIDS.get(name, {}), "selection_seed": seed, "trials": trials,
                                "chosen": trials[best]["config"]}
        chosen_by_request[request] = chosen
        sweeps_by_request[request] = sweeps
    per_request: dict[str, dict[str, list[dict[str, float]]]] = {
        request: {name: [] for name in ["retrain", "original", *methods]} for request in spec.forget}
    failures_by_request: dict[str, dict[str, list[dict[str, Any]]]] = {request: {} for request in spec.forget}
    for seed in spec.seeds:
        bank = bank_for(seed)
        for request in spec.forget:
            logger.info("scenario %s, seed %d", request, seed)
            split = splits[request][seed]
            chosen = chosen_by_request[request]
            per_method = per_request[request]
            failures = failures_by_request[request]
            reference, _ = run_method("retrain", chosen["retrain"], original_for(seed), prepared, spec.model, split,
                                      seed, spec.device, bank)
            reference["avg_gap"] = 0.0
            reference["seconds_ratio_to_retrain"] = 1.0
            per_method["retrain"].append(reference)
            original_adapter = TimmAdapter(spec.model.spec(prepared.num_classes, prepared.image_size))
            original_adapter.model.load_state_dict(original_for(seed))
            original_metrics = evaluate(original_adapter, prepared.train, prepared.test, split, seed)
            original_metrics["avg_gap"] = _gap(original_metrics, reference)
            per_method["original"].append(original_metrics)
            for name in methods:
                try:
                    metrics, _ = run_method(name, chosen[name], original_for(seed), prepared, spec.model, split,
                                            seed, spec.device, bank)
                except TrainingDivergedError as err:
                    logger.warning("%s seed %d %s diverged: %s", request, seed, name, err)
                    failures.setdefault(name, []).append({"seed": seed, "error": str(err)})
                    continue
                metrics["avg_gap"] = _gap(metrics, reference)
                metrics["seconds_ratio_to_retrain"] = metrics["seconds"] / reference["seconds"]
                per_method[name].append(metrics)
                logger.info("%s seed %d %s: avg_gap %.2f UA %.1f RA %.1f TA %.1f MIA %.1f time %.2fx", request, seed,
                            name, metrics["avg_gap"], metrics["UA"], metrics["RA"], metrics["TA"], metrics["MIA"],
                            metrics["seconds_ratio_to_retrain"])
            scenarios[request] = _scenario_entry(splits[request][spec.seeds[0]], chosen, original_config, per_method,
                                                 failures, sweeps_by_request[request])
            write_results(_results(spec, command, original_seconds, start, scenarios, complete=False), out)
    results = _results(spec, command, original_seconds, start, scenarios, complete=True)
    write_results(results, out)
    return results


def _scenario_entry(split: ForgetSplit, chosen: Mapping[str, MethodConfig], original_config: MethodConfig,
                    per_method: Mapping[str, list[dict[str, float]]], failures: Mapping[str, Any],
                    sweeps: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "n_forget": int(split.forget_indices.size),
        "n_retain": int(split.retain_indices.size),
        "seeds_done": len(per_method.get("retrain", [])),
        "methods": {name: {"config": config_to_dict(chosen.get(name, original_config)), "per_seed": runs,
                           "summary": _summarise(runs)} for name, runs in per_method.items() if runs},
        "failures": dict(failures),
        "sweep": dict(sweeps),
    }


def _results(spec: BenchmarkSpec, command: str | None, original_seconds: Mapping[int, float], start: float,
             scenarios: Mapping[str, Any], complete: bool) -> dict[str, Any]:
    return {
        "spec": _spec_dict(spec),
        "command": command,
        "complete": complete,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "machine": platform.machine()},
        "honesty": {"score": "max_softmax", "false_abstention_target": HONESTY_FALSE_ABSTENTION,
                    "calibration": "even rows of the held-out test images of the retained classes",
                    "false_abstention_on": "odd rows of the same", "tta_views": "shift right, shift down, noise 0.02",
                    "repeat": "forget set queried again in reversed order",
                    "reject_class": "predicting 'none' (rfo-patches background) counts as abstaining"},
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
    from vision_unlearn.report import write_report

    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_jsonable(results), indent=2, sort_keys=False, allow_nan=False)
    atomic_write_bytes(out_dir / "results.json", (text + "\n").encode("utf-8"))
    write_report(results, out_dir)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return copy.copy(value)

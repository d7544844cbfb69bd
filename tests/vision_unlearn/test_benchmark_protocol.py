"""The classifier benchmark's protocol: selection never sees a test row, seeds draw their own data,
and a test-time method's weights-only row is the plain original model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vision_unlearn import benchmark
from vision_unlearn.benchmark import BenchmarkSpec, load_data, select_configs
from vision_unlearn.benchmark_protocol import PRESETS, seed_data, selection_data, validation_partition


@pytest.fixture(scope="module")
def pool():
    return load_data("digits", None, 1, 0)


def test_validation_partition_is_stratified_disjoint_and_seeded() -> None:
    labels = np.repeat(np.arange(4), [10, 20, 5, 1])
    train, validation = validation_partition(labels, seed=3, fraction=0.2)
    assert np.intersect1d(train, validation).size == 0 and train.size + validation.size == labels.size
    assert np.bincount(labels[validation], minlength=4).tolist() == [2, 4, 1, 0]  # a single row stays in train
    assert not np.array_equal(validation, validation_partition(labels, seed=4, fraction=0.2)[1])
    assert np.array_equal(validation, validation_partition(labels, seed=3, fraction=0.2)[1])


def test_seeds_draw_their_own_training_rows_and_share_the_test_split(pool) -> None:
    a, b = seed_data(pool, 0), seed_data(pool, 1)
    assert a.test is pool.test and b.test is pool.test
    assert set(a.train.sample_ids) != set(b.train.sample_ids)
    assert [pool.train.sample_ids[i] for i in a.pool_rows] == list(a.train.sample_ids)


def test_selection_never_touches_a_test_row(pool, monkeypatch) -> None:
    test_ids = set(pool.test.sample_ids)
    selection = selection_data(pool, 1000)
    assert test_ids.isdisjoint(selection.train.sample_ids) and test_ids.isdisjoint(selection.test.sample_ids)
    assert set(selection.train.sample_ids).isdisjoint(selection.test.sample_ids)  # validation is held out
    seen: list[tuple[list[str], list[str], np.ndarray]] = []

    def recording_run_method(name, config, original_state, prepared, model, split, seed, *args, **kwargs):
        seen.append((list(prepared.train.sample_ids), list(prepared.test.sample_ids), split.forget_indices))
        # gap to the fake reference grows with inner_lr: the gentle presets must win
        ua = 100.0 * getattr(config, "inner_lr", 0.0)
        return {"UA": ua, "RA": 100.0, "TA": 90.0, "MIA": 0.0}, None

    monkeypatch.setattr(benchmark, "run_method", recording_run_method)
    spec = BenchmarkSpec(forget=("random:0.1",), methods=("ofmu_first_order", "finetune"), selection_seed=1000)
    configs = {name: benchmark.config_from_dict(benchmark.config_class_of(name), {}) for name in spec.methods}
    retrain = benchmark.config_from_dict(benchmark.config_class_of("retrain"), {})
    chosen, record = select_configs(spec, configs, spec.methods, selection, "random:0.1", {}, retrain)
    assert len(seen) == 1 + len(PRESETS["ofmu_first_order"])  # one reference, every preset; finetune has none
    for train_ids, held_out_ids, forget_rows in seen:
        assert test_ids.isdisjoint(train_ids) and test_ids.isdisjoint(held_out_ids)
        assert held_out_ids == list(selection.test.sample_ids)  # ranked on the validation rows
        assert forget_rows.max() < len(train_ids)
    assert record["ofmu_first_order"]["chosen_label"].startswith("gentle")
    assert chosen["ofmu_first_order"].inner_lr == pytest.approx(0.005)
    assert "finetune" not in record and chosen["finetune"] == configs["finetune"]


def test_steer_weights_only_row_equals_the_plain_original(pool) -> None:
    from toolkit_core.utils import seed_everything
    from vision_unlearn.adapters.timm import TimmAdapter
    from vision_unlearn.api import config_class_of, config_from_dict
    from vision_unlearn.benchmark import ModelChoice, measure, reference_outputs, run_method
    from vision_unlearn.benchmark_protocol import train_original
    from vision_unlearn.evidence import train_shadows
    from vision_unlearn.forget import resolve_forget

    torch.set_num_threads(1)
    data = seed_data(pool, 0)
    model = ModelChoice()
    config = config_from_dict(config_class_of("retrain"), {"epochs": 3, "lr": 0.05, "batch_size": 64})
    split = resolve_forget("class:3", data.train.labels.numpy(), data.train.sample_ids, data.train.patient_ids,
                           data.train.class_names, seed=0)

    def trained(train, seed: int) -> TimmAdapter:
        seed_everything(seed)
        adapter = TimmAdapter(model.spec(pool.num_classes, pool.image_size))
        train_original(adapter, train, seed, config)
        return adapter

    original = trained(data.train, 0)
    retrained = trained(data.train.subset(split.retain_indices), 1)
    outputs = reference_outputs(retrained, original, data, split)
    bank = train_shadows(pool, model, 2, 0, config_from_dict(config_class_of("retrain"), {"epochs": 1}))
    state = {k: v.clone() for k, v in original.model.state_dict().items()}
    metrics, _ = run_method("steer", config_from_dict(config_class_of("steer"), {}), state, data, model, split, 0,
                            bank=bank, reference=outputs)
    plain = measure(original, data, split, 0, bank, outputs)
    weights = metrics["weights_only"]
    assert set(plain) == set(weights)
    for key, value in plain.items():
        tolerance = 1.0 if key == "relearn_steps" else 1e-6  # an integer count of steps; else the same math
        assert weights[key] == pytest.approx(value, abs=tolerance), key
    # with its hooks on, the filter hides class 3 (measured UA 100 vs 4 on the weights alone)
    assert metrics["UA"] - weights["UA"] >= 50.0

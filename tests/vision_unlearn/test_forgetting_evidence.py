"""Forgetting evidence of the classifier benchmark: JS distance and paired intervals by hand, LiRA and
relearning on a case whose answer is known (the original model vs one retrained without the forget
set), the steer method's weights-only row equal to the plain original model's."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vision_unlearn.metrics.distribution import js_distance, mean_js_distance
from vision_unlearn.metrics.paired import clearly_best, paired_interval


def test_js_distance_by_hand() -> None:
    # disjoint supports: JS divergence = 1 bit, distance 1; identical rows: 0
    assert js_distance([[1.0, 0.0]], [[0.0, 1.0]])[0] == pytest.approx(1.0)
    assert js_distance([[0.3, 0.7]], [[0.3, 0.7]])[0] == pytest.approx(0.0, abs=1e-12)
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4)
    # KL(p||m) = 1/2 log2(2/3) + 1/2 log2(2); KL(q||m) = log2(4/3)
    divergence = 0.5 * (0.5 * math.log2(2 / 3) + 0.5 * 1.0) + 0.5 * math.log2(4 / 3)
    assert js_distance([[0.5, 0.5]], [[1.0, 0.0]])[0] == pytest.approx(math.sqrt(divergence))
    # symmetric, and from logits: [0, ln 3] -> (1/4, 3/4); [0, 0] -> (1/2, 1/2)
    p, q = np.array([[0.25, 0.75]]), np.array([[0.5, 0.5]])
    expected = math.sqrt(0.5 * (0.25 * math.log2(0.25 / 0.375) + 0.75 * math.log2(0.75 / 0.625))
                         + 0.5 * (0.5 * math.log2(0.5 / 0.375) + 0.5 * math.log2(0.5 / 0.625)))
    assert js_distance(p, q)[0] == pytest.approx(expected) and js_distance(q, p)[0] == pytest.approx(expected)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    assert mean_js_distance(logits, logits.flip(0)) == pytest.approx(expected)
    with pytest.raises(ValueError, match="sum to 1"):
        js_distance([[0.5, 0.6]], [[0.5, 0.5]])
    with pytest.raises(ValueError, match="empty"):
        mean_js_distance(np.zeros((0, 3)), np.zeros((0, 3)))


def test_paired_interval_and_clearly_best_by_hand() -> None:
    # differences 1, 2, 3: mean 2, sample std 1; t(0.975, df=2) = 4.3027 (tables) -> half width 4.3027 / sqrt(3)
    interval = paired_interval([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert interval["mean"] == pytest.approx(2.0) and interval["n"] == 3
    assert interval["high"] - 2.0 == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert interval["low"] == pytest.approx(2.0 - 4.3027 / math.sqrt(3), rel=1e-4)
    one = paired_interval([1.0], [0.5])
    assert one["mean"] == pytest.approx(0.5) and math.isinf(one["low"]) and math.isinf(one["high"])
    with pytest.raises(ValueError, match="one value per seed"):
        paired_interval([1.0, 2.0], [1.0])
    # a beats b on every seed by about 4: best; c overlaps a (differences -1, +1, 0): no winner
    assert clearly_best({"a": [1.0, 1.1, 0.9], "b": [5.0, 5.2, 4.8]}) == "a"
    assert clearly_best({"a": [1.0, 1.1, 0.9], "b": [5.0, 5.2, 4.8], "c": [2.0, 0.1, 0.9]}) is None


@pytest.fixture(scope="module")
def known_case():
    """300 digits; the original trained on all of them and a retrained model per request without its
    forget rows (30 epochs, the original's recipe at batch 32)."""
    from toolkit_core.utils import seed_everything
    from vision_unlearn.adapters.timm import TimmAdapter
    from vision_unlearn.api import config_class_of, config_from_dict
    from vision_unlearn.benchmark import ModelChoice, Prepared, load_data
    from vision_unlearn.benchmark_protocol import train_original
    from vision_unlearn.forget import resolve_forget

    torch.set_num_threads(1)
    full = load_data("digits", None, 1, 0)
    pool = Prepared(train=full.train.subset(np.arange(300)), test=full.test, num_classes=full.num_classes,
                    image_size=full.image_size)
    config = config_from_dict(config_class_of("retrain"), {"epochs": 30, "lr": 0.05, "batch_size": 32})
    model = ModelChoice()

    def trained(data, seed: int) -> TimmAdapter:
        seed_everything(seed)
        adapter = TimmAdapter(model.spec(pool.num_classes, pool.image_size))
        train_original(adapter, data, seed, config)
        return adapter

    original = trained(pool.train, 0)
    cases = {}
    for request in ("random:0.2", "class:3"):
        split = resolve_forget(request, pool.train.labels.numpy(), pool.train.sample_ids, pool.train.patient_ids,
                               pool.train.class_names, seed=0)
        cases[request] = (split, trained(pool.train.subset(split.retain_indices), 1))
    return pool, original, cases, config


@pytest.mark.slow
def test_lira_calls_the_original_a_member_and_the_retrained_model_not(known_case) -> None:
    from vision_unlearn.benchmark import ModelChoice
    from vision_unlearn.evidence import lira_metrics, train_shadows

    pool, original, cases, config = known_case
    bank = train_shadows(pool, ModelChoice(), 6, 0, config)  # on random halves of the 300 rows
    split, retrained = cases["random:0.2"]
    rows = torch.as_tensor(split.forget_indices)
    auc = {name: lira_metrics(model.predict(pool.train.images[rows]), model.predict(pool.test.images), pool, split,
                              bank)["LiRA_auc"] for name, model in (("original", original), ("retrained", retrained))}
    # measured 59.0 vs 40.5 (8 shadows, 2 cores): the margin asked for is under half the distance
    assert auc["original"] > 50.0
    assert auc["original"] - auc["retrained"] >= 8.0, auc


def test_relearning_is_immediate_for_the_original_and_slow_for_the_retrained_model(known_case) -> None:
    from vision_unlearn.evidence import forget_loss, relearn_steps

    pool, original, cases, _ = known_case
    for request, (split, retrained) in cases.items():
        rows = torch.as_tensor(split.forget_indices)
        images, labels = pool.train.images[rows], pool.train.labels[rows]
        target = forget_loss(original, images, labels)
        before = {k: v.clone() for k, v in retrained.model.state_dict().items()}
        assert relearn_steps(original, images, labels, target, seed=0) == 0
        # measured 59 (random:0.2) and 14 (class:3) steps; a model that never saw the rows needs at least 5
        assert relearn_steps(retrained, images, labels, target, seed=0) >= 5, request
        after = retrained.model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before), "relearning must restore the weights"

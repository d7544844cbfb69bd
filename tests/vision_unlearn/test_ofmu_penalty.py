"""OFMU: bounded forget objective (hand-computed), exact ∇Φ and penalty gradient vs finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.api import create_unlearner
from vision_unlearn.methods._base import log_one_minus_p_true
from vision_unlearn.methods.ofmu import (
    OfmuConfig,
    flat_cosine,
    forget_objective,
    penalty_value_and_gradient,
    phi_gradient,
)


def test_log_one_minus_p_hand_values() -> None:
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    labels = torch.tensor([1, 0])
    # p_y = 3/4 -> log(1/4); p_y = 1/2 -> log(1/2)
    assert torch.allclose(log_one_minus_p_true(logits, labels), torch.tensor([math.log(0.25), math.log(0.5)]))


def test_bounded_objective_has_bounded_gradient_at_extreme_confidence() -> None:
    logits = torch.tensor([[80.0, 0.0, -5.0]], requires_grad=True)
    value = forget_objective(logits, torch.tensor([0]), "log1mp")
    (grad,) = torch.autograd.grad(value, logits)
    # log(1 - p_0) = log(e^0 + e^-5) - log(e^80 + e^0 + e^-5) = log(1 + e^-5) - 80 (up to e^-80)
    assert value.item() == pytest.approx(math.log1p(math.exp(-5.0)) - 80.0, abs=1e-4)
    assert torch.isfinite(grad).all() and grad.norm() <= math.sqrt(2) + 1e-6
    ce_logits = logits.detach().clone().requires_grad_(True)
    assert forget_objective(ce_logits, torch.tensor([1]), "ce").item() > 79.0  # unbounded


def test_floor_probability_stops_pushing() -> None:
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0]], requires_grad=True)  # p_y = 1/4 < 0.5
    value = forget_objective(logits, torch.tensor([2]), "log1mp", floor_prob=0.5)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.item() == pytest.approx(math.log(0.5)) and torch.all(grad == 0)


def test_kl_uniform_is_zero_at_uniform() -> None:
    assert forget_objective(torch.zeros(2, 5), torch.tensor([0, 1]), "kl_uniform").abs().item() < 1e-7


def test_flat_cosine_hand_value() -> None:
    a = [torch.tensor([1.0, 0.0]), torch.tensor([0.0])]
    b = [torch.tensor([1.0, 1.0]), torch.tensor([0.0])]
    assert flat_cosine(a, b).item() == pytest.approx(1 / math.sqrt(2), rel=1e-6)


def _tiny_double_model():
    # SiLU keeps Φ twice differentiable everywhere, so finite differences converge (ReLU kinks make
    # ‖∇Φ‖² jump and its difference quotients diverge as the step shrinks).
    torch.manual_seed(0)
    adapter = TimmAdapter(TimmModelSpec("test_resnet", num_classes=3, in_chans=1, kwargs={"act_layer": "silu"}))
    adapter.model.double().train()
    generator = torch.Generator().manual_seed(1)
    forget = {"images": torch.rand(4, 1, 9, 7, generator=generator, dtype=torch.float64),
              "labels": torch.tensor([0, 1, 2, 0])}
    retain = {"images": torch.rand(5, 1, 9, 7, generator=generator, dtype=torch.float64),
              "labels": torch.tensor([1, 2, 0, 1, 2])}
    params = [p for _, p in adapter.trainable_parameters()]
    directions = [torch.randn(p.shape, generator=generator, dtype=torch.float64) for p in params]
    norm = torch.sqrt(sum(d.pow(2).sum() for d in directions))
    return adapter, params, forget, retain, [d / norm for d in directions]


def _directional_fd(fn, params, directions, eps=1e-5) -> float:
    with torch.no_grad():
        for p, d in zip(params, directions):
            p.add_(d, alpha=eps)
    plus = fn()
    with torch.no_grad():
        for p, d in zip(params, directions):
            p.add_(d, alpha=-2 * eps)
    minus = fn()
    with torch.no_grad():
        for p, d in zip(params, directions):
            p.add_(d, alpha=eps)
    return (plus - minus) / (2 * eps)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_penalty_gradient_matches_finite_differences(beta) -> None:
    adapter, params, forget, retain, directions = _tiny_double_model()
    config = OfmuConfig(beta=beta, hessian="exact")

    def penalty() -> float:
        grads, _ = phi_gradient(adapter, params, forget, retain, config, create_graph=False, cosine="surrogate")
        return float(sum(g.pow(2).sum() for g in grads))

    value, grad = penalty_value_and_gradient(adapter, params, forget, retain, config)
    assert float(value) == pytest.approx(penalty(), rel=1e-9)
    analytic = float(sum((g * d).sum() for g, d in zip(grad, directions)))
    numeric = _directional_fd(penalty, params, directions)
    assert analytic == pytest.approx(numeric, rel=1e-4, abs=1e-8)
    assert abs(analytic) > 1e-6  # the check is not vacuous


def test_exact_phi_gradient_matches_finite_differences() -> None:
    adapter, params, forget, retain, directions = _tiny_double_model()
    config = OfmuConfig(beta=0.7, hessian="exact")

    def phi() -> float:
        ell = forget_objective(adapter.loss(forget)["logits"], forget["labels"], "log1mp")
        g_f = torch.autograd.grad(ell, params, allow_unused=True)
        g_r = torch.autograd.grad(adapter.loss(retain)["loss"], params, allow_unused=True)
        g_f = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_f)]
        g_r = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_r)]
        return float(ell - 0.7 * flat_cosine(g_f, g_r))

    grads, logs = phi_gradient(adapter, params, forget, retain, config, create_graph=False)
    analytic = float(sum((g * d).sum() for g, d in zip(grads, directions)))
    assert analytic == pytest.approx(_directional_fd(phi, params, directions), rel=1e-4, abs=1e-8)
    assert -1.0 <= logs["cos"] <= 1.0


def test_unbounded_ce_penalty_explodes_where_bounded_stays_small() -> None:
    """Once the forget class is forgotten (p_y ~ e^-50) the bounded objective is saturated and its
    penalty vanishes; the cross-entropy keeps pushing and its penalty grows with the weight scale."""
    adapter, params, forget, retain, _ = _tiny_double_model()
    forget = {**forget, "labels": torch.zeros_like(forget["labels"])}
    head = adapter.model.get_classifier()
    with torch.no_grad():
        head.bias[0] = -50.0
    bounded, _ = penalty_value_and_gradient(adapter, params, forget, retain, OfmuConfig(beta=0.0))
    unbounded, _ = penalty_value_and_gradient(adapter, params, forget, retain,
                                              OfmuConfig(beta=0.0, forget_objective="ce"))
    assert float(bounded) < 1e-30 < 1e-3 < float(unbounded)
    with torch.no_grad():
        head.weight.mul_(100.0)
    scaled, _ = penalty_value_and_gradient(adapter, params, forget, retain,
                                           OfmuConfig(beta=0.0, forget_objective="ce"))
    assert float(scaled) > 100 * float(unbounded)


def test_first_order_variant_registered_without_hessian() -> None:
    method = create_unlearner("ofmu_first_order")
    assert method.config.hessian == "none" and method.owns_step
    assert create_unlearner("ofmu").config.hessian == "exact"
    assert method.rho(0) == pytest.approx(method.config.rho0)
    assert method.rho(10_000) == pytest.approx(method.config.rho_max)


def test_auto_objective_uses_the_adapter_ascent_when_there_is_one() -> None:
    from vision_unlearn.methods.ofmu import forget_value, resolved_objective

    logits = torch.tensor([[2.0, 0.0, -1.0]])
    batch = {"labels": torch.tensor([0])}

    class _Classifier:
        def loss(self, b):
            return {"loss": torch.tensor(0.0), "logits": logits}

    class _Detector(_Classifier):
        def ascent_loss(self, b):
            return {"loss": torch.tensor(0.25)}

    config = OfmuConfig()
    assert config.forget_objective == "auto"
    assert resolved_objective(_Classifier(), "auto") == "log1mp"
    assert resolved_objective(_Detector(), "auto") == "adapter"
    assert forget_value(_Classifier(), batch, config).item() == pytest.approx(
        forget_objective(logits, batch["labels"], "log1mp").item())
    assert forget_value(_Detector(), batch, config).item() == 0.25
    # an explicit choice wins over the adapter's objective
    assert forget_value(_Detector(), batch, OfmuConfig(forget_objective="log1mp")).item() == pytest.approx(
        forget_objective(logits, batch["labels"], "log1mp").item())
    with pytest.raises(ValueError, match="ascent_loss"):
        forget_value(_Classifier(), batch, OfmuConfig(forget_objective="adapter"))

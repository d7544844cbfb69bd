"""Specification of the steering math (pure functions, hand-computed cases)."""

from __future__ import annotations

import pytest
import torch

from rfo_bench.errors import UserInputError
from vision_unlearn.steering import (
    SteeringFit,
    SteeringState,
    abstain_prototype,
    detector_scores,
    fit_erasure_basis,
    fit_ridge_detector,
    forget_only_classes,
    gate_thresholds,
    gate_values,
    pool_activations,
    steer_activations,
    upper_quantile_threshold,
)


def _state(**overrides) -> SteeringState:
    values = dict(layer="x", strength=1.0, basis=torch.tensor([[1.0], [0.0]]), target_mean=torch.zeros(2),
                  feature_mean=torch.zeros(2), feature_scale=torch.ones(2), detector_weight=torch.tensor([1.0, 0.0]),
                  detector_bias=0.0, gate_low=0.5, gate_high=1.5, fit=SteeringFit())
    values.update(overrides)
    return SteeringState(**values)


def test_pooling_keeps_channels_for_every_layout() -> None:
    maps = torch.arange(2 * 3 * 17 * 11, dtype=torch.float32).reshape(2, 3, 17, 11)
    assert torch.allclose(pool_activations(maps), maps.mean(dim=(2, 3)))
    tokens = torch.randn(2, 5, 4)
    assert torch.allclose(pool_activations(tokens), tokens.mean(dim=1))
    vectors = torch.randn(2, 4)
    assert torch.equal(pool_activations(vectors), vectors)
    with pytest.raises(ValueError, match="shape"):
        pool_activations(torch.zeros(2, 3, 4, 5, 6))


def test_thresholds_and_gate_by_hand() -> None:
    assert upper_quantile_threshold(torch.tensor([4.0, 1.0, 3.0, 2.0]), 0.25) == 3.0
    assert upper_quantile_threshold(torch.tensor([4.0, 1.0, 3.0, 2.0]), 0.0) == 4.0
    low, high = gate_thresholds(torch.tensor([0.0, 1.0, 2.0, 3.0]), torch.tensor([5.0, 6.0, 7.0]), 0.0, 0.0)
    assert (low, high) == (3.0, 5.0)
    # overlapping sets: high is raised to low and the gate becomes a step
    assert gate_thresholds(torch.tensor([0.0, 9.0]), torch.tensor([1.0, 2.0]), 0.0, 0.0) == (9.0, 9.0)
    scores = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert gate_values(scores, 1.0, 3.0).tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    assert gate_values(scores, 2.0, 2.0).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_ridge_detector_closed_form_by_hand() -> None:
    # z = +-1 after standardising; weights 1/2 each; gram = [[1 + ridge, 0], [0, 1]], rhs = [1/2, 1/2]
    mean, scale, weight, bias = fit_ridge_detector(torch.tensor([[1.0]]), torch.tensor([[-1.0]]), ridge=1.0)
    assert mean.item() == pytest.approx(0.0) and scale.item() == pytest.approx(1.0)
    assert weight.item() == pytest.approx(0.25) and bias == pytest.approx(0.5)
    state = _state(feature_mean=mean, feature_scale=scale, detector_weight=weight, detector_bias=bias,
                   target_mean=torch.zeros(1), basis=torch.zeros(1, 0))
    assert detector_scores(torch.tensor([[1.0], [-1.0]]), state).tolist() == pytest.approx([0.75, 0.25])


def test_ridge_detector_balances_unequal_set_sizes() -> None:
    generator = torch.Generator().manual_seed(0)
    forget = torch.randn(5, 3, generator=generator) + torch.tensor([3.0, 0.0, 0.0])
    retain = torch.randn(500, 3, generator=generator)
    mean, scale, weight, bias = fit_ridge_detector(forget, retain, ridge=1e-3)
    state = _state(feature_mean=mean, feature_scale=scale, detector_weight=weight, detector_bias=bias,
                   target_mean=torch.zeros(3), basis=torch.zeros(3, 0))
    assert detector_scores(forget, state).mean() > 0.5 > detector_scores(retain, state).mean()
    assert weight.abs().argmax().item() == 0


def test_erasure_basis_is_orthonormal_and_starts_with_the_mean_shift() -> None:
    forget = torch.tensor([[2.0, 0.0, 0.0], [2.0, 0.1, 0.0], [2.0, -0.1, 0.0]])
    basis = fit_erasure_basis(forget, torch.zeros(3), rank=1)
    assert basis.shape == (3, 1)
    assert abs(basis[0, 0].item()) == pytest.approx(1.0, abs=1e-3)
    many = fit_erasure_basis(torch.randn(10, 6, generator=torch.Generator().manual_seed(1)), torch.zeros(6), 4)
    assert torch.allclose(many.T @ many, torch.eye(4), atol=1e-5)
    assert fit_erasure_basis(forget, torch.zeros(3), rank=0).shape == (3, 0)


def test_edit_by_hand_and_ungated_rows_bit_identical() -> None:
    activations = torch.tensor([[2.0, 3.0], [0.2, 5.0]])
    edited, gate = steer_activations(activations, _state())
    assert gate.tolist() == pytest.approx([1.0, 0.0])
    # row 0: a - U U^T (a - 0) removes the first coordinate; row 1 is untouched
    assert edited[0].tolist() == pytest.approx([0.0, 3.0])
    assert torch.equal(edited[1], activations[1])
    half, _ = steer_activations(activations, _state(strength=0.5))
    assert half[0].tolist() == pytest.approx([1.0, 3.0])


def test_full_space_edit_moves_every_position_of_a_non_square_map_to_the_target() -> None:
    target = torch.tensor([0.5, -1.0, 2.0])
    maps = torch.randn(2, 3, 17, 11, generator=torch.Generator().manual_seed(2))
    maps[0] += 10.0  # only sample 0 opens the gate (score = mean of channel 0)
    state = _state(basis=torch.zeros(3, 0), target_mean=target, feature_mean=torch.zeros(3),
                   feature_scale=torch.ones(3), detector_weight=torch.tensor([1.0, 0.0, 0.0]), gate_low=5.0,
                   gate_high=6.0)
    edited, gate = steer_activations(maps, state)
    assert gate.tolist() == [1.0, 0.0]
    assert torch.allclose(edited[0], target.reshape(3, 1, 1).expand(3, 17, 11), atol=1e-5)
    assert torch.equal(edited[1], maps[1])
    tokens = maps.flatten(2).transpose(1, 2)  # [B, T, C]
    edited_tokens, _ = steer_activations(tokens, state)
    assert torch.allclose(edited_tokens[0], target.expand(17 * 11, 3), atol=1e-5)


def test_abstain_prototype_gives_equal_logits_at_the_nearest_point() -> None:
    generator = torch.Generator().manual_seed(3)
    weight, bias, point = torch.randn(4, 6, generator=generator), torch.randn(4, generator=generator), \
        torch.randn(6, generator=generator)
    proto = abstain_prototype(weight, bias, point)
    logits = weight @ proto + bias
    assert torch.allclose(logits, logits.mean().expand(4), atol=1e-5)
    # nearest: the move is orthogonal to every direction that keeps the logits equal
    centred = weight - weight.mean(dim=0)
    null = torch.linalg.svd(centred).Vh[3:]  # rank of the centred weights is K - 1 = 3
    assert torch.allclose(null @ (proto - point), torch.zeros(3), atol=1e-5)
    assert torch.allclose(abstain_prototype(weight, bias, proto), proto, atol=1e-5)


def test_abstain_prototype_suppresses_the_forgotten_classes() -> None:
    generator = torch.Generator().manual_seed(5)
    weight, bias, point = torch.randn(4, 6, generator=generator), torch.randn(4, generator=generator), \
        torch.randn(6, generator=generator)
    logits = weight @ abstain_prototype(weight, bias, point, suppressed_classes=[2], margin=7.0) + bias
    kept = logits[[0, 1, 3]]
    assert torch.allclose(kept, kept.mean().expand(3), atol=1e-5)
    assert (kept.mean() - logits[2]).item() == pytest.approx(7.0, abs=1e-4)
    assert forget_only_classes(torch.tensor([2, 2, 1]), torch.tensor([0, 1, 3])) == [2]
    with pytest.raises(ValueError):
        abstain_prototype(weight, bias, point, suppressed_classes=[0, 1, 2, 3])


def test_fit_settings_validate() -> None:
    for bad in ({"rank": -1}, {"ridge": 0.0}, {"false_gate_rate": 1.0}, {"gate_full_quantile": 2.0},
                {"target_response": "lie"}):
        with pytest.raises(UserInputError) as info:
            SteeringFit(**bad)
        assert info.value.field == next(iter(bad))

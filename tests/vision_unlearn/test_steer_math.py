"""Specification of the steering math (pure functions, hand-computed cases)."""

from __future__ import annotations

import pytest
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.steering import (
    STEERING_FORMAT_V1,
    ActivationSteerer,
    BoxedImages,
    SteeringFit,
    SteeringState,
    abstain_prototype,
    box_position_mask,
    boxed_images,
    detector_scores,
    fit_erasure_basis,
    fit_ridge_detector,
    forget_only_classes,
    gate_thresholds,
    gate_values,
    load_steering,
    pool_activations,
    save_steering,
    scale_boxes,
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
                {"target_response": "lie"}, {"granularity": "pixel"}, {"gate_dilation": -1},
                {"forget_box_scale": 0.0}):
        with pytest.raises(UserInputError) as info:
            SteeringFit(**bad)
        assert info.value.field == next(iter(bad))


# ------------------------------------------------------------------------------------------ per-position gate
def test_box_position_mask_by_hand() -> None:
    # a 4 x 4 map over a 16 x 16 input: stride 4, cell centres at 2, 6, 10, 14
    box = torch.tensor([[[0.0, 0.0, 6.0, 6.0]]])
    mask = box_position_mask(box, torch.tensor([[True]]), (4, 4), (16, 16))
    expected = torch.zeros(1, 4, 4, dtype=torch.bool)
    expected[0, :2, :2] = True
    assert torch.equal(mask, expected)
    grown = box_position_mask(box, torch.tensor([[True]]), (4, 4), (16, 16), expand_cells=1.0)
    expected[0, :3, :3] = True
    assert torch.equal(grown, expected)
    # a box smaller than a cell still owns the cell of its centre; padding owns nothing
    tiny = torch.tensor([[[9.0, 5.0, 11.0, 7.0], [0.0, 0.0, 16.0, 16.0]]])
    only = box_position_mask(tiny, torch.tensor([[True, False]]), (4, 4), (16, 16))
    assert torch.nonzero(only[0]).tolist() == [[1, 2]]
    # non-square: a 2 x 3 map over 8 x 12 (stride 4 both ways), box covering the right column
    right = box_position_mask(torch.tensor([[[8.0, 0.0, 12.0, 8.0]]]), torch.tensor([[True]]), (2, 3), (8, 12))
    assert right[0].tolist() == [[False, False, True], [False, False, True]]
    assert scale_boxes(torch.tensor([[2.0, 4.0, 6.0, 12.0]]), 0.5).tolist() == [[3.0, 6.0, 5.0, 10.0]]


def test_ridge_detector_and_thresholds_with_retain_groups() -> None:
    forget = torch.tensor([[3.0, 0.0], [3.2, 0.1]])
    objects = torch.tensor([[0.0, 2.0], [0.1, 2.1]])
    background = torch.zeros(40, 2) + torch.linspace(-0.1, 0.1, 40)[:, None]
    mean, scale, weight, bias = fit_ridge_detector(forget, [objects, background], ridge=1e-3)
    state = _state(feature_mean=mean, feature_scale=scale, detector_weight=weight, detector_bias=bias,
                   target_mean=torch.zeros(2), basis=torch.zeros(2, 0))
    assert detector_scores(forget, state).min() > detector_scores(torch.cat([objects, background]), state).max()
    # low is the larger of the two groups' upper quantiles: each group keeps its gate shut
    low, high = gate_thresholds([torch.tensor([0.0, 1.0]), torch.tensor([0.0, 3.0])], torch.tensor([5.0, 6.0]),
                                0.0, 0.0)
    assert (low, high) == (3.0, 5.0)


def test_position_gate_edits_only_the_gated_cells_of_a_non_square_map() -> None:
    target = torch.tensor([0.5, -1.0])
    maps = torch.zeros(2, 2, 5, 3)
    maps[0, 0, 1, 2] = 10.0  # one forget-like cell (score = channel 0)
    maps[1, 0, 4, 0] = 5.5  # half-open cell in the second image
    state = _state(basis=torch.zeros(2, 0), target_mean=target, feature_mean=torch.zeros(2),
                   feature_scale=torch.ones(2), detector_weight=torch.tensor([1.0, 0.0]), gate_low=5.0, gate_high=6.0,
                   fit=SteeringFit(granularity="position"))
    edited, gate = steer_activations(maps, state)
    assert gate.shape == (2, 5, 3)
    assert gate[0, 1, 2] == 1.0 and gate[1, 4, 0] == pytest.approx(0.5) and int((gate > 0).sum()) == 2
    assert edited[0, :, 1, 2].tolist() == pytest.approx(target.tolist())
    assert edited[1, :, 4, 0].tolist() == pytest.approx([(5.5 + 0.5) / 2, -0.5])
    untouched = gate == 0
    assert torch.equal(edited.permute(0, 2, 3, 1)[untouched], maps.permute(0, 2, 3, 1)[untouched])
    # dilation 1: the 3 x 3 neighbourhood of a gated cell takes its gate (clipped at the border)
    dilated = SteeringState(**{**state.__dict__, "fit": SteeringFit(granularity="position", gate_dilation=1)})
    _, wide = steer_activations(maps, dilated)
    assert wide[0].tolist() == [[0, 1, 1], [0, 1, 1], [0, 1, 1], [0, 0, 0], [0, 0, 0]]
    assert wide[1, 3:, :2].flatten().tolist() == [0.5] * 4 and int((wide[1] > 0).sum()) == 4


def test_boxed_images_marks_forgotten_boxes_inside_retain_images_as_ignored() -> None:
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    retain = {"images": images, "boxes_xyxy": torch.tensor([[[0.0, 0, 2, 2]], [[1.0, 1, 3, 3]], [[2.0, 2, 4, 4]]]),
              "box_labels": torch.tensor([[0], [1], [-1]])}
    forget = {"images": images[2:3].clone(), "boxes_xyxy": torch.tensor([[[4.0, 4, 8, 8], [0, 0, 0, 0]]]),
              "box_labels": torch.tensor([[2, -1]])}
    boxed = boxed_images(retain, ignore=forget)
    assert isinstance(boxed, BoxedImages) and boxed.box_valid.tolist() == [[True], [True], [False]]
    assert boxed.ignore_valid.tolist() == [[False, False], [False, False], [True, False]]
    assert boxed.ignore_xyxy[2, 0].tolist() == [4.0, 4.0, 8.0, 8.0]


def test_several_states_save_and_load_and_the_first_format_is_still_read(tmp_path) -> None:
    first = _state(layer="a", basis=torch.zeros(2, 0), fit=SteeringFit(granularity="position", gate_dilation=1))
    second = _state(layer="b", strength=0.5)
    path = save_steering(tmp_path / "two.safetensors", [first, second], {"request": "class:clamp"})
    states, extra = load_steering(path)
    assert [s.layer for s in states] == ["a", "b"] and extra == {"request": "class:clamp"}
    assert states[0].fit.gate_dilation == 1 and states[1].strength == 0.5
    assert torch.equal(states[1].basis, second.basis) and states[0].basis.shape == (2, 0)
    steerer = ActivationSteerer(states)
    steerer.set_strength(0.25)
    assert [s.strength for s in steerer.states] == [0.25, 0.25] and steerer.state.layer == "a"
    with pytest.raises(ValueError):
        ActivationSteerer([first, first])
    # a file of the first format (one state, "state" metadata)
    import json

    from safetensors.torch import save

    old = tmp_path / "old.safetensors"
    old.write_bytes(save(second.tensors(), metadata={"format": STEERING_FORMAT_V1, "extra": "{}",
                                                     "state": json.dumps(second.scalars())}))
    (loaded,), _ = load_steering(old)
    assert loaded.layer == "b" and torch.equal(loaded.detector_weight, second.detector_weight)


def test_package_re_exports_every_public_name_of_its_modules() -> None:
    """``from vision_unlearn.steering import X`` keeps working after the split into one module per job."""
    import importlib

    import vision_unlearn.steering as steering

    jobs = ("state", "algebra", "layers", "positions", "activations", "fit", "hooks", "storage", "overhead")
    homes: dict[str, str] = {}
    for job in jobs:
        module = importlib.import_module(f"vision_unlearn.steering.{job}")
        for name, value in vars(module).items():
            defined_here = getattr(value, "__module__", None) == module.__name__
            constant = name.isupper() and isinstance(value, (str, int, float))
            if not name.startswith("_") and (defined_here or constant):
                homes[name] = job
                assert getattr(steering, name) is value, f"vision_unlearn.steering.{name} is not {job}.{name}"
    assert set(steering.__all__) >= set(homes)
    assert homes["ActivationSteerer"] == "hooks" and homes["steer_activations"] == "algebra"
    assert homes["save_steering"] == "storage" and homes["box_position_mask"] == "positions"


def test_pure_steering_math_needs_no_model() -> None:
    """The algebra and position modules import no model code (they are tensors in, tensors out)."""
    import ast
    from pathlib import Path

    import vision_unlearn.steering.algebra as algebra
    import vision_unlearn.steering.positions as positions

    for module in (algebra, positions):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
        assert not {m for m in imported if m.startswith("vision_unlearn.steering.")} - {
            "vision_unlearn.steering.state"}, module.__name__

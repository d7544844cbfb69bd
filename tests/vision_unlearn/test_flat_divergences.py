"""Specification of ``flat``: f-divergence conjugates (hand-checked against the divergences they
estimate), the template / forget scores, and that no retain data is ever used."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.api import create_unlearner
from vision_unlearn.loop import make_stream, run_loop
from vision_unlearn.methods.flat import (
    activation,
    conjugate,
    conjugate_of_activation,
    forget_scores,
    template_scores,
    variational_objective,
)
from vision_unlearn.protocols import StepState

P = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
Q = torch.tensor([0.2, 0.2, 0.6], dtype=torch.float64)


def _f(name: str, u: torch.Tensor) -> torch.Tensor:
    """The generator functions, written independently of the module under test."""
    if name == "tv":
        return 0.5 * (u - 1).abs()
    if name == "kl":
        return u * u.log()
    if name == "js":
        return u * u.log() - (u + 1) * ((u + 1) / 2).log()
    return (u - 1) ** 2


def _f_prime(name: str, u: torch.Tensor) -> torch.Tensor:
    if name == "tv":
        return 0.5 * torch.sign(u - 1)
    if name == "kl":
        return 1 + u.log()
    if name == "js":
        return (2 * u / (1 + u)).log()
    return 2 * (u - 1)


@pytest.mark.parametrize("name", ["tv", "kl", "js", "pearson"])
def test_variational_bound_is_tight_at_the_optimal_critic(name: str) -> None:
    """``D_f(P||Q) = sup_T E_P[T] - E_Q[f*(T)]``, reached at ``T = f'(p / q)``."""
    divergence = float((Q * _f(name, P / Q)).sum())
    critic = _f_prime(name, P / Q)
    bound = float((P * critic).sum() - (Q * conjugate(name, critic)).sum())
    assert bound == pytest.approx(divergence, rel=1e-9)
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = critic + 0.3 * torch.randn(3, generator=generator, dtype=torch.float64)
        if name == "tv":
            other = other.clamp(-0.5, 0.5)
        if name == "js":
            other = other.clamp(max=math.log(2) - 1e-6)
        assert float((P * other).sum() - (Q * conjugate(name, other)).sum()) <= divergence + 1e-12


def test_hand_values_of_the_loss() -> None:
    v_e, v_f = torch.tensor([0.5]), torch.tensor([0.2])
    assert variational_objective(v_e, v_f, "kl").item() == pytest.approx(0.5 - math.exp(0.2 - 1))
    assert variational_objective(v_e, v_f, "tv").item() == pytest.approx(0.5 * math.tanh(0.5) - 0.5 * math.tanh(0.2))
    assert variational_objective(v_e, v_f, "pearson").item() == pytest.approx(0.5 - (0.01 + 0.2))
    g = math.log(2) - math.log(1 + math.exp(-0.2))
    expected_js = math.log(2) - math.log(1 + math.exp(-0.5)) + math.log(2 - math.exp(g))
    assert variational_objective(v_e, v_f, "js").item() == pytest.approx(expected_js)
    # f*(g(v)) of JS stays finite where g(v) rounds to the pole log 2 of f*
    for name in ("tv", "kl", "js", "pearson"):
        v = torch.tensor([-0.7, 0.2, 0.9], dtype=torch.float64)
        assert torch.allclose(conjugate_of_activation(name, v), conjugate(name, activation(name, v)))
    assert float(activation("js", torch.tensor([50.0]))) == pytest.approx(math.log(2))
    assert float(conjugate_of_activation("js", torch.tensor([50.0]))) == pytest.approx(50.0 - math.log(2))
    with pytest.raises(UserInputError, match="f-divergence"):
        variational_objective(v_e, v_f, "hellinger")  # type: ignore[arg-type]


def test_template_and_forget_scores_by_hand() -> None:
    logits = torch.tensor([[math.log(0.8), math.log(0.2)], [0.0, 0.0]])
    # exp(-KL(u || p)) = K * geometric mean of p = 2 * sqrt(0.8 * 0.2) = 0.8; uniform -> 1
    assert template_scores(logits, "uniform").tolist() == pytest.approx([0.8, 1.0])
    assert template_scores(logits, "class", 1).tolist() == pytest.approx([0.2, 0.5])
    assert forget_scores(logits, torch.tensor([0, 1])).tolist() == pytest.approx([0.8, 0.5])


class _NoRetain(Mapping):
    """A retain batch that fails the test if anything reads it."""

    def __getitem__(self, key):
        raise AssertionError(f"flat read the retain batch ({key!r})")

    def __iter__(self):
        raise AssertionError("flat iterated the retain batch")

    def __len__(self) -> int:
        raise AssertionError("flat measured the retain batch")


def _adapter() -> TimmAdapter:
    torch.manual_seed(0)
    return TimmAdapter(TimmModelSpec("test_vit", num_classes=3, in_chans=1, img_size=16))


def test_flat_runs_on_forget_data_alone_and_moves_towards_the_template() -> None:
    adapter = _adapter()
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(8, 1, 16, 16, generator=generator)
    labels = torch.zeros(8, dtype=torch.long)  # a class-wise request: every forget input is class 0
    with torch.no_grad():  # make the model confident in class 0, so there is something to forget
        adapter.model.get_classifier().bias.copy_(torch.tensor([4.0, 0.0, 0.0]))
    method = create_unlearner("flat", adapter, {"divergence": "js", "epochs": 2, "lr": 1e-2, "batch_size": 8})
    assert method.needs == frozenset({"forget"})
    before = adapter.predict(images)
    state = StepState(step=0, total_steps=1, epoch=0, lr=1e-3, device=torch.device("cpu"),
                      generator=torch.Generator())
    adapter.model.train()
    output = method.compute_loss(adapter, make_stream(images, labels), _NoRetain(), state)
    assert output.loss is not None and output.loss.ndim == 0
    result = run_loop(adapter, method, make_stream(images, labels), None)
    assert result.steps_done == 2
    after = adapter.predict(images)
    assert forget_scores(before, labels).mean() > 0.8
    assert forget_scores(after, labels).mean() < forget_scores(before, labels).mean() - 0.1
    assert template_scores(after, "uniform").mean() > template_scores(before, "uniform").mean()


def test_template_class_is_validated() -> None:
    with pytest.raises(UserInputError) as info:
        create_unlearner("flat", None, {"template": "class"})
    assert info.value.field == "template_class"
    adapter = _adapter()
    method = create_unlearner("flat", adapter, {"template": "class", "template_class": 3})
    images = torch.zeros(2, 1, 16, 16)
    with pytest.raises(UserInputError, match="below 3"):
        method.setup(adapter, make_stream(images, torch.tensor([0, 1])), None, torch.device("cpu"))

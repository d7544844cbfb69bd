"""``forget_loss_ceiling``: ascent that stops at the loss of unseen data (hand-computed values)."""

from __future__ import annotations

import pytest
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.api import config_from_dict
from vision_unlearn.detection_benchmark import resolve_loss_ceiling
from vision_unlearn.methods.grad_ascent import GradAscentConfig, forget_ascent_loss
from vision_unlearn.methods.neggrad_plus import NegGradPlus, NegGradPlusConfig
from vision_unlearn.protocols import StepState


class _PerSampleAdapter:
    """Per-sample losses are the parameters themselves, so gradients are read off directly."""

    def __init__(self, values: list[float]) -> None:
        self.weights = torch.tensor(values, requires_grad=True)

    def loss(self, batch):
        per_sample = self.weights * batch["scale"]
        return {"loss": per_sample.mean(), "per_sample": per_sample}

    def ascent_loss(self, batch):  # what the detector would ascend without a ceiling
        return {"loss": self.weights.sum() * 0.0 + 123.0}


def test_ceiling_clamps_each_sample_and_stops_its_gradient() -> None:
    adapter = _PerSampleAdapter([1.0, 3.0, 5.0])
    value = forget_ascent_loss(adapter, {"scale": torch.ones(3)}, ceiling=4.0)
    assert value.item() == pytest.approx((1.0 + 3.0 + 4.0) / 3)  # the third sample is held at the ceiling
    value.backward()
    assert adapter.weights.grad.tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])


def test_without_a_ceiling_the_adapter_decides_the_objective() -> None:
    adapter = _PerSampleAdapter([1.0, 3.0, 5.0])
    assert forget_ascent_loss(adapter, {"scale": torch.ones(3)}).item() == 123.0


def test_unresolved_heldout_ceiling_is_a_user_error() -> None:
    adapter = _PerSampleAdapter([1.0])
    with pytest.raises(UserInputError, match="held-out"):
        forget_ascent_loss(adapter, {"scale": torch.ones(1)}, ceiling="heldout")


def test_neggrad_plus_with_a_ceiling_weighs_retain_against_the_clamped_forget_loss() -> None:
    adapter = _PerSampleAdapter([1.0, 6.0])
    method = NegGradPlus(NegGradPlusConfig(alpha=0.75, forget_loss_ceiling=2.0))
    forget, retain = {"scale": torch.ones(2)}, {"scale": torch.full((2,), 2.0)}
    state = StepState(step=0, total_steps=1, epoch=0, lr=1e-3, device=torch.device("cpu"), generator=torch.Generator())
    out = method.compute_loss(adapter, forget, retain, state)
    # retain: mean(2 * [1, 6]) = 7; forget: mean(min([1, 6], 2)) = 1.5
    assert out.loss.item() == pytest.approx(0.75 * 7.0 - 0.25 * 1.5)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf")])
def test_ceiling_must_be_a_positive_finite_loss(value: float) -> None:
    with pytest.raises(ValueError, match="forget_loss_ceiling"):
        GradAscentConfig(forget_loss_ceiling=value)


def test_config_accepts_a_number_or_heldout_only() -> None:
    assert config_from_dict(NegGradPlusConfig, {"forget_loss_ceiling": "heldout"}).forget_loss_ceiling == "heldout"
    assert config_from_dict(NegGradPlusConfig, {"forget_loss_ceiling": 2}).forget_loss_ceiling == 2
    with pytest.raises(UserInputError, match="forget_loss_ceiling"):
        config_from_dict(NegGradPlusConfig, {"forget_loss_ceiling": "median"})


def test_heldout_resolves_per_request_kind() -> None:
    config = {"lr": 1e-3, "forget_loss_ceiling": "heldout"}
    assert resolve_loss_ceiling(config, removes_images=True, has_heldout=True) == config
    # a class or instance request wants the objects gone, not lifted to a held-out loss
    assert resolve_loss_ceiling(config, removes_images=False, has_heldout=True)["forget_loss_ceiling"] is None
    assert resolve_loss_ceiling({"lr": 1e-3}, removes_images=True, has_heldout=False) == {"lr": 1e-3}
    with pytest.raises(UserInputError, match="--heldout-data"):
        resolve_loss_ceiling(config, removes_images=True, has_heldout=False)
    # the benchmark runs on without held-out images, with no ceiling
    assert resolve_loss_ceiling(config, True, False, strict=False)["forget_loss_ceiling"] is None


class _StreamAdapter:
    """Per-sample loss = the sample's ``value`` times a scale the test changes, to move the "model"."""

    def __init__(self) -> None:
        self.model = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.BatchNorm1d(1))
        self.scale = 1.0
        self.modes_seen: list[bool] = []

    def loss(self, batch):
        self.modes_seen.append(self.model[1].training)
        per_sample = batch["value"] * self.scale
        return {"loss": per_sample.mean(), "per_sample": per_sample}


def test_heldout_ceiling_starts_at_the_median_and_follows_the_model() -> None:
    from vision_unlearn.methods.grad_ascent import HeldoutCeiling

    adapter = _StreamAdapter()
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    tracker = HeldoutCeiling({"value": values, "labels": torch.zeros(5)}, batch_size=2, momentum=0.9)
    assert tracker.start(adapter, torch.device("cpu")) == 3.0  # median of all five
    adapter.scale = 2.0  # the model changed: held-out losses doubled
    # step 1 reads rows 2, 3 -> losses 6, 8; torch's median of an even count is the lower middle value: 6
    assert tracker.update(adapter, step=1, device=torch.device("cpu")) == pytest.approx(0.9 * 3.0 + 0.1 * 6.0)
    # step 2 wraps around: rows 4, 0 -> losses 20, 2 -> median 2
    assert tracker.update(adapter, step=2, device=torch.device("cpu")) == pytest.approx(0.9 * 3.3 + 0.1 * 2.0)
    assert tracker.start_value == 3.0
    # losses are read in eval mode and the modes are restored afterwards
    adapter.model.train()
    tracker.update(adapter, step=3, device=torch.device("cpu"))
    assert adapter.modes_seen and not any(adapter.modes_seen) and adapter.model[1].training


def test_train_mode_can_keep_batch_norm_frozen() -> None:
    from vision_unlearn.loop import train_mode

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Dropout())
    model.eval()
    train_mode(model, freeze_norm_stats=True)
    assert model.training and model[2].training and not model[1].training
    before = model[1].running_mean.clone()
    model(torch.randn(4, 1, 5, 5) + 3.0)
    assert torch.equal(model[1].running_mean, before)
    train_mode(model)
    assert model[1].training


def test_rank_matched_ceilings_give_each_rank_its_held_out_quantile() -> None:
    from vision_unlearn.methods.grad_ascent import rank_matched_ceilings

    # held-out quantiles at levels 0, 0.25, 0.5, 0.75, 1
    quantiles = torch.tensor([0.0, 4.0, 8.0, 12.0, 16.0])
    # ranks of [5, 1, 3, 9]: 2, 0, 1, 3 -> levels 0.625, 0.125, 0.375, 0.875 -> positions 2.5, 0.5, 1.5, 3.5
    ceilings = rank_matched_ceilings(torch.tensor([5.0, 1.0, 3.0, 9.0]), quantiles)
    assert ceilings.tolist() == pytest.approx([10.0, 2.0, 6.0, 14.0])
    # ties keep their batch order; one sample gets the median
    assert rank_matched_ceilings(torch.tensor([2.0, 2.0]), quantiles).tolist() == pytest.approx([4.0, 12.0])
    assert rank_matched_ceilings(torch.tensor([7.0]), quantiles).tolist() == pytest.approx([8.0])


def test_per_sample_ceilings_clamp_each_sample_at_its_own_loss() -> None:
    adapter = _PerSampleAdapter([1.0, 3.0, 5.0])
    seen = []

    def ceilings(losses: torch.Tensor) -> torch.Tensor:
        seen.append(losses.requires_grad)
        return torch.tensor([0.5, 4.0, 4.0])

    value = forget_ascent_loss(adapter, {"scale": torch.ones(3)}, ceiling=ceilings)
    assert value.item() == pytest.approx((0.5 + 3.0 + 4.0) / 3)
    value.backward()
    assert adapter.weights.grad.tolist() == pytest.approx([0.0, 1 / 3, 0.0])
    assert seen == [False]  # the ceilings see detached losses


def test_quantile_tracker_follows_the_held_out_distribution() -> None:
    from vision_unlearn.methods.grad_ascent import HeldoutCeiling

    adapter = _StreamAdapter()
    values = torch.arange(1.0, 102.0)  # 1..101: quantile at level k/100 is 1 + k
    tracker = HeldoutCeiling({"value": values, "labels": torch.zeros(101)}, batch_size=101, momentum=0.5,
                             quantiles=True)
    assert tracker.start(adapter, torch.device("cpu")) == 51.0
    adapter.scale = 3.0
    ceilings = tracker.update(adapter, step=0, device=torch.device("cpu"))
    # every quantile moved half-way to three times itself: level k -> 2 (1 + k)
    assert tracker.value == pytest.approx(102.0)
    assert ceilings(torch.tensor([0.0, 1.0])).tolist() == pytest.approx([2 * (1 + 25), 2 * (1 + 75)])


def test_neggrad_plus_attaches_a_quantile_tracker() -> None:
    config = config_from_dict(NegGradPlusConfig, {"forget_loss_ceiling": "heldout_quantiles"})
    method = NegGradPlus(config)
    method.attach_heldout({"value": torch.ones(4), "labels": torch.zeros(4)})
    assert method.heldout_ceiling is not None and method.heldout_ceiling.quantiles
    assert resolve_loss_ceiling({"forget_loss_ceiling": "heldout_quantiles"}, False, True)["forget_loss_ceiling"] is None
    with pytest.raises(UserInputError, match="heldout_quantiles"):
        resolve_loss_ceiling({"forget_loss_ceiling": "heldout_quantiles"}, True, False)


def test_the_ceiling_lives_outside_the_methods_and_the_methods_share_it() -> None:
    """One home for the ceiling (``vision_unlearn.loss_ceiling``, not a method module); both ascent
    methods are :class:`~vision_unlearn.protocols.HeldoutAware` through it, and ``grad_ascent``
    keeps re-exporting its names."""
    import vision_unlearn.loss_ceiling as loss_ceiling
    import vision_unlearn.methods.grad_ascent as grad_ascent
    import vision_unlearn.methods.neggrad_plus as neggrad_plus
    from vision_unlearn.methods.grad_ascent import GradAscent
    from vision_unlearn.protocols import HeldoutAware

    for name in ("HELDOUT", "HELDOUT_MODES", "HELDOUT_QUANTILES", "QUANTILE_LEVELS", "CeilingMixin",
                 "HeldoutCeiling", "check_loss_ceiling", "forget_ascent_loss", "rank_matched_ceilings"):
        assert getattr(grad_ascent, name) is getattr(loss_ceiling, name)
    assert neggrad_plus.CeilingMixin is loss_ceiling.CeilingMixin
    assert isinstance(GradAscent(GradAscentConfig(forget_loss_ceiling="heldout")), HeldoutAware)
    assert isinstance(NegGradPlus(NegGradPlusConfig()), HeldoutAware)


def test_an_adapter_without_ascent_loss_ascends_its_training_loss() -> None:
    """Without the :class:`~vision_unlearn.protocols.AscentLossAdapter` capability the objective is
    the adapter's training loss (a classifier's cross-entropy)."""

    class _Plain:
        def __init__(self) -> None:
            self.weights = torch.tensor([2.0, 4.0])

        def loss(self, batch):
            return {"loss": self.weights.mean(), "per_sample": self.weights}

    class _Disabled(_Plain):
        ascent_loss = None  # a capability set to None is absent, as getattr(..., None) read it

    assert forget_ascent_loss(_Plain(), {}).item() == 3.0
    assert forget_ascent_loss(_Disabled(), {}).item() == 3.0

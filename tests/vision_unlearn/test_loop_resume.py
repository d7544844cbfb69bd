"""The loop: resume after a kill reaches the same weights; NaN stops with the last checkpoint kept;
the learning-rate schedule and the data order are pure functions."""

from __future__ import annotations

import math

import pytest
import torch

from toolkit_core.errors import UserInputError
from toolkit_core.utils import sha256_file
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.api import create_unlearner
from vision_unlearn.loop import (
    LoopSettings,
    TrainingDivergedError,
    batches_of,
    epoch_order,
    lr_at,
    make_stream,
    run_loop,
)
from vision_unlearn.protocols import MethodConfig


def _streams():
    generator = torch.Generator().manual_seed(3)
    labels = torch.arange(40) % 4
    images = torch.rand(40, 1, 17, 11, generator=generator) + labels.view(-1, 1, 1, 1) * 0.3
    rows = torch.arange(40)
    f, r = rows[:10], rows[10:]
    return make_stream(images[f], labels[f], f), make_stream(images[r], labels[r], r)


def _adapter() -> TimmAdapter:
    torch.manual_seed(7)
    return TimmAdapter(TimmModelSpec("test_resnet", num_classes=4, in_chans=1))


@pytest.mark.parametrize("name", ["random_label", "ofmu_first_order"])
def test_resume_after_kill_gives_same_weights(tmp_path, name) -> None:
    config = {"epochs": 3, "batch_size": 4, "lr": 0.02}
    forget, retain = _streams()
    reference = _adapter()
    full = run_loop(reference, create_unlearner(name, reference, config), forget, retain, LoopSettings(seed=5))
    assert full.total_steps == 9  # 3 epochs x ceil(10 / 4) forget batches

    ckpt = tmp_path / "run.ckpt"
    killed = _adapter()
    partial = run_loop(killed, create_unlearner(name, killed, config), forget, retain,
                       LoopSettings(seed=5, checkpoint_path=ckpt, checkpoint_every=2, stop_after_steps=5))
    assert not partial.completed and partial.steps_done == 5
    resumed = _adapter()  # a fresh process: original weights again, then the checkpoint
    result = run_loop(resumed, create_unlearner(name, resumed, config), forget, retain,
                      LoopSettings(seed=5, checkpoint_path=ckpt, resume=True))
    assert result.resumed_from_step == 4 and result.completed  # last checkpoint: step 4
    for (key, a), (_, b) in zip(reference.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), key


def test_retrain_starts_fresh_unless_told_to_keep_a_pretrained_start() -> None:
    forget, retain = _streams()
    pretrained = _adapter()
    with torch.no_grad():  # a start that a seeded re-initialisation cannot reproduce
        for parameter in pretrained.model.parameters():
            parameter.add_(0.5)
    start = {k: v.clone() for k, v in pretrained.model.state_dict().items()}
    no_steps = {"epochs": 1, "batch_size": 64, "lr": 0.0}  # one step that changes no weight

    kept = _adapter()
    kept.model.load_state_dict(start)
    run_loop(kept, create_unlearner("retrain", kept, {**no_steps, "init": "current"}), forget, retain,
             LoopSettings(seed=5))
    fresh = _adapter()
    fresh.model.load_state_dict(start)
    run_loop(fresh, create_unlearner("retrain", fresh, no_steps), forget, retain, LoopSettings(seed=5))
    weights = [k for k, v in start.items() if v.is_floating_point() and "running" not in k]
    assert all(torch.equal(kept.model.state_dict()[k], start[k]) for k in weights)  # the start, untouched
    assert not any(torch.equal(fresh.model.state_dict()[k], start[k]) for k in weights if start[k].numel() > 1)
    with pytest.raises(UserInputError, match="init"):
        create_unlearner("retrain", kept, {"init": "pretrained"})


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path) -> None:
    forget, retain = _streams()
    ckpt = tmp_path / "run.ckpt"
    adapter = _adapter()
    run_loop(adapter, create_unlearner("finetune", adapter, {"epochs": 1, "batch_size": 8}), forget, retain,
             LoopSettings(seed=0, checkpoint_path=ckpt))
    other = _adapter()
    with pytest.raises(UserInputError, match="different run"):
        run_loop(other, create_unlearner("finetune", other, {"epochs": 2, "batch_size": 8}), forget, retain,
                 LoopSettings(seed=0, checkpoint_path=ckpt, resume=True))


class _PoisonedAdapter(TimmAdapter):
    """Returns a NaN loss from the ``poison_at``-th call on."""

    poison_at = 10**9
    calls = 0

    def loss(self, batch):
        out = super().loss(batch)
        self.calls += 1
        if self.calls >= self.poison_at:
            out = {**out, "loss": out["loss"] * float("nan")}
        return out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path) -> None:
    forget, retain = _streams()
    torch.manual_seed(7)
    adapter = _PoisonedAdapter(TimmModelSpec("test_resnet", num_classes=4, in_chans=1))
    adapter.poison_at = 5  # finetune: one loss call per step; steps 0-3 fine, step 4 NaN
    ckpt = tmp_path / "run.ckpt"
    method = create_unlearner("finetune", adapter, {"epochs": 3, "batch_size": 15})  # 2 steps per epoch
    with pytest.raises(TrainingDivergedError, match="non-finite loss at step 4") as info:
        run_loop(adapter, method, forget, retain, LoopSettings(seed=0, checkpoint_path=ckpt))
    assert str(ckpt) in str(info.value)
    digest = sha256_file(ckpt)
    from vision_unlearn.checkpoint import load_checkpoint

    payload, _ = load_checkpoint(ckpt, "run")
    assert payload["step"] == 4  # the end of epoch 2 (steps 0-3), before the bad step
    assert sha256_file(ckpt) == digest


def test_missing_stream_is_user_error() -> None:
    forget, _ = _streams()
    adapter = _adapter()
    with pytest.raises(UserInputError, match="non-empty retain"):
        run_loop(adapter, create_unlearner("finetune", adapter), forget, None)


def test_lr_schedule_hand_values() -> None:
    config = MethodConfig(lr=0.1, schedule="cosine", warmup_steps=2)
    assert lr_at(0, 12, config) == pytest.approx(0.05)
    assert lr_at(1, 12, config) == pytest.approx(0.1)
    assert lr_at(2, 12, config) == pytest.approx(0.1)
    assert lr_at(7, 12, config) == pytest.approx(0.05)  # half way through the 10 cosine steps
    assert lr_at(12, 12, config) == pytest.approx(0.0, abs=1e-12)
    assert lr_at(5, 12, MethodConfig(lr=0.3)) == 0.3


def test_data_order_is_pure_and_batches_balanced() -> None:
    assert torch.equal(epoch_order(10, 1, "forget", 2), epoch_order(10, 1, "forget", 2))
    assert not torch.equal(epoch_order(10, 1, "forget", 2), epoch_order(10, 1, "forget", 3))
    sizes = [b.numel() for b in batches_of(torch.arange(10), 4)]
    assert sizes == [4, 3, 3] and math.ceil(10 / 4) == len(sizes)


@pytest.mark.parametrize(("label", "shown"), [(None, "finetune"), ("train original", "train original")])
def test_progress_bar_says_what_runs(capsys, label, shown) -> None:
    """An original training runs the ``retrain`` method; its bar says "train ...", not "retrain"."""
    forget, retain = _streams()
    adapter = _adapter()
    run_loop(adapter, create_unlearner("finetune", adapter, {"epochs": 1, "batch_size": 16}), forget, retain,
             LoopSettings(seed=0, progress=True, label=label))
    assert f"{shown}:" in capsys.readouterr().err

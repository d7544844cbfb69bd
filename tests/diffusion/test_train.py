"""Model, loss, training determinism, exact resume and checkpoint round trip (tiny model, few steps)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synth.diffusion.model import (
    NULL_CLASS,
    TINY_MODEL,
    ModelConfig,
    build_train_scheduler,
    build_unet,
    load_mask_bank,
    load_unet,
    model_input,
    read_checkpoint_info,
)
from synth.diffusion.patches import PatchSpec
from synth.diffusion.train import TrainConfig, train, training_loss
from toolkit_core.errors import UserInputError

SPEC = PatchSpec(size_px=32)
FAST = TrainConfig(steps=4, batch_size=4, save_every=2, warmup_steps=1)


def _weights(path):
    return torch.load(path / "training_state.pt", weights_only=True)["model"]


def test_unet_shapes_and_class_embedding():
    unet = build_unet(TINY_MODEL, 32)
    x = torch.randn(2, 4, 32, 32)  # x_t, region, masked background, object mask
    out = unet(x, 5, class_labels=torch.tensor([1, NULL_CLASS])).sample
    assert out.shape == (2, 1, 32, 32)
    a = unet(x[:1], 5, class_labels=torch.tensor([1])).sample
    b = unet(x[:1], 5, class_labels=torch.tensor([3])).sample
    assert not torch.allclose(a, b)  # the class changes the prediction
    with pytest.raises(UserInputError):
        ModelConfig(block_out_channels=(30, 60), norm_groups=16)


def test_model_input_hides_region_of_background():
    bg = torch.ones(1, 1, 4, 5)
    region = torch.zeros(1, 1, 4, 5)
    region[..., 1, 2] = 1
    x = model_input(torch.zeros(1, 1, 4, 5), region, bg)
    assert x.shape == (1, 3, 4, 5)
    assert x[0, 2, 1, 2] == 0 and x[0, 2].sum() == 19 and x[0, 1].sum() == 1
    obj = torch.zeros(1, 1, 4, 5)
    obj[..., 1, 2] = 1
    x = model_input(torch.zeros(1, 1, 4, 5), region, bg, obj)
    assert x.shape == (1, 4, 4, 5) and torch.equal(x[:, 3:], obj)


class _ZeroNet(torch.nn.Module):
    """Predicts zero noise and records what it was given."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, sample, t, class_labels=None):
        self.calls.append((sample.clone(), class_labels.clone()))
        return type("Out", (), {"sample": torch.zeros_like(sample[:, :1])})()


def test_training_loss_is_weighted_noise_power_and_applies_dropout():
    scheduler = build_train_scheduler(ModelConfig(**{**TINY_MODEL.__dict__, "prediction_type": "epsilon"}))
    x0 = torch.zeros(256, 1, 8, 8)
    region = torch.zeros(256, 1, 8, 8)
    region[..., :4, :] = 1
    labels = torch.full((256,), 3)
    net = _ZeroNet()
    config = TrainConfig(class_drop_prob=0.0, context_drop_prob=0.0, region_weight=3.0)
    loss = training_loss(net, scheduler, x0, region, labels, config, torch.Generator().manual_seed(0))
    # zero prediction: the loss is the weighted mean of eps^2, E = 1
    assert abs(float(loss) - 1.0) < 0.03
    sample, seen = net.calls[-1]
    assert torch.equal(seen, labels) and torch.equal(sample[:, 1:2], region)
    config = TrainConfig(class_drop_prob=0.5, context_drop_prob=0.5)
    training_loss(net, scheduler, x0 + 0.5, region, labels, config, torch.Generator().manual_seed(1))
    sample, seen = net.calls[-1]
    dropped_class = seen == NULL_CLASS
    dropped_ctx = sample[:, 1].flatten(1).sum(1) == 0
    assert 80 < int(dropped_class.sum()) < 176 and 80 < int(dropped_ctx.sum()) < 176
    assert torch.all(sample[dropped_ctx, 2] == 0) and torch.all(sample[~dropped_ctx, 2].flatten(1).sum(1) > 0)
    assert not torch.equal(dropped_class, dropped_ctx)  # independent draws


def test_v_prediction_target_is_the_velocity():
    # x0 = 0 and a zero prediction: v = sqrt(abar_t) eps, so the loss is E_t[abar_t] (about 0.5 for cosine)
    scheduler = build_train_scheduler(TINY_MODEL)
    assert scheduler.config.prediction_type == "v_prediction"
    x0 = torch.zeros(2048, 1, 4, 4)
    region = torch.ones_like(x0)
    config = TrainConfig(class_drop_prob=0.0, context_drop_prob=0.0)
    loss = training_loss(_ZeroNet(), scheduler, x0, region, torch.full((2048,), 3), config,
                         torch.Generator().manual_seed(0))
    expected = float(scheduler.alphas_cumprod.mean())
    assert 0.4 < expected < 0.6 and abs(float(loss) - expected) < 0.03
    # the object channel and the context reach the network, and are dropped with the context
    net = _ZeroNet()
    context, obj = torch.full_like(x0, 0.5), torch.ones_like(x0)
    training_loss(net, scheduler, x0, region, torch.full((2048,), 3), TrainConfig(context_drop_prob=0.5),
                  torch.Generator().manual_seed(0), context=context, object_mask=obj)
    sample, _ = net.calls[-1]
    dropped = sample[:, 1].flatten(1).sum(1) == 0
    assert sample.shape[1] == 4 and 800 < int(dropped.sum()) < 1250
    assert torch.all(sample[dropped, 2:] == 0) and torch.all(sample[~dropped, 3] == 1)


def test_residual_targets_are_the_scaled_object_layer(tiny_coco):
    from synth.diffusion.patches import load_coco_patches, smooth_fill
    from synth.diffusion.train import training_arrays

    patch_set = load_coco_patches(tiny_coco, SPEC)
    arrays = training_arrays(patch_set, "residual")
    inside = arrays.regions > 0.5
    assert np.all(arrays.targets[~inside] == 0)
    # the layer inside the region has RMS 0.5 by construction of the scale
    assert abs(float(np.sqrt(np.mean(arrays.targets[inside] ** 2))) - 0.5) < 1e-4
    img, reg = patch_set.patches[0].image, patch_set.patches[0].region
    np.testing.assert_allclose(arrays.targets[0][reg], (img - smooth_fill(img, reg))[reg] / arrays.residual_scale,
                               rtol=1e-5, atol=1e-6)
    # the tiny objects are brighter than their surroundings: positive layer on the objects
    assert float(arrays.targets[arrays.objects > 0.5].mean()) > 0.5
    image = training_arrays(patch_set, "image")
    assert image.residual_scale == 1.0 and np.array_equal(image.targets, image.context)


def test_train_writes_a_loadable_checkpoint(tiny_run):
    _, ckpt = tiny_run
    info = read_checkpoint_info(ckpt)
    assert info.category_ids == (1, 3) and info.step == 4 and info.patch == SPEC and info.model == TINY_MODEL
    assert info.train["num_patches"] == 8
    assert len((ckpt / "train_log.jsonl").read_text().splitlines()) == 4
    # the saved UNet holds the EMA weights
    unet = load_unet(ckpt)
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    for param, shadow in zip(unet.parameters(), state["ema"]["shadow_params"]):
        torch.testing.assert_close(param, shadow)
    bank = load_mask_bank(ckpt)
    assert sorted(bank) == [1, 3] and len(bank[1]) == 4


def test_resume_matches_an_uninterrupted_run_and_seed_matters(tiny_run, tmp_path):
    data, full_ckpt = tiny_run
    half = TrainConfig(**{**FAST.__dict__, "steps": 2})
    first = train(data, tmp_path / "resumed", half, TINY_MODEL, SPEC, progress=False)
    after_half = _weights(tmp_path / "resumed")
    second = train(data, tmp_path / "resumed", FAST, TINY_MODEL, SPEC, progress=False)
    assert (first.resumed_from, second.resumed_from, second.step) == (0, 2, 4)
    full, resumed = _weights(full_ckpt), _weights(tmp_path / "resumed")
    for key in full:  # two separate processes of training give the same weights
        torch.testing.assert_close(full[key], resumed[key], rtol=1e-4, atol=1e-5)
    assert any(not torch.equal(full[k], after_half[k]) for k in full)
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    other_seed = TrainConfig(**{**half.__dict__, "seed": 1})
    train(data, tmp_path / "seed1", other_seed, TINY_MODEL, SPEC, progress=False)
    seed1 = _weights(tmp_path / "seed1")
    assert any(not torch.allclose(after_half[k], seed1[k]) for k in full)


def test_resume_with_another_geometry_is_refused(tiny_run):
    data, ckpt = tiny_run
    with pytest.raises(UserInputError, match="patch geometry"):
        train(data, ckpt, FAST, TINY_MODEL, PatchSpec(size_px=48), progress=False)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(UserInputError, match="not a diffusers model directory"):
        read_checkpoint_info(tmp_path)
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(UserInputError, match="--pretrained"):
        read_checkpoint_info(tmp_path)

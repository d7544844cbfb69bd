"""Every registered method x the timm adapter: finite loss, the model changes, the config
round-trips, and the same seed gives the same result."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.api import (
    config_class_of,
    config_from_dict,
    config_to_dict,
    create_unlearner,
    dump_config_yaml,
    list_unlearners,
)
from vision_unlearn.loop import LoopSettings, make_stream, run_loop

NUM_CLASSES = 3

def _data() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(30) % NUM_CLASSES
    images = 0.2 * torch.rand(30, 1, 17, 11, generator=generator)
    for i, label in enumerate(labels.tolist()):
        images[i, 0, 5 * label:5 * label + 5, :] += 0.8
    index = torch.arange(30)
    forget_rows = index[labels == 2]
    retain_rows = index[labels != 2]
    return (make_stream(images[forget_rows], labels[forget_rows], forget_rows),
            make_stream(images[retain_rows], labels[retain_rows], retain_rows))


def _tiny_config(name: str):
    base = config_class_of(name)()
    changes = {"batch_size": 8}
    if base.epochs > 0:
        changes["epochs"] = 1
    return dataclasses.replace(base, **changes)


def _run(name: str, seed: int = 0):
    torch.manual_seed(123)
    adapter = TimmAdapter(TimmModelSpec("test_resnet", num_classes=NUM_CLASSES, in_chans=1))
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    forget, retain = _data()
    probe = forget["images"]
    logits_before = adapter.predict(probe)
    method = create_unlearner(name, adapter, _tiny_config(name))
    result = run_loop(adapter, method, forget, retain, LoopSettings(seed=seed))
    return adapter, before, logits_before, adapter.predict(probe), result


@pytest.fixture(scope="module")
def runs() -> dict[str, tuple]:
    return {}


@pytest.mark.parametrize("name", list_unlearners())
def test_method_conformance(name: str, runs) -> None:
    adapter, before, logits_before, logits_after, result = _run(name)
    assert result.completed
    for epoch_logs in result.history:
        for key, value in epoch_logs.items():
            assert torch.isfinite(torch.tensor(value)), f"{name}: {key} = {value}"
    assert torch.isfinite(logits_after).all()
    # the model's behaviour on the forget set changes
    assert not torch.allclose(logits_before, logits_after), f"{name} left the forget outputs unchanged"
    if result.total_steps > 0:
        changed = any(not torch.equal(before[k], v) for k, v in adapter.model.state_dict().items())
        assert changed, f"{name} took {result.total_steps} steps but no weight changed"
    # same seed -> same result
    _, _, _, logits_again, _ = _run(name)
    assert torch.equal(logits_after, logits_again), f"{name} is not deterministic under a fixed seed"


@pytest.mark.parametrize("name", list_unlearners())
def test_config_round_trip(name: str, tmp_path) -> None:
    config = _tiny_config(name)
    assert config_from_dict(type(config), config_to_dict(config)) == config
    path = tmp_path / f"{name}.yaml"
    path.write_text(dump_config_yaml(config))
    from vision_unlearn.api import load_config_yaml

    assert load_config_yaml(type(config), path) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.lr = 1.0  # type: ignore[misc]

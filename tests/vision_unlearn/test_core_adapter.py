"""The timm adapter fulfils the ModelAdapter protocol on non-square single-channel images."""

from __future__ import annotations

import pytest
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.protocols import ModelAdapter

HEIGHT, WIDTH = 17, 11
NUM_CLASSES = 3

def tiny_images(n: int = 36, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``[n, 1, 17, 11]`` images whose bright row band encodes the class, plus ``[n]`` labels."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    images = 0.2 * torch.rand(n, 1, HEIGHT, WIDTH, generator=generator)
    for i, label in enumerate(labels.tolist()):
        images[i, 0, 5 * label:5 * label + 5, :] += 0.8
    return images, labels


def tiny_adapter(seed: int = 0, num_classes: int = NUM_CLASSES) -> TimmAdapter:
    torch.manual_seed(seed)
    return TimmAdapter(TimmModelSpec("test_resnet", num_classes=num_classes, in_chans=1))



def test_protocol_and_outputs() -> None:
    adapter = tiny_adapter()
    assert isinstance(adapter, ModelAdapter)
    images, labels = tiny_images(6)
    out = adapter.loss({"images": images, "labels": labels})
    assert out["logits"].shape == (6, NUM_CLASSES) and out["per_sample"].shape == (6,)
    assert torch.allclose(out["loss"], out["per_sample"].mean())
    assert adapter.predict(images).shape == (6, NUM_CLASSES)
    groups = adapter.parameter_groups()
    assert groups["head"] and groups["backbone"]
    assert sorted(groups["head"] + groups["backbone"]) == sorted(n for n, _ in adapter.trainable_parameters())


def test_feature_hook_sees_penultimate_features() -> None:
    adapter = tiny_adapter()
    seen = []
    handle = adapter.add_feature_hook(lambda name, x: seen.append((name, x.shape)))
    adapter.predict(tiny_images(4)[0])
    handle.remove()
    adapter.predict(tiny_images(4)[0])
    assert len(seen) == 1 and seen[0][0] == "pre_logits" and seen[0][1][0] == 4


def test_reset_parameters_is_seeded() -> None:
    a, b = tiny_adapter(seed=0), tiny_adapter(seed=5)
    a.reset_parameters(3)
    b.reset_parameters(3)
    for x, y in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(x, y)


def test_bad_model_arguments() -> None:
    with pytest.raises(UserInputError, match="unknown timm model"):
        TimmAdapter(TimmModelSpec("no_such_net", num_classes=3))
    with pytest.raises(UserInputError, match="in_chans"):
        TimmAdapter(TimmModelSpec("test_resnet", num_classes=3, in_chans=2))

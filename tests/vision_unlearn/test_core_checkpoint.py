"""Checkpoint files: atomic, weights-only, clear errors; the timm adapter's weight loading."""

from __future__ import annotations

import pytest
import torch

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.checkpoint import load_checkpoint, load_model_file, save_checkpoint, save_model

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



def test_round_trip_and_kind_check(tmp_path) -> None:
    path = tmp_path / "run.ckpt"
    save_checkpoint(path, "run", {"w": torch.arange(3.0), "step": 4, "nested": {"a": [1, 2]}}, {"seed": 1})
    payload, meta = load_checkpoint(path, "run")
    assert torch.equal(payload["w"], torch.arange(3.0)) and payload["step"] == 4 and meta == {"seed": 1}
    assert payload["nested"] == {"a": [1, 2]}
    with pytest.raises(UserInputError, match="expected a 'model' checkpoint"):
        load_checkpoint(path, "model")
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt"]  # no temporary file left


@pytest.mark.parametrize("content", [b"", b"not a zip at all", None])
def test_corrupted_checkpoint_is_user_error(tmp_path, content) -> None:
    path = tmp_path / "bad.ckpt"
    if content is None:
        save_checkpoint(path, "run", {"w": torch.ones(1000)})
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(UserInputError, match="corrupted|unreadable") as info:
        load_checkpoint(path, "run")
    assert str(path) in str(info.value)


def test_foreign_pickle_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"format": "vision_unlearn/1", "kind": "run", "meta": "{}", "payload": {"obj": object()}}, path)
    with pytest.raises(UserInputError):
        load_checkpoint(path, "run")


def test_missing_file(tmp_path) -> None:
    with pytest.raises(UserInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt", "run")


def test_adapter_loads_model_file_and_rejects_other_class_count(tmp_path) -> None:
    source = tiny_adapter(seed=1)
    path = tmp_path / "model.pt"
    save_model(path, source.model.state_dict(), source.describe())
    target = tiny_adapter(seed=2)
    target.load_weights(path)
    for (name, a), (_, b) in zip(source.model.state_dict().items(), target.model.state_dict().items()):
        assert torch.equal(a, b), name
    state, meta = load_model_file(path)
    assert meta["model"]["num_classes"] == 3 and meta["model"]["name"] == "test_resnet"
    with pytest.raises(UserInputError, match="3 classes but the data has 5"):
        tiny_adapter(num_classes=5).load_weights(path)
    plain = tmp_path / "plain.pt"
    torch.save(source.model.state_dict(), plain)
    with pytest.raises(UserInputError, match="do not fit"):
        tiny_adapter(num_classes=5).load_weights(plain)

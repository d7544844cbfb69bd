"""Specification of ``reva``: the prototype abstains through the head, forget features move to it,
retain features stay where they were."""

from __future__ import annotations

import pytest
import torch

from rfo_bench.errors import UserInputError
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.api import create_unlearner
from vision_unlearn.loop import LoopSettings, make_stream, run_loop
from vision_unlearn.methods.reva import _features_and_logits
from vision_unlearn.protocols import StepState


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.rand(12, 1, 16, 16, generator=generator)
    images[:4, :, :8] += 0.8
    images[4:8, :, 8:] += 0.8
    images[8:, :, :, :8] += 0.8
    return images.clamp(0, 1), torch.tensor([0] * 4 + [1] * 4 + [2] * 4)


def _features(adapter: TimmAdapter, images: torch.Tensor) -> torch.Tensor:
    adapter.model.eval()
    with torch.no_grad():
        features, _ = _features_and_logits(adapter, {"images": images, "labels": torch.zeros(len(images)).long()})
    return features


def test_prototype_abstains_and_a_step_moves_forget_features_towards_it() -> None:
    torch.manual_seed(0)
    adapter = TimmAdapter(TimmModelSpec("test_vit", num_classes=3, in_chans=1, img_size=16))
    images, labels = _data()
    forget = labels == 0
    forget_stream, retain_stream = make_stream(images[forget], labels[forget]), make_stream(images[~forget],
                                                                                         labels[~forget])
    method = create_unlearner("reva", adapter, {"unknown_count": 8})
    method.setup(adapter, forget_stream, retain_stream, torch.device("cpu"))
    head_logits = adapter.model.get_classifier()(method._prototype)
    # kept classes 1 and 2 tie (abstain); class 0, held only by the forget set, is 10 logits below
    assert head_logits[1].item() == pytest.approx(head_logits[2].item(), abs=1e-4)
    assert (head_logits[1] - head_logits[0]).item() == pytest.approx(10.0, abs=1e-3)
    state = StepState(step=0, total_steps=1, epoch=0, lr=0.0, device=torch.device("cpu"), generator=torch.Generator())
    optimizer = torch.optim.SGD(adapter.model.parameters(), lr=1e-3)
    adapter.model.train()
    first = method.compute_loss(adapter, forget_stream, retain_stream, state)
    # the keep term is at its minimum (gradient 0): a small step follows the alignment gradient alone
    assert first.logs["keep"] == pytest.approx(0.0, abs=1e-6)
    first.loss.backward()
    optimizer.step()
    second = method.compute_loss(adapter, forget_stream, retain_stream, state)
    assert second.logs["align"] < first.logs["align"]


@pytest.mark.slow
def test_reva_aligns_forget_features_to_an_abstaining_prototype() -> None:
    torch.manual_seed(0)
    adapter = TimmAdapter(TimmModelSpec("test_vit", num_classes=3, in_chans=1, img_size=16))
    images, labels = _data()
    optimizer = torch.optim.Adam(adapter.model.parameters(), lr=3e-3)
    for _ in range(20):
        loss = adapter.loss({"images": images, "labels": labels})["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    forget = labels == 0
    method = create_unlearner("reva", adapter, {"epochs": 10, "lr": 3e-3, "batch_size": 4, "unknown_count": 8})
    method.setup(adapter, make_stream(images[forget], labels[forget]), make_stream(images[~forget], labels[~forget]),
                 torch.device("cpu"))
    prototype = method._prototype
    head_logits = adapter.model.get_classifier()(prototype)
    assert head_logits[1].item() == pytest.approx(head_logits[2].item(), abs=1e-4)  # the prototype abstains
    distance_before = (_features(adapter, images[forget]) - prototype).norm(dim=1).mean()

    result = run_loop(adapter, method, make_stream(images[forget], labels[forget]),
                      make_stream(images[~forget], labels[~forget]), LoopSettings(seed=0))
    assert result.steps_done == 10
    distance_after = (_features(adapter, images[forget]) - prototype).norm(dim=1).mean()
    assert distance_after < 0.8 * distance_before
    forget_probs = adapter.predict(images[forget]).softmax(dim=1)
    assert forget_probs.max(dim=1).values.mean() < 0.6  # flatter than a confident answer
    retain_predictions = adapter.predict(images[~forget]).argmax(dim=1)
    assert (retain_predictions == labels[~forget]).float().mean() >= 0.75


def test_reva_state_round_trip_and_bad_config() -> None:
    with pytest.raises(UserInputError) as info:
        create_unlearner("reva", None, {"beta": -1.0})
    assert info.value.field == "beta"
    method = create_unlearner("reva", None, {})
    method.load_state_dict({"prototype": torch.ones(4), "scale": 2.0})
    state = method.state_dict()
    assert torch.equal(state["prototype"], torch.ones(4)) and state["scale"] == 2.0
    adapter = TimmAdapter(TimmModelSpec("test_vit", num_classes=3, in_chans=1, img_size=16))
    images, labels = _data()
    with pytest.raises(UserInputError, match="non-empty forget"):
        method.setup(adapter, make_stream(images[:0], labels[:0]), make_stream(images, labels), torch.device("cpu"))

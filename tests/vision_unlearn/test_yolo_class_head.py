"""YoloAdapter.reset_class_head: the outputs of a class a trained detector never saw start again from a fresh
head's prior, every other weight kept (the demo's start on a trained detector)."""

from __future__ import annotations

import pytest
import torch

from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec


def test_reset_class_head_gives_a_class_a_fresh_heads_outputs_and_keeps_every_other_weight() -> None:
    spec = YoloModelSpec("yolov8n.yaml", num_classes=3, in_chans=1, image_size=64,
                         class_names=("needle", "sponge", "clamp"))
    torch.manual_seed(0)
    trained = YoloAdapter(spec)
    with torch.no_grad():  # a "trained" detector: every weight moved away from its initialisation
        for parameter in trained.model.parameters():
            parameter.add_(0.3)
    before = {k: v.clone() for k, v in trained.model.state_dict().items()}
    trained.reset_class_head(["sponge"], seed=4)
    fresh = YoloAdapter(spec)
    fresh.reset_parameters(4)
    for ours, theirs in zip(trained.detector.model[-1].cv3, fresh.detector.model[-1].cv3, strict=True):
        torch.testing.assert_close(ours[-1].weight[1], theirs[-1].weight[1])
        torch.testing.assert_close(ours[-1].bias[1], theirs[-1].bias[1])  # the prior bias of a fresh head
    # exact: the kept tensors are never computed on, and the reset copies rows (no arithmetic on either side)
    changed = [k for k, v in trained.model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all(".cv3." in k and k.endswith((".2.weight", ".2.bias")) for k in changed)
    for k in changed:  # only the row of that class
        rows = (trained.model.state_dict()[k] != before[k]).reshape(before[k].shape[0], -1).any(dim=1)
        assert rows.nonzero().flatten().tolist() == [1]
    with pytest.raises(ValueError, match="not a class"):
        trained.reset_class_head(["unicorn"], seed=0)

"""Faster R-CNN / RetinaNet / FCOS on timm backbones: one grayscale channel in, losses and boxes out."""

from __future__ import annotations

import pytest
import torch

from rfo_bench.detectors import TrainConfig, get_detector, list_detectors, recipe_with_overrides
from rfo_bench.detectors.torchvision_models import TimmFPNBackbone
from toolkit_core.errors import UserInputError

CONFIG = TrainConfig(model="fcos", recipe=recipe_with_overrides("cpu-tiny", {"imgsz": 64, "fpn_channels": 64}),
                     backbone="test_resnet")


def test_backbone_takes_one_channel_and_returns_pyramid() -> None:
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    backbone = TimmFPNBackbone("test_resnet", fpn_channels=16, extra_blocks=LastLevelMaxPool())
    assert backbone.strides == [8, 16, 32]
    features = backbone(torch.rand(2, 1, 64, 96))  # non-square: H=64, W=96
    shapes = [tuple(f.shape) for f in features.values()]
    assert shapes == [(2, 16, 8, 12), (2, 16, 4, 6), (2, 16, 2, 3), (2, 16, 1, 2)]


@pytest.mark.parametrize("name", list_detectors("torchvision"))
def test_torchvision_detector_trains_and_predicts_on_grayscale(name: str) -> None:
    torch.manual_seed(0)
    model = get_detector(name).builder(3, CONFIG)
    images = [torch.rand(1, 44, 64), torch.rand(1, 44, 64)]
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 22.0, 30.0]]), "labels": torch.tensor([2])},
               {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}]  # a negative image
    model.train()
    losses = model(images, targets)
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert all(p.grad is not None for p in model.backbone.fpn.parameters())
    model.eval()
    with torch.inference_mode():
        out = model([torch.rand(1, 44, 64)])[0]
    boxes = out["boxes"]
    assert boxes.shape[1] == 4 and out["scores"].shape[0] == boxes.shape[0] <= CONFIG.recipe.max_detections
    if len(boxes):
        assert float(boxes[:, [0, 2]].max()) <= 64 + 1e-3 and float(boxes[:, [1, 3]].max()) <= 44 + 1e-3
        assert set(out["labels"].tolist()) <= {0, 1, 2}  # 0: torchvision's unused slot, dropped at prediction


def test_unknown_or_unsuitable_backbone_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="unknown timm model"):
        get_detector("fasterrcnn").builder(2, TrainConfig(model="fasterrcnn", recipe=CONFIG.recipe, backbone="resnet9000"))
    with pytest.raises(UserInputError, match="does not exist"):
        get_detector("fcos").builder(2, TrainConfig(model="fcos", recipe=CONFIG.recipe, backbone="test_resnet",
                                                    weights="/nonexistent/weights.pth"))


def test_local_backbone_checkpoint_is_loaded(tmp_path) -> None:
    import timm

    source = timm.create_model("test_resnet", pretrained=False, in_chans=1, num_classes=0)
    with torch.no_grad():
        for p in source.parameters():
            p.fill_(0.125)
    torch.save(source.state_dict(), tmp_path / "backbone.pth")
    model = get_detector("fcos").builder(2, TrainConfig(model="fcos", recipe=CONFIG.recipe, backbone="test_resnet",
                                                         weights=str(tmp_path / "backbone.pth")))
    stem = next(iter(model.backbone.body.parameters()))
    assert torch.allclose(stem, torch.full_like(stem, 0.125))

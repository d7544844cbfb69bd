"""Faster R-CNN, RetinaNet and FCOS (torchvision) on any ``timm`` backbone through a feature pyramid.

The backbone is ``timm.create_model(name, features_only=True, in_chans=1)``: radiographs enter as
one float32 channel, so no 8-bit or RGB conversion ever happens. Its last three stages (strides
8/16/32 for CNNs) feed :class:`torchvision.ops.FeaturePyramidNetwork`; Faster R-CNN adds a max-pool
level (as torchvision's ResNet-50-FPN does), RetinaNet and FCOS add P6/P7. Anchor sizes follow the
level strides (``4 x stride`` for the anchor-based heads, ``stride`` for FCOS's points), so they
scale with whatever backbone is chosen.

Weights: ``pretrained=False`` unless ``TrainConfig.weights`` names a local backbone checkpoint,
which timm loads (and adapts to one input channel) from that file; nothing is downloaded.

References:
    Ren et al., "Faster R-CNN", NeurIPS 2015; Lin et al., "Focal Loss for Dense Object Detection",
    ICCV 2017; Tian et al., "FCOS: Fully Convolutional One-Stage Object Detection", ICCV 2019;
    Lin et al., "Feature Pyramid Networks for Object Detection", CVPR 2017.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from pathlib import Path

from torch import Tensor, nn

from rfo_bench.detectors.config import TrainConfig
from rfo_bench.detectors.registry import register_detector
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)

IMAGE_MEAN = (0.5,)
IMAGE_STD = (0.25,)
"""Normalisation of the one-channel ``[0, 1]`` input inside the detector's transform."""


class TimmFPNBackbone(nn.Module):
    """A ``timm`` ``features_only`` network followed by a feature pyramid.

    Args:
        model_name: any timm model that supports ``features_only``.
        fpn_channels: channels of every pyramid level (``out_channels`` for torchvision heads).
        extra_blocks: torchvision extra pyramid block (``LastLevelMaxPool`` or ``LastLevelP6P7``).
        in_chans: input channels (1 for radiographs).
        weights: optional local checkpoint of the timm model.
        num_levels: how many of the deepest backbone stages feed the pyramid.

    Forward: ``Tensor[B, in_chans, H, W]`` -> ``OrderedDict[str, Tensor[B, fpn_channels, h_i, w_i]]``.
    """

    def __init__(
        self,
        model_name: str,
        *,
        fpn_channels: int,
        extra_blocks: nn.Module | None,
        in_chans: int = 1,
        weights: str | None = None,
        num_levels: int = 3,
    ) -> None:
        super().__init__()
        from torchvision.ops import FeaturePyramidNetwork

        self.body = create_timm_features(model_name, in_chans=in_chans, weights=weights)
        info = self.body.feature_info
        n_stages = len(info.channels())
        if n_stages < num_levels:
            raise UserInputError(
                f"timm model exposes {n_stages} feature stages, {num_levels} needed", field="backbone", value=model_name
            )
        self.stage_indices = list(range(n_stages - num_levels, n_stages))
        channels = [info.channels()[i] for i in self.stage_indices]
        self.strides = [int(info.reduction()[i]) for i in self.stage_indices]
        self.fpn = FeaturePyramidNetwork(channels, fpn_channels, extra_blocks=extra_blocks)
        self.out_channels = fpn_channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        features = self.body(images)
        chosen = OrderedDict((str(k), features[i]) for k, i in enumerate(self.stage_indices))
        return self.fpn(chosen)


MAX_BACKBONE_BYTES = 4 << 30
"""Largest backbone weights file read (4 GiB)."""


def _check_backbone_weights(path: Path) -> None:
    """Read a backbone file the way timm will (``weights_only=True`` or safetensors) to fail with one line.

    Raises:
        UserInputError: an oversized, damaged or foreign file, naming it.
    """
    from timm.models import load_state_dict

    if path.stat().st_size > MAX_BACKBONE_BYTES:
        raise UserInputError(f"backbone weights file is larger than {MAX_BACKBONE_BYTES >> 30} GiB", file=path,
                             field="weights")
    try:
        state = load_state_dict(str(path))
    except Exception as err:  # torch and safetensors raise many types for damaged or foreign files
        raise UserInputError(f"damaged or unreadable backbone weights ({type(err).__name__})", file=path,
                             field="weights") from None
    if not isinstance(state, dict) or not state:
        raise UserInputError("backbone weights hold no state dict", file=path, field="weights")


def create_timm_features(model_name: str, *, in_chans: int = 1, weights: str | None = None) -> nn.Module:
    """``timm.create_model(..., features_only=True)`` without network access.

    Raises:
        UserInputError: unknown timm model, a model without ``features_only`` support, or a missing,
            damaged or foreign weights file.
    """
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    import timm

    kwargs: dict[str, object] = {"features_only": True, "in_chans": in_chans, "pretrained": False}
    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise UserInputError("backbone weights file does not exist", file=path, field="weights")
        _check_backbone_weights(path)
        kwargs.update(pretrained=True, pretrained_cfg_overlay={"file": str(path.resolve()), "num_classes": 0})
    if not timm.is_model(model_name):
        raise UserInputError("unknown timm model name (see timm.list_models())", field="backbone", value=model_name)
    try:
        return timm.create_model(model_name, **kwargs)
    except (RuntimeError, TypeError, AssertionError, NotImplementedError) as err:
        raise UserInputError(f"timm cannot build this backbone with features_only: {err}",
                             field="backbone", value=model_name) from None


def _check_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")


def _common_kwargs(config: TrainConfig) -> dict[str, object]:
    recipe = config.recipe
    return {
        "min_size": recipe.imgsz,
        "max_size": recipe.imgsz,
        "image_mean": list(IMAGE_MEAN),
        "image_std": list(IMAGE_STD),
    }


@register_detector("fasterrcnn", family="torchvision",
                   description="Faster R-CNN, timm backbone + FPN (max-pool level), two-stage")
def build_fasterrcnn(num_classes: int, config: TrainConfig) -> nn.Module:
    """Faster R-CNN with ``num_classes`` outputs (background included) on ``config.backbone``."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops import MultiScaleRoIAlign
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    _check_classes(num_classes)
    backbone = TimmFPNBackbone(config.backbone, fpn_channels=config.recipe.fpn_channels,
                               extra_blocks=LastLevelMaxPool(), weights=config.weights)
    strides = [*backbone.strides, backbone.strides[-1] * 2]
    anchors = AnchorGenerator(sizes=tuple((4 * s,) for s in strides), aspect_ratios=((0.5, 1.0, 2.0),) * len(strides))
    roi_pool = MultiScaleRoIAlign(featmap_names=[str(i) for i in range(len(backbone.strides))],
                                  output_size=7, sampling_ratio=2)
    return FasterRCNN(
        backbone, num_classes=num_classes, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
        box_batch_size_per_image=config.recipe.roi_batch_size,
        box_score_thresh=config.recipe.score_threshold, box_detections_per_img=config.recipe.max_detections,
        **_common_kwargs(config),
    )


def _p6p7_backbone(config: TrainConfig) -> tuple[TimmFPNBackbone, list[int]]:
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    channels = config.recipe.fpn_channels
    backbone = TimmFPNBackbone(config.backbone, fpn_channels=channels,
                               extra_blocks=LastLevelP6P7(channels, channels), weights=config.weights)
    strides = [*backbone.strides, backbone.strides[-1] * 2, backbone.strides[-1] * 4]
    return backbone, strides


@register_detector("retinanet", family="torchvision",
                   description="RetinaNet, timm backbone + FPN (P3-P7), one-stage, focal loss")
def build_retinanet(num_classes: int, config: TrainConfig) -> nn.Module:
    """RetinaNet with ``num_classes`` outputs (index 0 unused, as in torchvision) on ``config.backbone``."""
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    _check_classes(num_classes)
    backbone, strides = _p6p7_backbone(config)
    scales = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    anchors = AnchorGenerator(sizes=tuple(tuple(4 * s * k for k in scales) for s in strides),
                              aspect_ratios=((0.5, 1.0, 2.0),) * len(strides))
    return RetinaNet(
        backbone, num_classes=num_classes, anchor_generator=anchors, score_thresh=config.recipe.score_threshold,
        detections_per_img=config.recipe.max_detections, **_common_kwargs(config),
    )


@register_detector("fcos", family="torchvision",
                   description="FCOS, timm backbone + FPN (P3-P7), anchor-free one-stage")
def build_fcos(num_classes: int, config: TrainConfig) -> nn.Module:
    """FCOS with ``num_classes`` outputs (index 0 unused, as in torchvision) on ``config.backbone``."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    _check_classes(num_classes)
    if config.recipe.fpn_channels % 32:
        raise UserInputError("FCOS heads use GroupNorm(32): fpn_channels must be a multiple of 32",
                             field="fpn_channels", value=config.recipe.fpn_channels)
    backbone, strides = _p6p7_backbone(config)
    anchors = AnchorGenerator(sizes=tuple((s,) for s in strides), aspect_ratios=((1.0,),) * len(strides))
    return FCOS(
        backbone, num_classes=num_classes, anchor_generator=anchors, score_thresh=config.recipe.score_threshold,
        detections_per_img=config.recipe.max_detections, **_common_kwargs(config),
    )

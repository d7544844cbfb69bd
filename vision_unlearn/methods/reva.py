"""``reva``: align forget representations to an "unknown" prototype so the model abstains.

After "Unlearners Can Lie: Evaluating and Improving Honesty in LLM Unlearning" (2025), whose ReVa
aligns the representations of forget inputs with a rejection representation so that an unlearned
model admits it does not know instead of answering wrongly. The vision form, on the penultimate
(pooled, pre-logits) features ``h``:

    ``min_θ  mean_f ||h_θ(x_f) - p||^2 / s  +  beta * mean_r ||h_θ(x_r) - h_0(x_r)||^2 / s
             + gamma * CE(x_r, y_r)``

* ``p``: the *unknown prototype*, the mean feature of unknown inputs (noise / blank images) under
  the starting model; with ``prototype = "abstain"`` (default) it is moved to the nearest point at
  which the linear head gives equal logits (:func:`vision_unlearn.steering.abstain_prototype`), so
  an aligned forget input gets a uniform, i.e. abstaining, prediction (classes only the forget set
  holds, as in a class-wise request, are put 10 logits lower: a retrained model never predicts them);
* ``h_0``: the starting model's features (frozen copy); ``s``: the mean squared norm of the starting
  model's unknown features, which makes the weights scale-free.

Start it from the original model, or from an already unlearned one (``--model`` of the output of
another method) to repair its honesty.

**On a detector** (batches with ``boxes_xyxy``, e.g. the YOLO adapter) "I do not know" is
*background*: no box at all, rather than a box of another class (a lie). The features are the
neck maps fed to the detection head (every ``feature_info`` level: P3, P4, P5), cell by cell, and
the loss becomes, per level ``l`` and averaged over the levels,

    ``mean_{cells in forget boxes} ||h_l - p_l||^2 / s_l
      + beta * mean_{cells of retain images} ||h_l - h_{0,l}||^2 / s_l  (+ gamma * retain detection loss)``

* the cells of a forget box are those whose centre lies in it (the anchors YOLO's assigner gives
  it; at least the cell holding the box centre, :func:`vision_unlearn.steering.box_position_mask`);
* ``p_l``: the *background prototype*, the starting model's mean activation at retain cells farther
  than one stride from every box (``prototype`` and ``unknown*`` are not used for detectors);
* ``s_l``: the mean squared norm of those background activations;
* the keep term skips the cells of forgotten objects that stay in retain images (a class or
  instance request keeps those images without the forgotten boxes), which must move, not stay.

A detector aligned this way stops finding the forgotten objects because, where they are, it sees
what it sees on empty background, instead of finding them as another class.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit_core.errors import UserInputError
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner
from vision_unlearn.steering import (
    BoxedImages,
    abstain_prototype,
    box_position_mask,
    boxed_images,
    collect_position_features,
    feature_layer_names,
    forget_only_classes,
    linear_head,
    make_unknown_images,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RevaConfig(MethodConfig):
    """Attributes:
    beta: weight of keeping retain features close to the starting model's.
    gamma: weight of the retain cross-entropy (0: features only).
    prototype: ``abstain`` (unknown mean moved to equal logits) or ``unknown`` (the plain mean).
    unknown: the unknown inputs: ``noise``, ``blank`` or ``mixed``.
    unknown_count: how many unknown inputs define the prototype.
    unknown_seed: their seed.
    max_background: background cells per level at most for a detector's prototype.
    """

    epochs: int = 5
    lr: float = 1e-3
    optimizer: Literal["sgd", "adam"] = "adam"
    weight_decay: float = 0.0
    beta: float = 1.0
    gamma: float = 0.0
    prototype: Literal["abstain", "unknown"] = "abstain"
    unknown: Literal["noise", "blank", "mixed"] = "mixed"
    unknown_count: int = 256
    unknown_seed: int = 0
    max_background: int = 20000

    def __post_init__(self) -> None:
        if self.beta < 0 or self.gamma < 0:
            raise UserInputError("beta and gamma must be >= 0", field="beta" if self.beta < 0 else "gamma",
                                 value=min(self.beta, self.gamma))
        if self.unknown_count < 1:
            raise UserInputError("unknown_count must be >= 1", field="unknown_count", value=self.unknown_count)
        if self.max_background < 1:
            raise UserInputError("max_background must be >= 1", field="max_background", value=self.max_background)


def _features_and_logits(adapter: ModelAdapter, batch: Batch) -> tuple[Tensor, dict[str, Tensor]]:
    captured: list[Tensor] = []
    handle = adapter.add_feature_hook(lambda _name, features: captured.append(features))
    try:
        out = adapter.loss(batch)
    finally:
        handle.remove()
    return captured[-1].flatten(1), out


@register_unlearner("reva")
class Reva(BaseUnlearner):
    """Representation alignment of forget inputs to an abstaining "unknown" prototype."""

    config_class = RevaConfig
    epoch_over = "forget"
    needs = frozenset({"forget", "retain"})

    def __init__(self, config: MethodConfig) -> None:
        super().__init__(config)
        self.config: RevaConfig = config  # type: ignore[assignment]
        self._teacher: ModelAdapter | None = None
        self._prototype: Tensor | None = None
        self._scale: float = 1.0
        # detectors: one prototype / scale per neck level, and the forgotten boxes inside retain images
        self._levels: list[str] = []
        self._level_prototypes: list[Tensor] = []
        self._level_scales: list[float] = []
        self._retain_ignore: BoxedImages | None = None

    def setup(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, device: torch.device) -> None:
        if forget is None or int(forget["images"].shape[0]) == 0:
            raise UserInputError("reva needs a non-empty forget set", field="forget")
        cfg = self.config
        teacher = copy.deepcopy(adapter)
        teacher.model.to(device).eval()
        teacher.module = teacher.model
        for param in teacher.model.parameters():
            param.requires_grad_(False)
        self._teacher = teacher
        if "boxes_xyxy" in forget:
            self._setup_detector(teacher, forget, retain, device)
            return
        unknown = make_unknown_images(forget["images"][:1].cpu(), cfg.unknown_count, cfg.unknown, cfg.unknown_seed)
        features = self._teacher_features(unknown.to(device))
        prototype = features.mean(dim=0)
        if cfg.prototype == "abstain":
            head = linear_head(teacher.model)
            if head.in_features != prototype.numel():
                raise UserInputError("the pre-logits features do not match the classifier input",
                                     field="prototype", value=cfg.prototype)
            suppressed = [] if retain is None else forget_only_classes(forget["labels"], retain["labels"])
            prototype = abstain_prototype(head.weight.detach().cpu(), None if head.bias is None
                                          else head.bias.detach().cpu(), prototype.cpu(), suppressed).to(device)
        self._prototype = prototype.detach()
        self._scale = max(float(features.pow(2).sum(dim=1).mean()), 1e-12)

    def _setup_detector(self, teacher: ModelAdapter, forget: Batch, retain: Batch | None, device: torch.device
                        ) -> None:
        if retain is None or int(retain["images"].shape[0]) == 0 or "boxes_xyxy" not in retain:
            raise UserInputError("reva on a detector needs the retain stream (its background defines the "
                                 "prototype)", field="retain")
        levels = feature_layer_names(teacher.model)
        if not levels:
            raise UserInputError("reva on a detector needs the model's feature_info (the neck outputs)",
                                 field="model", value=type(teacher.model).__name__)
        retain_boxes = boxed_images(retain, ignore=forget)
        generator = torch.Generator().manual_seed(self.config.unknown_seed)
        per_image = max(1, -(-self.config.max_background // int(retain["images"].shape[0])))
        prototypes, scales = [], []
        for level in levels:
            background = collect_position_features(teacher.model, level, retain_boxes, 32, per_image,
                                                   generator)["background"]
            if background.shape[0] == 0:
                background = collect_position_features(teacher.model, level, retain_boxes, 32, per_image, generator,
                                                       background_margin=0.0)["background"]
            if background.shape[0] == 0:
                raise UserInputError("no background cell in the retain images at a neck level; the background "
                                     "prototype is undefined", field="retain", value=level)
            prototypes.append(background.mean(dim=0).to(device))
            scales.append(max(float(background.pow(2).sum(dim=1).mean()), 1e-12))
        self._levels, self._level_prototypes, self._level_scales = levels, prototypes, scales
        self._retain_ignore = retain_boxes
        logger.info("reva on a detector: background prototypes of %s", ", ".join(levels))

    def _level_maps(self, adapter: ModelAdapter, images: Tensor) -> list[Tensor]:
        """The neck maps ``[B, C_l, H_l, W_l]`` of ``adapter`` for ``images`` (in the graph)."""
        captured: dict[str, Tensor] = {}
        handles = [adapter.add_feature_hook(lambda name, maps: captured.__setitem__(name, maps), layer=level)
                   for level in self._levels]
        try:
            adapter.module(images)
        finally:
            for handle in handles:
                handle.remove()
        return [captured[level] for level in self._levels]

    def _detector_loss(self, adapter: ModelAdapter, forget: Batch, retain: Batch) -> StepOutput:
        assert self._teacher is not None and self._retain_ignore is not None
        cfg = self.config
        n_forget = int(forget["images"].shape[0])
        images = torch.cat([forget["images"], retain["images"]])
        image_hw = (int(images.shape[2]), int(images.shape[3]))
        maps = self._level_maps(adapter, images)
        with torch.no_grad():
            teacher_maps = self._level_maps(self._teacher, retain["images"])
        ignore_xyxy, ignore_valid_all = self._retain_ignore.ignore_xyxy, self._retain_ignore.ignore_valid
        assert ignore_xyxy is not None and ignore_valid_all is not None
        rows = retain["index"].to(ignore_xyxy.device)  # rows of the retain stream given to setup
        ignore_boxes, ignore_valid = ignore_xyxy[rows].to(images.device), ignore_valid_all[rows].to(images.device)
        align_terms, keep_terms = [], []
        for level_maps, teacher, prototype, scale in zip(maps, teacher_maps, self._level_prototypes,
                                                         self._level_scales, strict=True):
            feature_hw = (int(level_maps.shape[2]), int(level_maps.shape[3]))
            in_forget = box_position_mask(forget["boxes_xyxy"], forget["box_labels"] >= 0, feature_hw, image_hw)
            cells = level_maps[:n_forget].permute(0, 2, 3, 1)[in_forget]  # [n, C]
            align_terms.append((cells - prototype.to(cells)).pow(2).sum(dim=1).mean() / scale)
            keep_mask = ~box_position_mask(ignore_boxes, ignore_valid, feature_hw, image_hw, expand_cells=1.0)
            difference = (level_maps[n_forget:] - teacher.to(level_maps)).permute(0, 2, 3, 1)[keep_mask]
            keep_terms.append(difference.pow(2).sum(dim=1).mean() / scale if difference.shape[0]
                              else level_maps.new_zeros(()))
        align = torch.stack(align_terms).mean()
        keep = torch.stack(keep_terms).mean()
        loss = align + cfg.beta * keep
        logs = {"align": float(align.detach()), "keep": float(keep.detach())}
        if cfg.gamma > 0:
            retain_loss = adapter.loss(retain)["loss"]
            loss = loss + cfg.gamma * retain_loss
            logs["retain_loss"] = float(retain_loss.detach())
        return StepOutput(loss=loss, logs=logs)

    @torch.no_grad()
    def _teacher_features(self, images: Tensor) -> Tensor:
        assert self._teacher is not None
        dummy = {"images": images, "labels": torch.zeros(images.shape[0], dtype=torch.long, device=images.device)}
        features, _ = _features_and_logits(self._teacher, dummy)
        return features.detach()

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None and retain is not None
        if self._levels:
            return self._detector_loss(adapter, forget, retain)
        assert self._prototype is not None
        cfg = self.config
        n_forget = int(forget["images"].shape[0])
        joint = {"images": torch.cat([forget["images"], retain["images"]]),
                 "labels": torch.cat([forget["labels"], retain["labels"]])}
        features, out = _features_and_logits(adapter, joint)
        align = (features[:n_forget] - self._prototype.to(features)).pow(2).sum(dim=1).mean() / self._scale
        keep = (features[n_forget:] - self._teacher_features(retain["images"]).to(features)).pow(2).sum(dim=1).mean()
        keep = keep / self._scale
        loss = align + cfg.beta * keep
        logs = {"align": float(align.detach()), "keep": float(keep.detach())}
        if cfg.gamma > 0:
            retain_ce = F.cross_entropy(out["logits"][n_forget:], joint["labels"][n_forget:])
            loss = loss + cfg.gamma * retain_ce
            logs["retain_ce"] = float(retain_ce.detach())
        return StepOutput(loss=loss, logs=logs)

    def state_dict(self) -> dict[str, Any]:
        if self._levels:
            return {"levels": list(self._levels), "level_prototypes": [p.detach().cpu() for p in self._level_prototypes],
                    "level_scales": list(self._level_scales)}
        return {} if self._prototype is None else {"prototype": self._prototype.detach().cpu(), "scale": self._scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if "levels" in state:
            device = self._level_prototypes[0].device if self._level_prototypes else torch.device("cpu")
            self._levels = list(state["levels"])
            self._level_prototypes = [torch.as_tensor(p).to(device) for p in state["level_prototypes"]]
            self._level_scales = [float(v) for v in state["level_scales"]]
            return
        self._prototype = torch.as_tensor(state["prototype"])
        self._scale = float(state["scale"])

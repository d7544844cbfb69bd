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

from rfo_bench.errors import UserInputError
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner
from vision_unlearn.steering import abstain_prototype, forget_only_classes, linear_head, make_unknown_images

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

    def __post_init__(self) -> None:
        if self.beta < 0 or self.gamma < 0:
            raise UserInputError("beta and gamma must be >= 0", field="beta" if self.beta < 0 else "gamma",
                                 value=min(self.beta, self.gamma))
        if self.unknown_count < 1:
            raise UserInputError("unknown_count must be >= 1", field="unknown_count", value=self.unknown_count)


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

    @torch.no_grad()
    def _teacher_features(self, images: Tensor) -> Tensor:
        assert self._teacher is not None
        dummy = {"images": images, "labels": torch.zeros(images.shape[0], dtype=torch.long, device=images.device)}
        features, _ = _features_and_logits(self._teacher, dummy)
        return features.detach()

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None and retain is not None and self._prototype is not None
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
        return {} if self._prototype is None else {"prototype": self._prototype.detach().cpu(), "scale": self._scale}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if state:
            self._prototype = torch.as_tensor(state["prototype"])
            self._scale = float(state["scale"])

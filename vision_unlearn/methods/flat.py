"""``flat``: forget-only unlearning by maximising a variational f-divergence (no retain data).

Wang et al., "LLM Unlearning via Loss Adjustment with Only Forget Data" (FLAT), ICLR 2025
(arXiv 2410.11143); the variational (Fenchel-dual) f-divergence estimator of Nowozin et al.,
"f-GAN", NeurIPS 2016 (arXiv 1606.00709), Table 2.

For a forget input the model gives a score to two responses: the *template* ("abstain") response
``v_e`` and the *forget* response ``v_f`` (the original label). FLAT maximises the variational lower
bound of ``D_f(template || forget)``:

    ``max_θ  E[g(v_e)] - E[f*(g(v_f))]``,

with ``g`` the output activation that maps a score into the domain of the convex conjugate ``f*``.
For classifiers:

* ``v_f = p_θ(y | x)``, the probability of the forgotten label;
* template ``"uniform"``: ``v_e = exp(-KL(u || p_θ(.|x)))`` in ``(0, 1]``, 1 exactly when the
  prediction is uniform (the model says "I do not know"); template ``"class"``: ``v_e = p_θ(r | x)``
  for a reject class ``r`` (``"none"`` of the RFO patch set, background).

Only the forget stream is used (``needs = {"forget"}``): users who may not keep retain data can run it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit_core.errors import UserInputError
from vision_unlearn.methods._base import BaseUnlearner
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepOutput, StepState
from vision_unlearn.registry import register_unlearner

Divergence = Literal["tv", "kl", "js", "pearson"]
LOG2 = math.log(2.0)


# --------------------------------------------------------------------------------------------- pure math
def _tv_activation(v: Tensor) -> Tensor:
    return 0.5 * torch.tanh(v)


def _identity(v: Tensor) -> Tensor:
    return v


def _js_activation(v: Tensor) -> Tensor:
    return LOG2 - F.softplus(-v)


def _tv_conjugate(t: Tensor) -> Tensor:
    return t


def _kl_conjugate(t: Tensor) -> Tensor:
    return torch.exp(t - 1.0)


def _js_conjugate(t: Tensor) -> Tensor:
    return -torch.log(2.0 - torch.exp(t))


def _pearson_conjugate(t: Tensor) -> Tensor:
    return 0.25 * t * t + t


F_DIVERGENCES: dict[str, tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]] = {
    "tv": (_tv_activation, _tv_conjugate),
    "kl": (_identity, _kl_conjugate),
    "js": (_js_activation, _js_conjugate),
    "pearson": (_identity, _pearson_conjugate),
}
"""``name -> (activation g, convex conjugate f*)`` (f-GAN, Table 2): total variation
``f(u) = |u - 1| / 2``; KL ``u log u``; Jensen-Shannon ``u log u - (u + 1) log((u + 1) / 2)``;
Pearson chi^2 ``(u - 1)^2``."""


def conjugate(divergence: Divergence, t: Tensor) -> Tensor:
    """``f*(t)`` of the named f-divergence."""
    return _lookup(divergence)[1](t)


def activation(divergence: Divergence, v: Tensor) -> Tensor:
    """``g(v)``: maps a real score into the domain of ``f*``."""
    return _lookup(divergence)[0](v)


def _lookup(divergence: str) -> tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    if divergence not in F_DIVERGENCES:
        raise UserInputError(f"unknown f-divergence; expected one of {', '.join(F_DIVERGENCES)}",
                             field="divergence", value=divergence)
    return F_DIVERGENCES[divergence]


def variational_objective(template_scores: Tensor, forget_scores: Tensor, divergence: Divergence) -> Tensor:
    """``mean g(v_e) - mean f*(g(v_f))``: the variational lower bound FLAT maximises (scalar).

    Args:
        template_scores: ``[B]`` scores ``v_e`` of the template response.
        forget_scores: ``[B]`` scores ``v_f`` of the forget response.
    """
    g, _ = _lookup(divergence)
    return g(template_scores).mean() - conjugate_of_activation(divergence, forget_scores).mean()


def conjugate_of_activation(divergence: Divergence, v: Tensor) -> Tensor:
    """``f*(g(v))``, with the Jensen-Shannon case in the stable closed form ``softplus(v) - log 2``
    (``g(v)`` rounds to ``log 2`` for large ``v``, where ``f*`` has its pole)."""
    g, f_star = _lookup(divergence)
    if divergence == "js":
        return F.softplus(v) - LOG2
    return f_star(g(v))


def template_scores(logits: Tensor, template: Literal["uniform", "class"], template_class: int = -1) -> Tensor:
    """``v_e`` ``[B]`` of ``[B, K]`` logits: ``exp(-KL(uniform || softmax))`` or ``p(template_class)``."""
    log_p = F.log_softmax(logits, dim=1)
    if template == "uniform":
        k = logits.shape[1]
        return torch.exp(log_p.mean(dim=1) + math.log(k))
    return log_p[:, template_class].exp()


def forget_scores(logits: Tensor, labels: Tensor) -> Tensor:
    """``v_f = p(y | x)`` ``[B]`` of ``[B, K]`` logits and ``int64 [B]`` labels."""
    return F.softmax(logits, dim=1).gather(1, labels.reshape(-1, 1)).squeeze(1)


# --------------------------------------------------------------------------------------------- method
@dataclass(frozen=True)
class FlatConfig(MethodConfig):
    """Attributes:
    divergence: ``tv``, ``kl``, ``js`` or ``pearson``.
    template: ``uniform`` (abstain by a flat prediction) or ``class`` (a reject class).
    template_class: the reject class id when ``template == "class"``.
    """

    epochs: int = 5
    lr: float = 1e-3
    optimizer: Literal["sgd", "adam"] = "adam"
    weight_decay: float = 0.0
    divergence: Divergence = "kl"
    template: Literal["uniform", "class"] = "uniform"
    template_class: int = -1

    def __post_init__(self) -> None:
        _lookup(self.divergence)
        if self.template == "class" and self.template_class < 0:
            raise UserInputError("template 'class' needs template_class >= 0 (the reject class id)",
                                 field="template_class", value=self.template_class)


@register_unlearner("flat")
class Flat(BaseUnlearner):
    """``min_θ -(E[g(v_e)] - E[f*(g(v_f))])`` on forget batches only."""

    config_class = FlatConfig
    epoch_over = "forget"
    needs = frozenset({"forget"})

    def setup(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None, device: torch.device) -> None:
        cfg: FlatConfig = self.config  # type: ignore[assignment]
        if cfg.template == "class" and cfg.template_class >= adapter.num_classes:
            raise UserInputError(f"template_class must be a class id below {adapter.num_classes}",
                                 field="template_class", value=cfg.template_class)

    def compute_loss(self, adapter: ModelAdapter, forget: Batch | None, retain: Batch | None,
                     state: StepState) -> StepOutput:
        assert forget is not None
        cfg: FlatConfig = self.config  # type: ignore[assignment]
        logits = adapter.loss(forget)["logits"]
        v_e = template_scores(logits, cfg.template, cfg.template_class)
        v_f = forget_scores(logits, forget["labels"])
        objective = variational_objective(v_e, v_f, cfg.divergence)
        return StepOutput(loss=-objective, logs={"template_score": float(v_e.detach().mean()),
                                                 "forget_score": float(v_f.detach().mean())})

"""Evidence that tells forgetting from filtering, for classifiers: LiRA with shadow models, a
relearning attack, and the distance of the output distribution to a retrained model's.

Accuracy and the SVC MIA read the model's outputs at one point; a test-time filter (``steer``) or a
head that merely pushes one logit down can match retraining there while the weights still hold the
data. The three measures here look further:

* **LiRA** (Carlini et al., S&P 2022), offline, per example: forget samples (members) against test
  samples, each scored against the shadow models that did not train on it;
* **relearning** (e.g. Hu et al., "Unlearning or obfuscating?", ICLR 2025): optimizer steps of
  fine-tuning on the forget set alone until the forget-set loss falls to the original model's;
  knowledge that is only hidden comes back in a few steps, a retrained model needs many;
* **Jensen–Shannon distance** of the softmax outputs to a retrained model's, on forget and test data.

:func:`hooks_off` switches a test-time method's hooks off so that every measure can also be taken on
the weights alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from vision_unlearn.adapters.timm import TimmAdapter
from vision_unlearn.benchmark_protocol import Prepared, train_original
from vision_unlearn.forget import ForgetSplit
from vision_unlearn.loop import train_mode
from vision_unlearn.protocols import MethodConfig, TestTimeMethod

RELEARN_MAX_STEPS = 200
"""Cap of the relearning attack (a model still above the target after it reports this number)."""


@dataclass(frozen=True, kw_only=True)
class RelearnSettings:
    """Fine-tuning of the relearning attack: SGD (momentum 0.9) on the forget set alone, batch-norm
    statistics frozen (the attacker relearns weights, not the normalisation), in seeded cycles."""

    lr: float = 0.01
    batch_size: int = 32
    max_steps: int = RELEARN_MAX_STEPS


@contextlib.contextmanager
def hooks_off(method: Any) -> Iterator[bool]:
    """Switch off the forward hooks of a :class:`~vision_unlearn.protocols.TestTimeMethod` for the
    block (its :meth:`~vision_unlearn.protocols.TestTimeMethod.hooks_disabled`); yields whether the
    method is one, i.e. whether there were hooks to switch off."""
    if not isinstance(method, TestTimeMethod):
        yield False
        return
    with method.hooks_disabled():
        yield True


def forget_loss(adapter: TimmAdapter, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of the model (eval mode, hooks as they are) on ``[N, C, H, W]`` images."""
    return float(F.cross_entropy(adapter.predict(images), labels))


def relearn_steps(adapter: TimmAdapter, images: torch.Tensor, labels: torch.Tensor, target_loss: float,
                  seed: int, settings: RelearnSettings = RelearnSettings()) -> int:
    """Steps of fine-tuning on ``(images, labels)`` until their mean cross-entropy is ``<= target_loss``.

    0 when the model already is there; ``settings.max_steps`` when it never gets there. The model's
    weights are restored afterwards (hooks, if any, stay attached and active throughout).
    """
    model = adapter.model
    saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
    params = [p for _, p in adapter.trainable_parameters()]
    optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(images.shape[0], generator=generator)
    position = 0
    try:
        for step in range(settings.max_steps):
            if forget_loss(adapter, images, labels) <= target_loss:
                return step
            if position >= order.numel():
                order, position = torch.randperm(images.shape[0], generator=generator), 0
            rows = order[position:position + settings.batch_size]
            position += settings.batch_size
            train_mode(model, freeze_norm_stats=True)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(images[rows]), labels[rows]).backward()
            optimizer.step()
        return settings.max_steps
    finally:
        model.load_state_dict(saved)
        model.eval()


# --- LiRA shadow models --------------------------------------------------------------------------
@dataclass
class ShadowBank:
    """Logit-scaled confidences of shadow models on the full training split and the test split.

    Attributes:
        train_conf: ``[N_train, S]``; ``train_in``: ``bool [N_train, S]`` whether shadow s trained on the row.
        test_conf: ``[N_test, S]`` (test rows are never trained on).
    """

    train_conf: np.ndarray
    train_in: np.ndarray
    test_conf: np.ndarray

    @property
    def count(self) -> int:
        return int(self.train_conf.shape[1])


def train_shadows(pool: Prepared, model: Any, count: int, seed: int, config: MethodConfig, *,
                  progress: bool = True) -> ShadowBank:
    """Train ``count`` shadow models with the original's recipe, each on a seeded random half of the
    full training split (``pool.train``). One bank serves every reported seed: an attacker needs
    models of the same distribution, and each example is scored only against shadows without it."""
    from vision_unlearn.metrics import logit_scaled_confidence

    n = len(pool.train)
    rng = np.random.default_rng(seed + 7919)
    train_conf, train_in, test_conf = [], [], []
    for s in tqdm(range(count), desc="LiRA shadows", leave=False, disable=not progress):
        chosen = np.zeros(n, dtype=bool)
        chosen[rng.choice(n, size=n // 2, replace=False)] = True
        adapter = TimmAdapter(model.spec(pool.num_classes, pool.image_size))
        train_original(adapter, pool.train.subset(np.flatnonzero(chosen)), seed * 1000 + s + 1, config)
        train_conf.append(logit_scaled_confidence(adapter.predict(pool.train.images).numpy(),
                                                  pool.train.labels.numpy()))
        test_conf.append(logit_scaled_confidence(adapter.predict(pool.test.images).numpy(),
                                                 pool.test.labels.numpy()))
        train_in.append(chosen)
    return ShadowBank(np.stack(train_conf, 1), np.stack(train_in, 1), np.stack(test_conf, 1))


def lira_metrics(forget_logits: torch.Tensor, test_logits: torch.Tensor, prepared: Prepared, split: ForgetSplit,
                 bank: ShadowBank) -> dict[str, float]:
    """Offline LiRA of forget samples (members) against test samples: ``LiRA_auc`` and
    ``LiRA_tpr_at_fpr_0.01`` (percentages). An AUC near retrain's means the forget set looks as
    unseen to the attack as it does on a model that never saw it."""
    from vision_unlearn.metrics import lira_scores, lira_summary, logit_scaled_confidence

    f = split.forget_indices
    pool_rows = f if prepared.pool_rows is None else prepared.pool_rows[f]
    target_f = logit_scaled_confidence(forget_logits.numpy(), prepared.train.labels.numpy()[f])
    target_t = logit_scaled_confidence(test_logits.numpy(), prepared.test.labels.numpy())
    conf_f, in_f = bank.train_conf[pool_rows], bank.train_in[pool_rows]
    scores_f = lira_scores(target_f, None, np.where(in_f, np.nan, conf_f), fallback_to_global=True)
    scores_t = lira_scores(target_t, None, bank.test_conf)
    summary = lira_summary(scores_f, scores_t, fprs=(0.01,))
    return {f"LiRA_{k}": 100.0 * float(v) for k, v in summary.items()}


@dataclass
class ReferenceOutputs:
    """A retrained model's logits on the forget set and the test split, and the original model's
    forget-set loss (the relearning target)."""

    forget_logits: torch.Tensor
    test_logits: torch.Tensor
    original_forget_loss: float


def forgetting_evidence(adapter: TimmAdapter, prepared: Prepared, split: ForgetSplit, reference: ReferenceOutputs,
                        seed: int, bank: ShadowBank | None = None,
                        relearn: RelearnSettings | None = RelearnSettings()) -> dict[str, float]:
    """``JS_forget``, ``JS_test`` (mean JS distance to the reference, x100), ``relearn_steps`` and the
    LiRA keys of the adapter's current model (hooks as they are)."""
    from vision_unlearn.metrics.distribution import mean_js_distance

    rows = torch.as_tensor(split.forget_indices, dtype=torch.long)
    images, labels = prepared.train.images[rows], prepared.train.labels[rows]
    forget_logits, test_logits = adapter.predict(images), adapter.predict(prepared.test.images)
    out = {"JS_forget": 100.0 * mean_js_distance(forget_logits, reference.forget_logits),
           "JS_test": 100.0 * mean_js_distance(test_logits, reference.test_logits)}
    if relearn is not None:
        out["relearn_steps"] = float(relearn_steps(adapter, images, labels, reference.original_forget_loss, seed,
                                                   relearn))
    if bank is not None:
        out.update(lira_metrics(forget_logits, test_logits, prepared, split, bank))
    return out

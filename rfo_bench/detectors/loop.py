"""The one training loop of the torchvision detector family.

The loop owns the optimiser (SGD with momentum and weight decay), the schedule (linear warm-up over
the first iterations, then step decay every ``lr_step_epochs`` epochs), gradient clipping, seeding of
the data order, progress and the per-epoch history. Models only provide ``model(images, targets) ->
dict of losses`` (the torchvision detection convention).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rfo_bench.detectors.config import Recipe
from rfo_bench.detectors.data import DetectionSamples, collate

logger = logging.getLogger(__name__)


def lr_factor(iteration: int, *, iters_per_epoch: int, recipe: Recipe) -> float:
    """Multiplier of the base learning rate at a 0-based global iteration.

    ``min(1, (iteration + 1) / warmup_iters) * lr_gamma ** (epoch // lr_step_epochs)``.
    """
    epoch = iteration // max(iters_per_epoch, 1)
    warm = 1.0 if recipe.warmup_iters == 0 else min(1.0, (iteration + 1) / recipe.warmup_iters)
    return warm * recipe.lr_gamma ** (epoch // recipe.lr_step_epochs)


def train_torchvision(
    model: nn.Module,
    samples: DetectionSamples,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``samples`` with ``recipe``.

    Args:
        model: a torchvision detection model (returns a loss dict in train mode).
        samples: the training samples (see :class:`~rfo_bench.detectors.data.DetectionSamples`).
        recipe: optimiser, schedule and epochs.
        seed: seeds the shuffling order (weights and augmentation are seeded by the caller).
        device: where to train.
        progress: show a tqdm bar per epoch.

    Returns:
        One record per epoch: ``epoch``, ``loss`` (mean total), the mean of each loss term, ``lr`` and
        ``seconds``.

    Raises:
        FloatingPointError: the loss became NaN or infinite (lower the learning rate).
    """
    device = torch.device(device)
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(
        samples, batch_size=recipe.batch_size, shuffle=True, generator=generator, collate_fn=collate, num_workers=0
    )
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=recipe.lr, betas=(recipe.momentum, 0.999), weight_decay=recipe.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    iters_per_epoch = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, iters_per_epoch=iters_per_epoch, recipe=recipe)
    )
    history: list[dict[str, Any]] = []
    for epoch in range(recipe.epochs):
        model.train()
        start = time.perf_counter()
        sums: dict[str, float] = defaultdict(float)
        batches = 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not progress, leave=False)
        for images, targets in bar:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            losses = model(images, targets)
            total = sum(losses.values())
            if not math.isfinite(total.item()):
                raise FloatingPointError(
                    f"loss is {total.item()} at epoch {epoch + 1}; lower the learning rate (recipe lr={recipe.lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if recipe.grad_clip_norm > 0:
                nn.utils.clip_grad_norm_(params, recipe.grad_clip_norm)
            optimizer.step()
            scheduler.step()
            batches += 1
            sums["loss"] += total.item()
            for name, value in losses.items():
                sums[name] += value.item()
            bar.set_postfix(loss=f"{total.item():.3f}")
        record = {"epoch": epoch + 1, **{k: v / max(batches, 1) for k, v in sums.items()},
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
        history.append(record)
        logger.info("epoch %d/%d loss %.4f (%.1fs)", epoch + 1, recipe.epochs, record.get("loss", float("nan")),
                    record["seconds"])
    return history

"""The one training loop of the torchvision detector family.

The loop owns the optimiser (SGD with momentum and weight decay), the schedule (linear warm-up over
the first iterations, then step decay every ``lr_step_epochs`` epochs), gradient clipping, seeding of
the data order, mixed precision on CUDA, resumable checkpoints (weights, optimiser, schedule and the
position in the epoch's data order, written atomically and read with ``weights_only=True``), progress
and the per-epoch history. Models only provide ``model(images, targets) -> dict of losses`` (the
torchvision detection convention).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from rfo_bench.detectors.config import Recipe
from rfo_bench.detectors.data import DetectionSamples, collate
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_output

logger = logging.getLogger(__name__)

MAX_CHECKPOINT_BYTES = 8 << 30
"""Largest checkpoint read (8 GiB: weights plus optimiser state of the largest baseline, with headroom)."""


def lr_factor(iteration: int, *, iters_per_epoch: int, recipe: Recipe) -> float:
    """Multiplier of the base learning rate at a 0-based global iteration.

    ``min(1, (iteration + 1) / warmup_iters) * lr_gamma ** (epoch // lr_step_epochs)``.
    """
    epoch = iteration // max(iters_per_epoch, 1)
    warm = 1.0 if recipe.warmup_iters == 0 else min(1.0, (iteration + 1) / recipe.warmup_iters)
    return warm * recipe.lr_gamma ** (epoch // recipe.lr_step_epochs)


CHECKPOINT_FORMAT = "rfo-detector-checkpoint/1"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a training checkpoint atomically (a kill mid-write leaves the previous one intact)."""
    with atomic_output(path) as tmp:
        torch.save({"format": CHECKPOINT_FORMAT, **state}, tmp)


def load_checkpoint(path: Path, *, fingerprint: str) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: nothing is unpickled).

    Raises:
        UserInputError: a damaged or foreign file, or one of another training configuration.
    """
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise UserInputError(f"checkpoint is larger than {MAX_CHECKPOINT_BYTES >> 30} GiB", file=path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise UserInputError(f"damaged or unreadable checkpoint ({type(err).__name__})", file=path) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"not a checkpoint of this trainer (expected {CHECKPOINT_FORMAT})", file=path)
    if state.get("fingerprint") != fingerprint:
        raise UserInputError("the checkpoint belongs to another training configuration or data; resume with the "
                             "same command, or train into a new --out", file=path, field="fingerprint")
    return state


def train_torchvision(
    model: nn.Module,
    samples: DetectionSamples,
    recipe: Recipe,
    *,
    seed: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
    amp: bool = False,
    checkpoint: Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = False,
    fingerprint: str = "",
) -> list[dict[str, Any]]:
    """Train ``model`` in place on ``samples`` with ``recipe``, resumably.

    The data order of epoch ``e`` is a permutation drawn from ``seed + e``, so a run resumed at step
    ``k`` of an epoch skips exactly the batches it already did and ends after as many optimiser steps
    as an uninterrupted run (augmentation draws continue from a fresh state, so the weights are not
    bit-identical).

    Args:
        model: a torchvision detection model (returns a loss dict in train mode).
        samples: the training samples (see :class:`~rfo_bench.detectors.data.DetectionSamples`).
        recipe: optimiser, schedule and epochs.
        seed: seeds the shuffling order (weights and augmentation are seeded by the caller).
        device: where to train.
        progress: show a tqdm bar per epoch.
        amp: bfloat16/float16 autocast with gradient scaling (CUDA only).
        checkpoint: where the resumable state is kept (``None``: no checkpoints).
        checkpoint_every: also save every this many steps (0: at the end of each epoch only).
        resume: continue from ``checkpoint`` when it exists.
        fingerprint: identifies configuration and data; a checkpoint of another one is refused.

    Returns:
        One record per epoch: ``epoch``, ``steps`` (global, after the epoch), ``loss`` (mean total),
        the mean of each loss term, ``lr`` and ``seconds``.

    Raises:
        FloatingPointError: the loss became NaN or infinite (lower the learning rate).
        UserInputError: a refused checkpoint (see :func:`load_checkpoint`).
    """
    device = torch.device(device)
    model.to(device)
    use_amp = amp and device.type == "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "adamw":
        optimizer: torch.optim.Optimizer = torch.optim.AdamW(
            params, lr=recipe.lr, betas=(recipe.momentum, 0.999), weight_decay=recipe.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    iters_per_epoch = math.ceil(len(samples) / recipe.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(it, iters_per_epoch=iters_per_epoch, recipe=recipe)
    )
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    history: list[dict[str, Any]] = []
    start_epoch, start_batch, step = 0, 0, 0
    sums: dict[str, float] = defaultdict(float)
    if resume and checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, fingerprint=fingerprint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, start_batch, step = int(state["epoch"]), int(state["batch"]), int(state["step"])
        history = list(state["history"])
        sums.update(state["sums"])
        logger.info("resumed from %s at epoch %d, batch %d (step %d)", checkpoint, start_epoch + 1, start_batch, step)

    def snapshot(epoch: int, batch: int) -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint, {
                "fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "epoch": epoch, "batch": batch, "step": step,
                "history": history, "sums": dict(sums),
            })

    for epoch in range(start_epoch, recipe.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        first = start_batch if epoch == start_epoch else 0
        if first == 0:
            sums = defaultdict(float)
        subset = torch.utils.data.Subset(samples, order[first * recipe.batch_size:])
        loader = torch.utils.data.DataLoader(subset, batch_size=recipe.batch_size, shuffle=False,
                                             collate_fn=collate, num_workers=0)
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{recipe.epochs}", disable=not progress, leave=True,
                   initial=first, total=iters_per_epoch)
        batch = first
        for images, targets in bar:
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            with torch.autocast(device.type, enabled=use_amp):
                losses = model(images, targets)
                total = sum(losses.values())
            if not math.isfinite(total.item()):
                raise FloatingPointError(
                    f"loss is {total.item()} at epoch {epoch + 1}; lower the learning rate (recipe lr={recipe.lr})"
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(total).backward()
            if recipe.grad_clip_norm > 0:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(params, recipe.grad_clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            batch += 1
            step += 1
            sums["batches"] += 1
            sums["loss"] += total.item()
            for name, value in losses.items():
                sums[name] += value.item()
            bar.set_postfix(loss=f"{total.item():.3f}")
            if checkpoint_every and step % checkpoint_every == 0 and batch < iters_per_epoch:
                snapshot(epoch, batch)
        batches = max(sums.pop("batches", 0.0), 1.0)
        record = {"epoch": epoch + 1, "steps": step, **{k: v / batches for k, v in sums.items()},
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - start}
        history.append(record)
        sums = defaultdict(float)
        snapshot(epoch + 1, 0)
        logger.info("epoch %d/%d loss %.4f (%.1fs)", epoch + 1, recipe.epochs, record.get("loss", float("nan")),
                    record["seconds"])
    return history

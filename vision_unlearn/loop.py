"""The one training loop: optimizer, schedule, data order, logging, progress, checkpoints, resume.

Every method, ``retrain`` and the training of the original model run through :func:`run_loop`.
Methods only say how the loss of one step differs (:meth:`Unlearner.compute_loss`), or, for a
method that computes its own gradients (OFMU), fill the gradients in
:meth:`Unlearner.owned_step`; the loop does everything else.

Determinism and resume. The data order is a pure function of ``(seed, stream, epoch)``: the
stream one epoch passes over (``method.epoch_over``) is permuted afresh each epoch and cut into
nearly equal batches with :func:`torch.tensor_split`; the other stream, when a step needs it, is
drawn from a cycling cursor whose position is saved. A run checkpoint holds model, optimizer,
method state, the method's random generator, torch's global RNG state, the step counter and the
cursor, so that a run killed after any checkpoint and resumed reaches the same final weights as an
uninterrupted one on CPU (bit for bit, with deterministic kernels).

Non-finite loss or gradients stop the run with :class:`TrainingDivergedError`; the last good
checkpoint stays on disk untouched.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from toolkit_core.errors import UserInputError
from vision_unlearn.api import config_to_dict
from vision_unlearn.checkpoint import load_checkpoint, save_checkpoint
from vision_unlearn.distributed import SINGLE_PROCESS, DistContext, average_buffers, shard, wrap_ddp
from vision_unlearn.protocols import Batch, MethodConfig, ModelAdapter, StepState, Unlearner

logger = logging.getLogger(__name__)

_STREAM_CODES = {"forget": 1, "retain": 2}


class TrainingDivergedError(UserInputError):
    """The loss or the gradients became NaN/inf; the hyper-parameters (usually the learning rate)
    must change. The last good checkpoint is kept."""


@dataclass(frozen=True, kw_only=True)
class LoopSettings:
    """How to run (not what to optimise: that is the method's config).

    Attributes:
        seed: seeds the data order, the method's generator and torch's global RNG.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
        checkpoint_path: run checkpoint file; ``None`` disables checkpoints and resume.
        checkpoint_every: also checkpoint every this many steps (0: only at epoch ends and the end).
        resume: continue from ``checkpoint_path`` if it exists.
        progress: show a tqdm bar (main process only).
        label: what the bar says (e.g. ``"train"`` for an original training run by ``retrain``); the
            method's name when not given.
        log_every: log the step's values every this many steps (0: at epoch ends only).
        stop_after_steps: stop (as if killed) once this many steps are done; for tests and time limits.
    """

    seed: int = 0
    device: str = "cpu"
    checkpoint_path: Path | None = None
    checkpoint_every: int = 0
    resume: bool = False
    progress: bool = False
    label: str | None = None
    log_every: int = 0
    stop_after_steps: int | None = None


@dataclass
class LoopResult:
    """What a run did.

    Attributes:
        steps_done: optimizer steps done (including those before a resume).
        total_steps: steps of the full schedule.
        completed: ``steps_done == total_steps``.
        seconds: wall-clock seconds of this invocation (setup included).
        history: per-epoch mean of every logged value.
        resumed_from_step: step the run resumed from (0 for a fresh run).
        first_step_logs: the values the first step of this invocation logged (e.g. the loss ceiling it
            used); empty when no step ran.
    """

    steps_done: int
    total_steps: int
    completed: bool
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from_step: int = 0
    first_step_logs: dict[str, float] = field(default_factory=dict)


def make_stream(images: Tensor, labels: Tensor, indices: Tensor | None = None) -> dict[str, Tensor]:
    """A whole stream as a batch-like mapping: ``images [N, C, H, W]``, ``labels [N]``, ``index [N]``."""
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"images {tuple(images.shape)} and labels {tuple(labels.shape)} differ in length")
    if indices is None:
        indices = torch.arange(images.shape[0])
    return {"images": images, "labels": labels, "index": indices}


def take(stream: Mapping[str, Tensor], rows: Tensor) -> dict[str, Tensor]:
    """Rows ``rows`` of every tensor of ``stream``."""
    return {key: value[rows] for key, value in stream.items()}


def stream_length(stream: Mapping[str, Tensor] | None) -> int:
    return 0 if stream is None else int(stream["labels"].shape[0])


def lr_at(step: int, total_steps: int, config: MethodConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then constant or cosine."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "cosine":
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        return 0.5 * config.lr * (1.0 + math.cos(math.pi * progress))
    return config.lr


def _generator(seed: int, *parts: int) -> torch.Generator:
    value = seed
    for part in parts:
        value = (value * 1_000_003 + part) % (2**61 - 1)
    return torch.Generator().manual_seed(value)


def epoch_order(n: int, seed: int, stream: str, epoch: int) -> Tensor:
    """The permutation of ``n`` rows used for ``stream`` in ``epoch`` (pure function of its inputs)."""
    return torch.randperm(n, generator=_generator(seed, _STREAM_CODES[stream], epoch))


def batches_of(order: Tensor, batch_size: int) -> list[Tensor]:
    """Cut ``order`` into ``ceil(n / batch_size)`` nearly equal batches."""
    return list(torch.tensor_split(order, max(1, math.ceil(order.numel() / batch_size))))


class _Cursor:
    """Cycling draw from the secondary stream; ``(cycle, position)`` is its checkpointed state."""

    def __init__(self, n: int, seed: int, stream: str) -> None:
        self.n, self.seed, self.stream = n, seed, stream
        self.cycle, self.position = 0, 0
        self._order = epoch_order(n, seed, stream, 10_000)

    def restore(self, cycle: int, position: int) -> None:
        self.cycle, self.position = cycle, position
        self._order = epoch_order(self.n, self.seed, self.stream, 10_000 + cycle)

    def next(self, batch_size: int) -> Tensor:
        size = min(batch_size, self.n)
        if self.position + size > self.n:
            self.restore(self.cycle + 1, 0)
        rows = self._order[self.position:self.position + size]
        self.position += size
        return rows


def build_optimizer(params: list[torch.nn.Parameter], config: MethodConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise UserInputError("unknown optimizer; expected sgd or adam", field="optimizer", value=config.optimizer)


def _all_finite(tensors: list[Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def train_mode(model: torch.nn.Module, freeze_norm_stats: bool = False) -> None:
    """Put ``model`` in training mode; with ``freeze_norm_stats`` its batch-norm layers stay in eval mode.

    Frozen, a batch-norm layer normalises with the running statistics the model was trained with
    and does not update them, so a step changes only the weights. Unlearning from a trained model
    wants this: a forget batch is small and not drawn like the training data, and an ascent step
    in training mode can raise its loss through the batch statistics alone, which leaves the
    running statistics, and so the model at inference, broken.
    """
    model.train()
    if freeze_norm_stats:
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


def run_loop(
    adapter: ModelAdapter,
    method: Unlearner,
    forget: Batch | None,
    retain: Batch | None,
    settings: LoopSettings = LoopSettings(),
    dist: DistContext = SINGLE_PROCESS,
) -> LoopResult:
    """Run ``method`` on ``adapter`` to the end of its schedule (or ``settings.stop_after_steps``).

    Args:
        adapter: the model; its weights are the *original* model's when the method is set up.
        method: the unlearning (or training) method with its config.
        forget: the whole forget stream (``images``, ``labels``, ``index``) or ``None``.
        retain: the whole retain stream, or ``None`` when no retain data is available.
        settings: seed, device, checkpointing and progress.
        dist: the process group context (:func:`vision_unlearn.distributed.init_distributed`).

    Returns:
        A :class:`LoopResult`.

    Raises:
        UserInputError: a stream the method needs is missing or empty, or the checkpoint does not
            belong to this run.
        TrainingDivergedError: NaN/inf loss or gradients.
    """
    start_time = time.perf_counter()
    config = method.config
    device = torch.device(settings.device)
    streams = {"forget": forget, "retain": retain}
    for name in sorted(set(method.needs) | {method.epoch_over}):
        if stream_length(streams[name]) == 0:
            raise UserInputError(f"method {method.name!r} needs a non-empty {name} set", field=name)
    streams = {k: (None if v is None else {kk: vv.to(device) for kk, vv in v.items()}) for k, v in streams.items()}
    model = adapter.model.to(device)

    method.setup(adapter, streams["forget"], streams["retain"], device)
    if method.from_scratch and getattr(config, "init", "fresh") == "fresh":  # `init: current` keeps a pretrained start
        adapter.reset_parameters(settings.seed)
    torch.manual_seed(settings.seed)
    method_generator = _generator(settings.seed, 7)

    params = [p for _, p in adapter.trainable_parameters()]
    optimizer = build_optimizer(params, config)
    primary = method.epoch_over
    secondary = "retain" if primary == "forget" else "forget"
    n_primary = stream_length(streams[primary])
    steps_per_epoch = math.ceil(n_primary / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    cursor = None
    if secondary in method.needs:
        cursor = _Cursor(stream_length(streams[secondary]), settings.seed, secondary)

    run_meta = {"method": method.name, "config": config_to_dict(config), "seed": settings.seed,
                "total_steps": total_steps, "world_size": dist.world_size, "n_forget": stream_length(forget),
                "n_retain": stream_length(retain)}
    step = 0
    history: list[dict[str, float]] = []
    ckpt = settings.checkpoint_path
    if settings.resume and ckpt is not None and Path(ckpt).exists():
        payload, meta = load_checkpoint(ckpt, "run")
        for key in ("method", "config", "seed", "total_steps", "n_forget", "n_retain"):
            if meta.get(key) != run_meta[key]:
                raise UserInputError("the checkpoint belongs to a different run; remove it or drop --resume",
                                     file=ckpt, field=key, value=meta.get(key))
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        method.load_state_dict(payload["method"])
        method_generator.set_state(payload["method_generator"])
        torch.set_rng_state(payload["torch_rng"])
        step = int(payload["step"])
        history = [dict(h) for h in payload["history"]]
        if cursor is not None:
            cursor.restore(int(payload["cursor"][0]), int(payload["cursor"][1]))
        logger.info("resumed %s from step %d of %d (%s)", method.name, step, total_steps, ckpt)
    resumed_from = step

    def write_checkpoint() -> None:
        if ckpt is None or not dist.is_main:
            return
        payload = {
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "method": method.state_dict(),
            "method_generator": method_generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "step": step,
            "history": history,
            "cursor": [cursor.cycle, cursor.position] if cursor is not None else [0, 0],
        }
        save_checkpoint(ckpt, "run", payload, run_meta)

    if not method.owns_step:
        adapter.module = wrap_ddp(model, dist, device)
    limit = total_steps if settings.stop_after_steps is None else min(total_steps, settings.stop_after_steps)
    bar = tqdm(total=total_steps, initial=step, desc=settings.label or method.name, disable=not (settings.progress and dist.is_main),
               leave=False)
    epoch_logs: dict[str, list[float]] = {}
    first_logs: dict[str, float] = {}
    order_cache: tuple[int, list[Tensor]] | None = None
    try:
        while step < limit:
            epoch, within = divmod(step, steps_per_epoch)
            if order_cache is None or order_cache[0] != epoch:
                order = epoch_order(n_primary, settings.seed, primary, epoch)
                order_cache = (epoch, batches_of(order, config.batch_size))
            rows = {primary: order_cache[1][within]}
            if cursor is not None:
                rows[secondary] = cursor.next(config.batch_size)
            batch: dict[str, Batch | None] = {"forget": None, "retain": None}
            for name, global_rows in rows.items():
                batch[name] = take(streams[name], shard(global_rows, dist).to(device))  # type: ignore[arg-type]
            lr = lr_at(step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            state = StepState(step=step, total_steps=total_steps, epoch=epoch, lr=lr, device=device,
                              generator=method_generator, all_reduce_mean=dist.all_reduce_mean,
                              world_size=dist.world_size)
            train_mode(model, freeze_norm_stats=config.freeze_norm_stats)
            optimizer.zero_grad(set_to_none=True)
            if method.owns_step:
                output = method.owned_step(adapter, batch["forget"], batch["retain"], state)
            else:
                output = method.compute_loss(adapter, batch["forget"], batch["retain"], state)
                if output.loss is None:
                    raise RuntimeError(f"method {method.name!r} returned no loss")
                if not bool(torch.isfinite(output.loss.detach())):
                    _diverged(method.name, step, "loss", float(output.loss.detach()), ckpt)
                output.loss.backward()
            grads = [p.grad for p in params if p.grad is not None]
            if not _all_finite(grads):
                _diverged(method.name, step, "gradient", float("nan"), ckpt)
            method.before_optimizer_step(adapter, state)
            if config.grad_clip_norm > 0:
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip_norm)
            optimizer.step()
            if method.owns_step:
                average_buffers(model, dist)
            step += 1
            bar.update(1)
            values = dict(output.logs)
            if output.loss is not None:
                values["loss"] = float(output.loss.detach())
            if step == resumed_from + 1:
                first_logs = {key: float(value) for key, value in values.items()}
            for key, value in values.items():
                epoch_logs.setdefault(key, []).append(float(value))
            if settings.log_every and step % settings.log_every == 0:
                logger.info("%s step %d/%d lr %.4g %s", method.name, step, total_steps, lr,
                            " ".join(f"{k} {v:.4g}" for k, v in values.items()))
            epoch_end = step % steps_per_epoch == 0
            if epoch_end:
                history.append({"epoch": float(epoch), **{k: sum(v) / len(v) for k, v in epoch_logs.items()}})
                epoch_logs = {}
            if epoch_end or (settings.checkpoint_every and step % settings.checkpoint_every == 0) \
                    or step == total_steps:
                write_checkpoint()
    finally:
        bar.close()
        adapter.module = model
    dist.barrier()
    seconds = time.perf_counter() - start_time
    model.eval()
    return LoopResult(steps_done=step, total_steps=total_steps, completed=step == total_steps, seconds=seconds,
                      history=history, resumed_from_step=resumed_from, first_step_logs=first_logs)


def _diverged(name: str, step: int, what: str, value: float, ckpt: os.PathLike[str] | None) -> None:
    kept = f"; the last good checkpoint is kept at {ckpt}" if ckpt is not None and Path(ckpt).exists() else ""
    raise TrainingDivergedError(
        f"{name}: non-finite {what} at step {step}; lower the learning rate or enable gradient clipping{kept}",
        field="lr", value=value)


def loop_summary(result: LoopResult) -> dict[str, Any]:
    """JSON-ready summary of a :class:`LoopResult`."""
    return {"steps_done": result.steps_done, "total_steps": result.total_steps, "completed": result.completed,
            "seconds": result.seconds, "resumed_from_step": result.resumed_from_step, "history": result.history}

"""DDPM training of the inpainting UNet on object patches, with EMA weights and exact resume.

Objective (Ho et al., NeurIPS 2020, arXiv:2006.11239): for a clean ``x0`` (the object layer or the
patch, see :mod:`synth.diffusion.model`), ``t ~ U{0..T-1}`` and ``eps ~ N(0, I)``, the UNet sees
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with the region, the masked background, the object
mask and the class (with the patch's scale group, :func:`~synth.diffusion.model.conditioning_labels`),
and predicts ``v = sqrt(abar_t) eps - sqrt(1 - abar_t) x0`` (Salimans & Ho 2022;
or ``eps`` / ``x0``, per the model's ``prediction_type``). The squared error is weighted
``region_weight`` inside the inpainted region and 1 outside (outside the region the sampler replaces
the prediction by the known background, so the signal that matters is inside).

Condition dropout for classifier-free guidance: with ``class_drop_prob`` the class becomes the null
class of its scale group (the scale is never dropped: it is known at sampling); independently with
``context_drop_prob`` the region and background channels become zero, which teaches the
unconditional prior used by the RePaint-style sampler.

Every random draw of step ``k`` comes from generators seeded with ``(seed, k)``, so a run stopped
after any saved step and resumed gives the same weights as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synth.diffusion.model import (
    META_FILE,
    STATE_FILE,
    CheckpointInfo,
    ModelConfig,
    build_train_scheduler,
    build_unet,
    conditioning_labels,
    model_input,
    null_labels,
    read_checkpoint_info,
    save_mask_bank,
    write_checkpoint_info,
)
from synth.diffusion.patches import PatchSet, PatchSpec, load_coco_patches, residual_scale, smooth_fill
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import remove_stale_staging, swap_in, write_marker
from toolkit_core.utils import atomic_output, sha256_file

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings.

    Attributes:
        steps: total optimisation steps (a resumed run continues up to this number).
        batch_size: patches per step.
        learning_rate: AdamW learning rate after warm-up.
        warmup_steps: linear learning-rate warm-up.
        class_drop_prob: probability of replacing the class by the null class.
        context_drop_prob: probability of zeroing the region and background channels.
        region_weight: loss weight inside the inpainted region (1 outside).
        ema_decay: maximum EMA decay (with the diffusers warm-up ``1 - (1 + step)^-3/4``).
        grad_clip: gradient-norm clip.
        save_every: steps between checkpoints (and at the end).
        seed: the seed of every random draw.
        augment: random flips and 90-degree rotations of the patches.
    """

    steps: int = 2000
    batch_size: int = 16
    learning_rate: float = 1e-3
    warmup_steps: int = 100
    class_drop_prob: float = 0.1
    context_drop_prob: float = 0.1
    region_weight: float = 10.0
    ema_decay: float = 0.995
    grad_clip: float = 1.0
    save_every: int = 500
    seed: int = 0
    augment: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "save_every"):
            if getattr(self, name) < 1:
                raise UserInputError("must be >= 1", field=name, value=getattr(self, name))
        for name in ("class_drop_prob", "context_drop_prob"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise UserInputError("must be in [0, 1)", field=name, value=getattr(self, name))
        if self.learning_rate <= 0:
            raise UserInputError("must be > 0", field="learning_rate", value=self.learning_rate)


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`train`."""

    ckpt_dir: Path
    step: int
    resumed_from: int
    last_loss: float
    seconds: float
    num_patches: int


def augment_arrays(rng: np.random.Generator, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Apply the same random flip / 90-degree rotation to the ``n``-th patch of every array.

    Args:
        rng: source of the 8 dihedral choices (one per patch).
        arrays: each ``(N, S, S)`` (image, region, object mask, target, ...).

    Returns:
        The transformed arrays, in the order given.
    """
    outs = [np.empty_like(a) for a in arrays]
    for n in range(arrays[0].shape[0]):
        k, flip = int(rng.integers(4)), bool(rng.integers(2))
        for src, dst in zip(arrays, outs):
            out = np.rot90(src[n], k)
            dst[n] = out[:, ::-1] if flip else out
    return tuple(outs)


def training_loss(unet, scheduler, x0, region, class_ids, config: TrainConfig, generator, *, context=None,
                  object_mask=None):
    """The weighted denoising loss of one batch (dropout included).

    Args:
        unet: the inpainting UNet.
        scheduler: a DDPM scheduler (``add_noise``, ``get_velocity``, ``num_train_timesteps`` and the
            ``prediction_type`` that decides the regression target).
        x0: ``(N, 1, S, S)`` clean targets (object layer, or patches in ``[-1, 1]``).
        region: ``(N, 1, S, S)`` float 0/1.
        class_ids: ``(N,)`` long class-table labels: category ids, plus the scale group's offset for
            models with scale groups (:func:`~synth.diffusion.model.conditioning_labels`).
        config: dropout probabilities and region weight.
        generator: torch generator for noise, timesteps and dropout.
        context: ``(N, 1, S, S)`` the patches in ``[-1, 1]`` for the background channel (default ``x0``).
        object_mask: ``(N, 1, S, S)`` float 0/1 for models with an object channel (dropped with the context).

    Returns:
        Scalar loss tensor.
    """
    import torch

    n = x0.shape[0]
    # every draw on the CPU generator, then moved: the same numbers on any device
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (n,), generator=generator).to(x0.device)
    drop_class = (torch.rand(n, generator=generator) < config.class_drop_prob).to(x0.device)
    drop_context = (torch.rand(n, generator=generator) < config.context_drop_prob).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    keep = (~drop_context).float().view(n, 1, 1, 1)
    labels = torch.where(drop_class, null_labels(class_ids), class_ids)
    context = x0 if context is None else context
    obj = None if object_mask is None else object_mask * keep
    pred = unet(model_input(noisy, region * keep, context * keep, obj), t, class_labels=labels).sample
    kind = scheduler.config.prediction_type
    target = {"epsilon": noise, "sample": x0}.get(kind)
    if target is None:
        target = scheduler.get_velocity(x0, noise, t)
    weight = 1.0 + (config.region_weight - 1.0) * region
    return (weight * (pred - target) ** 2).sum() / weight.sum()


@dataclass(frozen=True)
class TrainingArrays:
    """Every patch of the training set, ready for batching.

    Attributes:
        context: ``(N, S, S)`` patches in ``[-1, 1]`` (the background channel).
        regions: ``(N, S, S)`` float 0/1 inpainted regions.
        objects: ``(N, S, S)`` float 0/1 object masks.
        targets: ``(N, S, S)`` the ``x0`` the model learns (see :func:`training_arrays`).
        classes: ``(N,)`` category ids.
        residual_scale: divisor of the object layer (1.0 for the ``image`` target).
        groups: ``(N,)`` scale-group indices, ``None`` for the fit-to-patch geometry.
    """

    context: np.ndarray
    regions: np.ndarray
    objects: np.ndarray
    targets: np.ndarray
    classes: np.ndarray
    residual_scale: float
    groups: np.ndarray | None = None

    def labels(self, idx: np.ndarray) -> np.ndarray:
        """The UNet class-table labels of the patches ``idx`` (category plus scale group)."""
        return conditioning_labels(self.classes[idx], None if self.groups is None else self.groups[idx])


def training_arrays(patches: PatchSet, target: str) -> TrainingArrays:
    """Stack the patches and compute the regression targets.

    ``target="residual"``: ``(image - smooth_fill(image, region)) / residual_scale`` inside the region
    and 0 outside; ``target="image"``: the patch in ``[-1, 1]``.
    """
    images = np.stack([p.image for p in patches.patches]).astype(np.float32)
    regions = np.stack([p.region for p in patches.patches])
    objects = np.stack([p.object_mask for p in patches.patches]).astype(np.float32)
    classes = np.array([p.category_id for p in patches.patches], dtype=np.int64)
    physical = all(p.scale_group is not None for p in patches.patches)
    groups = np.array([p.scale_group for p in patches.patches], dtype=np.int64) if physical else None
    context = images * 2.0 - 1.0
    if target == "residual":
        scale = residual_scale(images, regions)
        layers = np.stack([img - smooth_fill(img, reg) for img, reg in zip(images, regions)])
        targets = np.where(regions, layers / scale, 0.0).astype(np.float32)
    else:
        scale, targets = 1.0, context
    return TrainingArrays(context=context, regions=regions.astype(np.float32), objects=objects, targets=targets,
                          classes=classes, residual_scale=scale, groups=groups)


TOOL = "rfo-synth diffusion train"
"""Recorded in the ownership marker of the folders the trainer writes."""


def _check_out_dir(ckpt: Path) -> None:
    """Refuse an output that is not new, empty or a checkpoint of this trainer.

    The trainer replaces ``unet/`` and ``scheduler/`` inside its output; in a user's folder (a Stable
    Diffusion pipeline, say) that would delete the user's own ``unet/``.

    Raises:
        UserInputError: ``ckpt`` is a link, a file, or a non-empty folder without ``training_state.pt``
            or ``rfo_diffusion.json``.
    """
    if ckpt.is_symlink():
        raise UserInputError("the checkpoint folder is a symbolic link; give a real folder", file=ckpt, field="--out")
    if not ckpt.exists():
        return
    if not ckpt.is_dir():
        raise UserInputError("is a file, expected a checkpoint folder", file=ckpt, field="--out")
    if not any(ckpt.iterdir()) or (ckpt / STATE_FILE).is_file() or (ckpt / META_FILE).is_file():
        return
    raise UserInputError(f"refusing to write into a folder that is not an rfo-synth diffusion checkpoint (no "
                         f"{STATE_FILE} or {META_FILE}); give a new or empty folder", file=ckpt, field="--out")


def _save_dir_atomically(target: Path, writer) -> None:
    """Write a folder with ``writer`` beside ``target`` and swap it in with renames.

    Only folders created here (unique hidden names) are ever deleted; ``target`` itself is moved
    aside first, and it lies in a checkpoint folder :func:`_check_out_dir` accepted.
    """
    remove_stale_staging(target.parent, target.name)  # staging folders of killed runs
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        write_marker(staging, TOOL, state="staging")
        writer(staging)
        write_marker(staging, TOOL)
        if target.is_symlink() or target.exists() and not target.is_dir():
            raise UserInputError("expected a folder written by the trainer", file=target)
        swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _load_training_state(state_path: Path, device: str, unet, optimizer, ema) -> int:
    """Restore model, optimizer and EMA from ``training_state.pt``; return the step it was saved at.

    Raises:
        UserInputError: a damaged file or one that does not fit this model (naming the file).
    """
    import torch

    try:
        state = torch.load(state_path, map_location=device, weights_only=True)
    except Exception as err:  # torch raises many types for damaged or foreign files
        raise UserInputError(f"damaged or unreadable training state ({type(err).__name__}); delete it to "
                             "train from scratch", file=state_path) from None
    if not isinstance(state, dict) or not {"model", "optimizer", "ema", "step"} <= set(state):
        raise UserInputError("not a training state (expected model, optimizer, ema and step)", file=state_path)
    try:
        unet.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        ema.load_state_dict(state["ema"])
        step = int(state["step"])
    except (RuntimeError, KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise UserInputError(f"the training state does not fit this model ({type(err).__name__}: {first_line})",
                             file=state_path) from None
    if step < 0:
        raise UserInputError("negative step in the training state", file=state_path, field="step", value=step)
    return step


def _check_resume(ckpt: Path, model: ModelConfig, patch: PatchSpec) -> CheckpointInfo:
    info = read_checkpoint_info(ckpt)
    if info.model != model:
        raise UserInputError("cannot resume: the checkpoint was trained with another model configuration "
                             f"({asdict(info.model)})", file=ckpt, field="model")
    if info.patch != patch:
        hint = "" if info.patch.physical else " (it predates scale groups: resume it with --scale-groups fit)"
        raise UserInputError(f"cannot resume: the checkpoint was trained with another patch geometry "
                             f"({asdict(info.patch)}){hint}", file=ckpt, field="size/context/margin/scale groups")
    return info


def train(
    data_dir: str | Path,
    out_dir: str | Path,
    config: TrainConfig,
    model_config: ModelConfig | None = None,
    patch_spec: PatchSpec | None = None,
    *,
    device: str = "cpu",
    progress: bool = True,
) -> TrainResult:
    """Train (or resume training) the inpainting model on the objects of a COCO dataset.

    Args:
        data_dir: COCO dataset (``annotations.json`` + images), e.g. ``rfo-synth physics`` output.
        out_dir: checkpoint directory; when it holds ``training_state.pt`` training resumes there.
        config: optimisation settings.
        model_config: architecture (default :class:`ModelConfig`).
        patch_spec: patch geometry (default :class:`PatchSpec`).
        device: torch device string.
        progress: show a tqdm bar.

    Returns:
        A :class:`TrainResult`.

    Raises:
        UserInputError: ``out_dir`` is a foreign folder, or its checkpoint or training state is damaged
            or does not fit (see :func:`_check_out_dir`, :func:`_load_training_state`).
    """
    import torch
    from diffusers.training_utils import EMAModel
    from tqdm import tqdm

    from toolkit_core.offline import prepare_offline

    prepare_offline()
    model_config = model_config or ModelConfig()
    patch_spec = patch_spec or PatchSpec()
    ckpt = Path(out_dir)
    _check_out_dir(ckpt)
    data_root = Path(data_dir)
    patch_set = load_coco_patches(data_root, patch_spec)
    arrays = training_arrays(patch_set, model_config.target)
    classes = arrays.classes
    category_ids = tuple(sorted(set(classes.tolist())))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the initial weights depend on the seed only
        unet = build_unet(model_config, patch_spec.size_px, patch_spec.num_scale_groups).to(device)
    scheduler = build_train_scheduler(model_config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate, weight_decay=0.0)
    ema = EMAModel(unet.parameters(), decay=config.ema_decay, use_ema_warmup=True, power=0.75)
    start = 0
    state_path = ckpt / STATE_FILE
    if state_path.exists():
        _check_resume(ckpt, model_config, patch_spec)
        start = _load_training_state(state_path, device, unet, optimizer, ema)
        logger.info("resuming %s from step %d", ckpt, start)
    ckpt.mkdir(parents=True, exist_ok=True)
    save_mask_bank(ckpt, patch_set.object_masks)
    train_record: dict[str, Any] = {**asdict(config), "data": str(data_root.resolve()),
                                    "data_sha256": sha256_file(data_root / "annotations.json"),
                                    "num_patches": len(classes)}
    if arrays.groups is not None:
        train_record["patches_per_scale_group"] = np.bincount(arrays.groups,
                                                              minlength=patch_spec.num_scale_groups).tolist()

    def save(step: int) -> None:
        with atomic_output(state_path) as tmp:
            torch.save({"step": step, "model": unet.state_dict(), "optimizer": optimizer.state_dict(),
                        "ema": ema.state_dict()}, tmp)
        ema.store(unet.parameters())
        ema.copy_to(unet.parameters())
        _save_dir_atomically(ckpt / "unet", unet.save_pretrained)
        ema.restore(unet.parameters())
        _save_dir_atomically(ckpt / "scheduler", scheduler.save_pretrained)
        info = CheckpointInfo(model=model_config, patch=patch_spec, category_ids=category_ids,
                              spacing_mm=patch_set.spacing_mm, step=step, train=train_record,
                              residual_scale=arrays.residual_scale)
        write_checkpoint_info(ckpt, info)

    def lr_at(step: int) -> float:
        return config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps))

    log_path = ckpt / "train_log.jsonl"
    unet.train()
    loss_value = float("nan")
    began = time.perf_counter()
    bar = tqdm(range(start, config.steps), desc="train", unit="step", disable=not progress, initial=start,
               total=config.steps)
    with open(log_path, "a") as log:
        for step in bar:
            rng = np.random.default_rng([config.seed, step])
            generator = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
            idx = rng.integers(0, len(classes), size=config.batch_size)
            batch = (arrays.targets[idx], arrays.context[idx], arrays.regions[idx], arrays.objects[idx])
            if config.augment:
                batch = augment_arrays(rng, *batch)
            x0, context, region, obj = (torch.from_numpy(np.ascontiguousarray(a))[:, None].to(device) for a in batch)
            labels = torch.from_numpy(arrays.labels(idx)).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = training_loss(unet, scheduler, x0, region, labels, config, generator, context=context,
                                 object_mask=obj if model_config.object_channel else None)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), config.grad_clip)
            optimizer.step()
            ema.step(unet.parameters())
            loss_value = float(loss.detach())
            if not np.isfinite(loss_value):
                raise FloatingPointError(f"training diverged at step {step} (loss {loss_value})")
            log.write(json.dumps({"step": step + 1, "loss": round(loss_value, 6), "time": round(time.time(), 2)}) + "\n")
            bar.set_postfix(loss=f"{loss_value:.4f}")
            done = step + 1
            if done % config.save_every == 0 or done == config.steps:
                log.flush()  # the log always reaches at least the saved step
                save(done)
    if start >= config.steps and not (ckpt / "unet").exists():
        save(start)
    seconds = time.perf_counter() - began
    logger.info("trained %s to step %d in %.1f s (last loss %.4f)", ckpt, max(start, config.steps), seconds,
                loss_value)
    return TrainResult(ckpt_dir=ckpt, step=max(start, config.steps), resumed_from=start, last_loss=loss_value,
                       seconds=seconds, num_patches=len(classes))

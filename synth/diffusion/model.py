"""The mask- and class-conditioned inpainting UNet and its checkpoint directory.

The network is a :class:`diffusers.UNet2DModel` with four input channels and one output channel::

    input  = [x_t, region, background * (1 - region), object]     (N, 4, S, S)
    output = predicted velocity v (or noise epsilon)              (N, 1, S, S)

What ``x_0`` is depends on ``ModelConfig.target``:

* ``"residual"`` (the default): the object layer, ``(patch - smooth_fill(patch, region)) / residual_scale``
  inside the region and 0 outside. ``smooth_fill`` interpolates the region from the pixels around it
  (:func:`synth.diffusion.patches.smooth_fill`), and ``residual_scale`` (measured on the training
  crops, stored in ``rfo_diffusion.json``) brings the faint objects of a radiograph (a few percent of
  the grey range) to unit-order values. The network then spends its capacity on the object, not on
  re-drawing the anatomy, and the object is not drowned by the noise at most timesteps.
* ``"image"``: the patch itself in ``[-1, 1]`` (the first checkpoints; still readable).

The ``object`` channel is the requested object mask (the region is that mask dilated by the margin),
so the network knows where inside the region the object itself lies.

and a class embedding (``class_embed_type=None`` with ``num_class_embeds``: a learned lookup table)
whose index is the RFO category id (1..10, :mod:`rfo_bench.categories`) plus
``NUM_CLASS_EMBEDS x scale group`` (:func:`conditioning_labels`): the patch's scale group (its mm per
pixel, :mod:`synth.diffusion.patches`) is a condition like the class, so a request is drawn at its
group's scale. Index ``NUM_CLASS_EMBEDS x group`` is that group's "null" class used for
classifier-free guidance (Ho & Salimans, 2022, arXiv:2207.12598): guidance drops the class, never the
scale, which is geometry known at sampling like the mask. One joint (group, class) table rather than
two summed embeddings keeps the checkpoint a plain diffusers ``UNet2DModel`` folder; the price is
that a class's rows are not shared across groups, and most classes fall in one or two groups.
Checkpoints written before scale groups have one group (11 rows) and the fit-to-patch geometry. During training the
context channels (region + background) are also dropped at random, so the same weights serve as an
unconditional prior for RePaint-style inpainting (Lugmayr et al., CVPR 2022, arXiv:2201.09865).

A checkpoint directory (``CKPT_DIR``) holds::

    unet/                  EMA weights, diffusers ``save_pretrained`` format
    scheduler/             the training noise schedule (DDPMScheduler config)
    rfo_diffusion.json     model/patch/training configuration (scale groups included), classes,
                           pixel spacing, step
    mask_bank.npz          tight object masks per class seen in training (shapes for sampling)
    training_state.pt      raw weights, optimizer, EMA state, step (for resuming)
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rfo_bench.categories import CATEGORY_BY_ID, RFO_CATEGORIES
from synth.diffusion.patches import PatchSpec
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DModel

logger = logging.getLogger(__name__)

NULL_CLASS = 0
"""Class-embedding index meaning "no class" (classifier-free guidance)."""
NUM_CLASS_EMBEDS = max(c.id for c in RFO_CATEGORIES) + 1
META_FILE = "rfo_diffusion.json"
MASK_BANK_FILE = "mask_bank.npz"
STATE_FILE = "training_state.pt"
FORMAT_VERSION = 3
"""3: the patch record holds ``scale_groups_mm_px`` (absent in 2: fit-to-patch geometry)."""
TARGETS = ("residual", "image")
PREDICTION_TYPES = ("v_prediction", "epsilon", "sample")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and noise schedule of the inpainting UNet.

    Attributes:
        block_out_channels: channels per resolution level (each a multiple of ``norm_groups``).
        layers_per_block: ResNet layers per level.
        attention_levels: how many of the lowest-resolution levels use self-attention.
        norm_groups: GroupNorm groups.
        num_train_timesteps: diffusion steps of the training schedule.
        beta_schedule: diffusers beta schedule name (``squaredcos_cap_v2`` = cosine, Nichol & Dhariwal 2021).
        prediction_type: what the UNet predicts: ``v_prediction`` (Salimans & Ho 2022, arXiv:2202.00512),
            ``epsilon`` or ``sample``.
        target: ``residual`` (object layer over a smooth fill of the region) or ``image`` (the patch).
        object_channel: give the UNet the object mask as a fourth input channel.
    """

    block_out_channels: tuple[int, ...] = (16, 32, 64, 64)
    layers_per_block: int = 1
    attention_levels: int = 0
    norm_groups: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"
    prediction_type: str = "v_prediction"
    target: str = "residual"
    object_channel: bool = True

    def __post_init__(self) -> None:
        if not self.block_out_channels or any(c % self.norm_groups for c in self.block_out_channels):
            raise UserInputError(f"every block width must be a multiple of norm_groups={self.norm_groups}",
                                 field="block_out_channels", value=self.block_out_channels)
        if not 0 <= self.attention_levels <= len(self.block_out_channels):
            raise UserInputError("attention_levels must be between 0 and the number of levels",
                                 field="attention_levels", value=self.attention_levels)
        if self.prediction_type not in PREDICTION_TYPES:
            raise UserInputError(f"unknown prediction type; expected one of {PREDICTION_TYPES}",
                                 field="prediction_type", value=self.prediction_type)
        if self.target not in TARGETS:
            raise UserInputError(f"unknown target; expected one of {TARGETS}", field="target", value=self.target)

    @property
    def in_channels(self) -> int:
        return 4 if self.object_channel else 3

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of ``asdict``; checkpoints written before a field existed get its old behaviour."""
        known = {f.name for f in fields(cls)}
        legacy = {"prediction_type": "epsilon", "target": "image", "object_channel": False, "attention_levels": 1}
        kwargs = {**legacy, **{k: v for k, v in data.items() if k in known}}
        if "block_out_channels" in kwargs:
            kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
        return cls(**kwargs)


TINY_MODEL = ModelConfig(block_out_channels=(16, 32), layers_per_block=1, attention_levels=0, norm_groups=8,
                         num_train_timesteps=100)
"""A model small enough for unit tests (a few thousand parameters per level)."""


def build_unet(config: ModelConfig, size_px: int, num_scale_groups: int = 1) -> UNet2DModel:
    """A fresh (randomly initialised) inpainting UNet for ``size_px`` patches and ``num_scale_groups``
    scale groups (the class table has ``NUM_CLASS_EMBEDS x num_scale_groups`` rows)."""
    from diffusers import UNet2DModel

    levels = len(config.block_out_channels)
    if size_px % (2 ** (levels - 1)):
        raise UserInputError(f"patch size must be divisible by 2**(levels-1) = {2 ** (levels - 1)}",
                             field="size", value=size_px)
    attn = [i >= levels - config.attention_levels for i in range(levels)]
    down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn)
    up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn))
    return UNet2DModel(
        sample_size=size_px,
        in_channels=config.in_channels,
        out_channels=1,
        block_out_channels=tuple(config.block_out_channels),
        layers_per_block=config.layers_per_block,
        down_block_types=down,
        up_block_types=up,
        norm_num_groups=config.norm_groups,
        attention_head_dim=8,
        class_embed_type=None,
        num_class_embeds=NUM_CLASS_EMBEDS * int(num_scale_groups),
    )


def conditioning_labels(category_ids, scale_groups=None):
    """The UNet's class-table index of each (category, scale group): ``group * NUM_CLASS_EMBEDS + id``.

    Args:
        category_ids: ``(N,)`` integer array or long tensor of category ids (or :data:`NULL_CLASS`).
        scale_groups: ``(N,)`` group indices of the same kind; ``None``: group 0 (fit-to-patch models).

    Returns:
        The same kind as ``category_ids``.
    """
    if scale_groups is None:
        return category_ids
    return category_ids + scale_groups * NUM_CLASS_EMBEDS


def null_labels(labels):
    """The null class of each label's scale group (what classifier-free guidance swaps a label for)."""
    return labels - labels % NUM_CLASS_EMBEDS


def build_train_scheduler(config: ModelConfig):
    """The DDPM training schedule (also the base every sampler is derived from)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule=config.beta_schedule,
                         prediction_type=config.prediction_type, clip_sample=False)


def model_input(noisy: torch.Tensor, region: torch.Tensor, background: torch.Tensor,
                object_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Stack the UNet input channels.

    Args:
        noisy: ``(N, 1, S, S)`` current sample ``x_t``.
        region: ``(N, 1, S, S)`` 1 inside the region to inpaint, 0 elsewhere (all 0 = no context).
        background: ``(N, 1, S, S)`` the patch in ``[-1, 1]``; its region pixels are zeroed here.
        object_mask: ``(N, 1, S, S)`` 1 on the object (models with ``object_channel``), else ``None``.

    Returns:
        ``(N, 3, S, S)``, or ``(N, 4, S, S)`` with ``object_mask``.
    """
    import torch

    channels = [noisy, region, background * (1.0 - region)]
    if object_mask is not None:
        channels.append(object_mask)
    return torch.cat(channels, dim=1)


# ------------------------------------------------------------------------------------- checkpoints


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``rfo_diffusion.json`` records about a checkpoint."""

    model: ModelConfig
    patch: PatchSpec
    category_ids: tuple[int, ...]
    spacing_mm: float
    step: int
    train: dict[str, Any]
    residual_scale: float = 1.0

    @property
    def scale_groups_mm_px(self) -> tuple[float, ...] | None:
        """The patch pixel sizes (mm) of the scale groups; ``None`` for a fit-to-patch checkpoint."""
        return self.patch.scale_groups_mm_px

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "model": asdict(self.model),
            "patch": asdict(self.patch),
            "categories": [{"id": cid, "name": CATEGORY_BY_ID[cid].name} for cid in self.category_ids],
            "spacing_mm": self.spacing_mm,
            "step": self.step,
            "residual_scale": self.residual_scale,
            "train": self.train,
        }


def read_checkpoint_info(ckpt_dir: str | Path) -> CheckpointInfo:
    """Read and validate a checkpoint directory's metadata.

    Raises:
        UserInputError: the directory is missing, is not a diffusers model directory (no
            ``unet/config.json``), or lacks/has a corrupt ``rfo_diffusion.json``.
    """
    root = Path(ckpt_dir)
    if not root.is_dir():
        raise UserInputError("checkpoint directory does not exist", file=root)
    if not (root / "unet" / "config.json").exists():
        hint = " (it looks like a Stable Diffusion pipeline: use --pretrained)" if (
            root / "model_index.json").exists() else ""
        raise UserInputError(f"not a diffusers model directory: expected unet/config.json{hint}", file=root)
    meta_path = root / META_FILE
    if not meta_path.exists():
        raise UserInputError(f"not an rfo-synth diffusion checkpoint: {META_FILE} is missing", file=root)
    try:
        meta = json.loads(meta_path.read_text())
        category_ids = tuple(int(c["id"]) for c in meta["categories"])
        info = CheckpointInfo(
            model=ModelConfig.from_dict(meta["model"]),
            patch=PatchSpec.from_dict(meta["patch"]),
            category_ids=category_ids,
            spacing_mm=float(meta["spacing_mm"]),
            step=int(meta["step"]),
            train=dict(meta.get("train", {})),
            residual_scale=float(meta.get("residual_scale", 1.0)),
        )
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise UserInputError(f"corrupt checkpoint metadata: {err}", file=meta_path) from None
    unknown = [cid for cid in category_ids if cid not in CATEGORY_BY_ID]
    if unknown:
        raise UserInputError("unknown category ids in checkpoint", file=meta_path, field="categories", value=unknown)
    return info


def write_checkpoint_info(ckpt_dir: Path, info: CheckpointInfo) -> None:
    atomic_write_bytes(ckpt_dir / META_FILE, (json.dumps(info.to_json(), indent=2) + "\n").encode())


MASK_BANK_MAX_BYTES = 1 << 30
"""Largest decompressed mask bank read (1 GiB; a bank holds a few thousand masks of under 64 kB each)."""


def save_mask_bank(ckpt_dir: Path, bank: dict[int, list[np.ndarray]]) -> None:
    """Store the tight object masks per class as ``mask_bank.npz`` (keys ``c{id}_{k}``), atomically."""
    from toolkit_core.utils import atomic_output

    arrays = {f"c{cid}_{k}": m.astype(bool) for cid, masks in bank.items() for k, m in enumerate(masks)}
    with atomic_output(ckpt_dir / MASK_BANK_FILE) as tmp:
        np.savez_compressed(tmp, **arrays)


_MASK_KEY = re.compile(r"c(\d+)_(\d+)")


def load_mask_bank(ckpt_dir: str | Path) -> dict[int, list[np.ndarray]]:
    """Inverse of :func:`save_mask_bank`.

    Read with ``allow_pickle=False`` (an object array, which would un-pickle, is refused) after the
    decompressed sizes the archive declares are checked against :data:`MASK_BANK_MAX_BYTES`.

    Raises:
        UserInputError: missing, damaged or oversized file, an object array, a key not ``c{id}_{k}``
            or a mask that is not 2-D.
    """
    path = Path(ckpt_dir) / MASK_BANK_FILE
    if not path.exists():
        raise UserInputError("checkpoint has no mask bank; sample with explicit masks (--requests)", file=path)
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile) as err:
        raise UserInputError(f"damaged mask bank ({type(err).__name__})", file=path) from None
    if declared > MASK_BANK_MAX_BYTES:
        raise UserInputError(f"mask bank decompresses to {declared / 2**20:.0f} MiB, more than the "
                             f"{MASK_BANK_MAX_BYTES >> 20} MiB a bank can be", file=path)
    bank: dict[int, list[tuple[int, np.ndarray]]] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                match = _MASK_KEY.fullmatch(key)
                if match is None:
                    raise UserInputError("mask bank keys must be c{category id}_{index}", file=path, field=key)
                mask = data[key]
                if mask.ndim != 2:
                    raise UserInputError("a mask must be a 2-D array", file=path, field=key, value=mask.shape)
                bank.setdefault(int(match.group(1)), []).append((int(match.group(2)), mask.astype(bool)))
    except UserInputError:
        raise
    except ValueError as err:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise UserInputError(f"refused mask bank: {err}", file=path) from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as err:
        raise UserInputError(f"damaged mask bank ({type(err).__name__})", file=path) from None
    return {cid: [m for _, m in sorted(masks, key=lambda item: item[0])] for cid, masks in sorted(bank.items())}


def load_unet(ckpt_dir: str | Path, device: str | torch.device = "cpu") -> UNet2DModel:
    """Load the EMA UNet of a checkpoint (local files only) in eval mode."""
    from diffusers import UNet2DModel

    from toolkit_core.offline import prepare_offline

    prepare_offline()
    root = Path(ckpt_dir)
    info = read_checkpoint_info(root)
    try:
        unet = UNet2DModel.from_pretrained(root, subfolder="unet", local_files_only=True, low_cpu_mem_usage=False)
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot load the UNet weights: {err}", file=root / "unet") from None
    rows = int(unet.config.num_class_embeds or 0)
    if rows != NUM_CLASS_EMBEDS * info.patch.num_scale_groups:
        raise UserInputError(f"the UNet's class table has {rows} rows; {info.patch.num_scale_groups} scale group(s) "
                             f"need {NUM_CLASS_EMBEDS * info.patch.num_scale_groups}", file=root / META_FILE,
                             field="patch.scale_groups_mm_px", value=info.scale_groups_mm_px)
    return unet.to(device).eval()


def load_train_scheduler(ckpt_dir: str | Path):
    """The checkpoint's training DDPM schedule."""
    from diffusers import DDPMScheduler

    root = Path(ckpt_dir)
    try:
        return DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot load the noise schedule: {err}", file=root / "scheduler") from None

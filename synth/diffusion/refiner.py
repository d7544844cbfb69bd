"""The refiner: an unconditional denoiser of *real* film patches, the prior of :mod:`synth.diffusion.refine`.

What a model can learn from the one real radiograph that the physics renderer lacks is the film's own
look at the detector's pixel size: its sharpness, grain and the console processing around edges. The
refiner is trained on that film only, never on a physics render:

* **Film**: the real radiograph (default the embedded one, the renderer's own background) resampled to
  the renders' side (``size_px``, e.g. 256) by the renderer's own rule
  (:func:`synth.physics.backgrounds.prepare_radiograph`), so a refiner pixel is a render pixel
  (1.44 mm for the embedded film at 256 px).
* **Crop policy**: square windows of ``patch_px`` pixels, drawn uniformly among the positions whose
  centre lies in the renderer's body mask (where it places objects; 84 % of the embedded film at
  256 px) and whose window lies inside the film; every window is object-free (the film shows no RFO).
  Each crop is flipped / rotated by a multiple of 90 degrees at random, and its grey levels get a
  random gain (``gain_range``, about the crop's mean) and offset (``offset_range``): the renders pass
  the film through per-image console curves (:mod:`synth.physics.film`), and the refiner must accept
  those grey levels without learning them.
* **Model**: a small :class:`diffusers.UNet2DModel` (one input channel, no class table, no attention),
  ``v``-prediction on the cosine schedule, the EMA of its weights kept for sampling. Being fully
  convolutional, it denoises windows of any side divisible by ``2 ** (levels - 1)``.

A refiner folder holds ``unet/`` (EMA weights), ``scheduler/`` and ``refiner.json`` (this config, the
film's name and sha256, the losses; the chosen ``t0`` and its table once
:func:`synth.diffusion.refine.choose_t0` has run).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_write_bytes

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

REFINER_FILE = "refiner.json"
REFINER_TOOL = "rfo-synth diffusion fit-refiner"


@dataclass(frozen=True)
class RefinerConfig:
    """How the refiner is trained (see the module docstring for the crop policy).

    Attributes:
        size_px: side the real film is resampled to (the side of the renders it will refine).
        patch_px: side of the training crops.
        steps: optimisation steps.
        batch_size: crops per step.
        learning_rate: AdamW learning rate.
        ema_decay: decay of the weights' moving average used for sampling.
        block_out_channels: UNet widths per level.
        num_train_timesteps: steps of the cosine noise schedule.
        gain_range: random contrast gain of a crop about its mean.
        offset_range: random grey-level offset of a crop (0-1 units).
        seed: seed of initialisation, crops and noise.
    """

    size_px: int = 256
    patch_px: int = 64
    steps: int = 1500
    batch_size: int = 16
    learning_rate: float = 1e-3
    ema_decay: float = 0.995
    block_out_channels: tuple[int, ...] = (16, 32, 64)
    num_train_timesteps: int = 1000
    gain_range: tuple[float, float] = (0.8, 1.25)
    offset_range: tuple[float, float] = (-0.1, 0.1)
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in self.block_out_channels))
        object.__setattr__(self, "gain_range", tuple(float(v) for v in self.gain_range))
        object.__setattr__(self, "offset_range", tuple(float(v) for v in self.offset_range))
        if self.steps < 1 or self.batch_size < 1:
            raise UserInputError("steps and batch size must be >= 1", field="steps/batch",
                                 value=(self.steps, self.batch_size))
        if not 16 <= self.patch_px <= self.size_px:
            raise UserInputError(f"patch side must lie in 16..size ({self.size_px})", field="patch_px",
                                 value=self.patch_px)
        if self.patch_px % self.divisor:
            raise UserInputError(f"patch side must be divisible by {self.divisor}", field="patch_px",
                                 value=self.patch_px)
        if not self.block_out_channels or any(c < 8 or c % 8 for c in self.block_out_channels):
            raise UserInputError("block widths must be multiples of 8", field="block_out_channels",
                                 value=self.block_out_channels)

    @property
    def divisor(self) -> int:
        """A window side the UNet accepts is a multiple of this."""
        return 2 ** (len(self.block_out_channels) - 1)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RefinerConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


TINY_REFINER = RefinerConfig(size_px=64, patch_px=32, steps=2, batch_size=2, block_out_channels=(8, 16),
                             num_train_timesteps=100)
"""A refiner small enough for unit tests."""


def film_for_refiner(size_px: int, film: str | Path | None = None) -> tuple[np.ndarray, np.ndarray, str, str]:
    """The real film at the renders' pixel size and the renderer's body mask.

    Args:
        size_px: side of the renders.
        film: a radiograph file; ``None``: the embedded one (the physics renderer's default background).

    Returns:
        ``(display (S, S) float32 in [0, 1], body_mask (S, S) bool, file name, sha256)``.
    """
    from synth.physics.config import PhysicsConfig
    from synth.physics.generate import build_renderer

    background = build_renderer(PhysicsConfig(size=int(size_px)), film).background
    return (np.asarray(background.display, dtype=np.float32), np.asarray(background.body_mask, dtype=bool),
            background.name, background.sha256)


def crop_centres(body_mask: np.ndarray, patch_px: int) -> np.ndarray:
    """``(K, 2)`` top-left corners of the allowed windows: centre in ``body_mask``, window inside the film.

    Raises:
        UserInputError: no window qualifies.
    """
    h, w = body_mask.shape
    half = patch_px // 2
    allowed = np.zeros_like(body_mask, dtype=bool)
    allowed[half:h - (patch_px - half) + 1, half:w - (patch_px - half) + 1] = True
    rows, cols = np.nonzero(allowed & body_mask)
    if rows.size == 0:
        raise UserInputError(f"no {patch_px}-px window of the film has its centre in the body mask",
                             field="patch_px", value=patch_px)
    return np.stack([rows - half, cols - half], axis=1)


def random_film_crops(display: np.ndarray, corners: np.ndarray, patch_px: int, n: int, rng: np.random.Generator,
                      config: RefinerConfig) -> np.ndarray:
    """``(n, patch_px, patch_px)`` augmented crops in ``[0, 1]`` (flip, rot90, gain about the mean, offset)."""
    out = np.empty((n, patch_px, patch_px), dtype=np.float32)
    for i in range(n):
        r, c = corners[int(rng.integers(len(corners)))]
        crop = display[r:r + patch_px, c:c + patch_px]
        crop = np.rot90(crop, int(rng.integers(4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        gain, offset = rng.uniform(*config.gain_range), rng.uniform(*config.offset_range)
        mean = float(crop.mean())
        out[i] = np.clip(mean + gain * (crop - mean) + offset, 0.0, 1.0)
    return out


def build_refiner_unet(config: RefinerConfig):
    """A fresh unconditional UNet (one channel in, one out, no attention)."""
    from diffusers import UNet2DModel

    levels = len(config.block_out_channels)
    return UNet2DModel(sample_size=config.patch_px, in_channels=1, out_channels=1,
                       block_out_channels=config.block_out_channels, layers_per_block=1,
                       down_block_types=("DownBlock2D",) * levels, up_block_types=("UpBlock2D",) * levels,
                       norm_num_groups=8)


def build_refiner_scheduler(config: RefinerConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=config.num_train_timesteps, beta_schedule="squaredcos_cap_v2",
                         prediction_type="v_prediction", clip_sample=False)


def train_refiner(out_dir: str | Path, config: RefinerConfig, *, film: str | Path | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Train the refiner on crops of the real film and write its folder (``out_dir`` must be fresh).

    Returns:
        The ``refiner.json`` record.
    """
    import copy

    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from toolkit_core.utils import seed_everything

    rng = seed_everything(config.seed)
    display, body, name, sha = film_for_refiner(config.size_px, film)
    corners = crop_centres(body, config.patch_px)
    unet = build_refiner_unet(config)
    ema = copy.deepcopy(unet).eval()
    scheduler = build_refiner_scheduler(config)
    optimizer = torch.optim.AdamW(unet.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    began = time.perf_counter()
    bar = tqdm(range(config.steps), desc="fit-refiner", unit="step", disable=not progress, dynamic_ncols=True)
    unet.train()
    for _ in bar:
        x0 = torch.from_numpy(random_film_crops(display, corners, config.patch_px, config.batch_size, rng, config))
        x0 = (2.0 * x0 - 1.0)[:, None]
        noise = torch.randn(x0.shape, generator=generator)
        t = torch.randint(0, config.num_train_timesteps, (x0.shape[0],), generator=generator)
        noisy = scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(unet(noisy, t).sample, scheduler.get_velocity(x0, noise, t))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            for e, p in zip(ema.parameters(), unet.parameters(), strict=True):
                e.mul_(config.ema_decay).add_(p.detach(), alpha=1.0 - config.ema_decay)
        losses.append(float(loss))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
    bar.close()
    record = {"config": asdict(config), "film": {"name": name, "sha256": sha, "size_px": config.size_px},
              "crop_windows": int(len(corners)), "step": config.steps,
              "loss_first_50": float(np.mean(losses[:50])), "loss_last_50": float(np.mean(losses[-50:])),
              "train_seconds": round(time.perf_counter() - began, 1),
              "parameters": int(sum(p.numel() for p in unet.parameters())), "t0": None}
    write_refiner(out_dir, ema, scheduler, record)
    logger.info("refiner: %d steps, loss %.4f -> %.4f, %s", config.steps, record["loss_first_50"],
                record["loss_last_50"], out_dir)
    return record


def write_refiner(folder: str | Path, unet, scheduler, record: dict[str, Any]) -> Path:
    """Write a refiner folder: ``unet/``, ``scheduler/`` and ``refiner.json`` (written last)."""
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out / "unet")
    scheduler.save_pretrained(out / "scheduler")
    write_refiner_record(out, record)
    return out


def write_refiner_record(folder: Path, record: dict[str, Any]) -> None:
    atomic_write_bytes(Path(folder) / REFINER_FILE, (json.dumps(record, indent=2) + "\n").encode())


def read_refiner_record(folder: str | Path) -> dict[str, Any]:
    """``refiner.json`` of a refiner folder.

    Raises:
        UserInputError: not a refiner folder, or a damaged record.
    """
    root = Path(folder)
    path = root / REFINER_FILE
    if not root.is_dir():
        raise UserInputError("refiner folder does not exist", file=root)
    if not path.is_file() or not (root / "unet" / "config.json").is_file():
        raise UserInputError(f"not a refiner folder (expected {REFINER_FILE} and unet/; write one with "
                             "`rfo-synth diffusion fit-refiner`)", file=root)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        RefinerConfig.from_dict(record["config"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise UserInputError(f"damaged refiner record: {err}", file=path) from None
    return record


def load_refiner(folder: str | Path, device: str = "cpu") -> tuple[Any, Any, dict[str, Any]]:
    """``(EMA UNet in eval mode, training scheduler, record)`` of a refiner folder (local files only)."""
    from diffusers import DDPMScheduler, UNet2DModel

    from toolkit_core.offline import prepare_offline

    prepare_offline()
    root = Path(folder)
    record = read_refiner_record(root)
    try:
        unet = UNet2DModel.from_pretrained(root, subfolder="unet", local_files_only=True, low_cpu_mem_usage=False)
        scheduler = DDPMScheduler.from_pretrained(root, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as err:
        raise UserInputError(f"cannot load the refiner: {err}", file=root) from None
    return unet.to(device).eval(), scheduler, record


def window_divisor(unet: torch.nn.Module) -> int:
    """A window side the UNet accepts is a multiple of this (``2 ** (levels - 1)``)."""
    return 2 ** (len(unet.config.block_out_channels) - 1)


def abar_at(scheduler, t: int) -> float:
    """``alpha_bar`` of the training schedule at timestep ``t``."""
    return float(scheduler.alphas_cumprod[int(t)])


def noise_level(scheduler, t: int) -> float:
    """Noise standard deviation relative to the signal's at timestep ``t``: ``sqrt((1 - abar) / abar)``."""
    a = abar_at(scheduler, t)
    return math.sqrt((1.0 - a) / a) if a > 0 else math.inf

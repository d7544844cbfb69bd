"""Typed training configuration for the detector baselines and the named recipe presets.

A :class:`Recipe` holds everything that defines *how* a detector is trained (optimiser, schedule,
image size, augmentation); a :class:`TrainConfig` adds *what* is trained (model, backbone, seed,
device, optional local weights). Both are frozen; CLI flags and YAML entries only ever override
fields through :func:`recipe_with_overrides` so every run records one complete, reproducible
configuration in its output directory.

Presets:

* ``paper`` - the Hopkins RFOs Bench torchvision recipe: SGD, lr 0.005, momentum 0.9, weight decay
  5e-4, step learning-rate decay (x0.1). Epochs, image size and step interval are our choices for a
  full-size run (the step comes at 2/3 of training).
* ``cpu-tiny`` - the same optimiser family at 128-px images and 5 epochs, for CPU smoke runs of the
  whole pipeline (measured times in ``docs/leaderboard.md``). It is not a converged baseline: YOLO
  trained from scratch does not learn in this budget.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from rfo_bench.detectors.tiling import TileConfig
from toolkit_core.errors import UserInputError, dataclass_from

OPTIMIZERS = ("sgd", "adamw")
"""Optimisers a recipe can name."""


@dataclass(frozen=True)
class Recipe:
    """How a detector is trained.

    Attributes:
        name: preset name the recipe came from (kept when fields are overridden).
        epochs: passes over the training set.
        imgsz: longest image side in pixels after resizing (aspect ratio kept).
        batch_size: images per optimiser step.
        lr: initial learning rate.
        optimizer: ``sgd`` (SGD with momentum, the paper's) or ``adamw`` (AdamW, ``momentum`` is its beta1);
            AdamW trains from-scratch detectors in far fewer iterations, which is what CPU budgets need.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        lr_step_epochs: the learning rate is multiplied by ``lr_gamma`` every this many epochs.
        lr_gamma: step decay factor.
        warmup_iters: linear learning-rate warm-up over the first iterations (0 = none).
        grad_clip_norm: clip the global gradient norm (0 = no clipping).
        hflip_p: probability of a horizontal flip (chest anatomy is nearly symmetric; RFOs are not
            lateralised).
        intensity_jitter: magnitude of brightness/contrast jitter in ``[0, 1]`` units (0 = off).
        mosaic: probability of Ultralytics' 4-image mosaic augmentation (YOLO family only). Mosaic halves
            object sizes, which hurts small images with small objects; 0 turns it off.
        close_mosaic: the last this many epochs train without mosaic (Ultralytics' ``close_mosaic``, whose
            default, 10, this keeps; YOLO family only), so the detector ends on images at their own scale.
        fpn_channels: feature-pyramid width of the torchvision detectors.
        roi_batch_size: region proposals sampled per image for the Faster R-CNN box head (torchvision's
            default 512; fewer for small images, where there are few distinct proposals anyway).
        score_threshold: detections below this score are dropped at prediction (low, so that AP and
            FROC see the whole operating curve).
        max_detections: detections kept per image.
    """

    name: str
    epochs: int
    imgsz: int
    batch_size: int
    lr: float = 0.005
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_step_epochs: int = 8
    lr_gamma: float = 0.1
    warmup_iters: int = 100
    grad_clip_norm: float = 10.0
    hflip_p: float = 0.5
    intensity_jitter: float = 0.1
    mosaic: float = 1.0
    close_mosaic: int = 10
    fpn_channels: int = 256
    roi_batch_size: int = 512
    score_threshold: float = 0.001
    max_detections: int = 100

    def __post_init__(self) -> None:
        positive_ints = ("epochs", "imgsz", "batch_size", "lr_step_epochs", "fpn_channels", "roi_batch_size",
                         "max_detections")
        for name in positive_ints:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise UserInputError("must be a positive integer", field=name, value=value)
        if self.imgsz < 32:
            raise UserInputError("image size must be at least 32 px", field="imgsz", value=self.imgsz)
        for name in ("lr", "weight_decay", "momentum", "lr_gamma", "hflip_p", "intensity_jitter",
                     "score_threshold", "grad_clip_norm", "mosaic"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise UserInputError("must be a non-negative number", field=name, value=value)
        if self.lr <= 0:
            raise UserInputError("learning rate must be positive", field="lr", value=self.lr)
        for name in ("hflip_p", "intensity_jitter", "score_threshold", "momentum", "mosaic"):
            if getattr(self, name) > 1:
                raise UserInputError("must be in [0, 1]", field=name, value=getattr(self, name))
        if self.optimizer not in OPTIMIZERS:
            raise UserInputError("unknown optimizer; expected one of: " + ", ".join(OPTIMIZERS), field="optimizer",
                                 value=self.optimizer)
        for name in ("warmup_iters", "close_mosaic"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserInputError("must be a non-negative integer", field=name, value=value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RECIPES: dict[str, Recipe] = {
    "paper": Recipe(name="paper", epochs=24, imgsz=1024, batch_size=4, lr=0.005, momentum=0.9,
                    weight_decay=5e-4, lr_step_epochs=16, lr_gamma=0.1, warmup_iters=500),
    "cpu-tiny": Recipe(name="cpu-tiny", epochs=5, imgsz=128, batch_size=4, lr=0.01, momentum=0.9,
                       weight_decay=5e-4, lr_step_epochs=4, lr_gamma=0.1, warmup_iters=10, fpn_channels=64,
                       roi_batch_size=128, max_detections=50),
}
"""The named recipe presets (``rfo-bench train --recipe NAME``)."""


def get_recipe(name: str) -> Recipe:
    """The preset called ``name`` (``UserInputError`` listing the presets when unknown)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UserInputError(
            "unknown recipe; expected one of: " + ", ".join(sorted(RECIPES)), field="recipe", value=name
        ) from None


def recipe_with_overrides(base: Recipe | str, overrides: dict[str, Any] | None = None) -> Recipe:
    """``base`` (a preset name or recipe) with some fields replaced; ``None`` values are ignored.

    Raises:
        UserInputError: an override names no recipe field, or gives an invalid value.
    """
    recipe = get_recipe(base) if isinstance(base, str) else base
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    known = {f.name for f in fields(Recipe)} - {"name"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UserInputError(
            "unknown recipe field(s) " + ", ".join(unknown) + "; known: " + ", ".join(sorted(known)),
            field="recipe", value=unknown,
        )
    float_fields = {f.name for f in fields(Recipe) if f.type in ("float", float)}
    cleaned = {k: (float(v) if k in float_fields and isinstance(v, int) and not isinstance(v, bool) else v)
               for k, v in given.items()}
    return replace(recipe, **cleaned)


RUNTIME_FIELDS = ("device", "amp", "workers", "checkpoint_every", "threads")
"""Fields of :class:`TrainConfig` that change where and how fast a run goes (or how much a stop costs), not
what it learns: a run's fingerprint leaves them out, so it may be resumed on another device, with more
workers or threads or with checkpoints at another interval."""


@dataclass(frozen=True)
class TrainConfig:
    """What is trained, on which device, from which seed.

    Attributes:
        model: registered detector name (see :func:`rfo_bench.detectors.list_detectors`).
        recipe: the training recipe.
        seed: seed for weights initialisation, augmentation and data order.
        backbone: ``timm`` model name for the torchvision detectors (``features_only`` capable);
            ignored by the Ultralytics models, whose architecture is fixed by their yaml.
        weights: optional local file: a timm backbone checkpoint (torchvision family) or an
            Ultralytics ``.pt`` (YOLO family). Nothing is ever downloaded.
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``; ``auto`` is resolved by
            :func:`resolve_device` before a config is built).
        tiling: train on tiles cut at native spacing (and predict sliced); ``None`` = whole images
            resized to ``recipe.imgsz``. With tiling, ``recipe.imgsz`` must equal the tile size.
        amp: mixed precision where the device supports it (CUDA); ignored on CPU.
        checkpoint_every: also save a resumable checkpoint every this many optimiser steps inside an
            epoch (both families; see :mod:`rfo_bench.detectors.yolo_checkpoints` for the Ultralytics
            trainer); 0 = only at the end of each epoch.
        workers: processes that cut the training tiles and load the Ultralytics trainer's batches
            (0: all in this process). Like ``device`` it changes speed, not the result: the tiles do
            not depend on it, and a run may be resumed with another value.
        threads: CPU threads of torch while training, in both families (``None``: the libraries' own
            choice; the Ultralytics trainer then takes one fewer than the machine's cores, so on a
            2-core machine a YOLO model trains on one). Speed only: the last bits of a float sum may
            differ with the count, the recipe does not.
    """

    model: str
    recipe: Recipe
    seed: int = 0
    backbone: str = "resnet18"
    weights: str | None = None
    device: str = "cpu"
    tiling: TileConfig | None = None
    amp: bool = True
    checkpoint_every: int = 0
    workers: int = 0
    threads: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise UserInputError("seed must be a non-negative integer", field="seed", value=self.seed)
        if not isinstance(self.checkpoint_every, int) or self.checkpoint_every < 0:
            raise UserInputError("must be a non-negative integer", field="checkpoint_every",
                                 value=self.checkpoint_every)
        if not isinstance(self.workers, int) or isinstance(self.workers, bool) or self.workers < 0:
            raise UserInputError("must be a non-negative integer", field="workers", value=self.workers)
        if self.threads is not None and (not isinstance(self.threads, int) or isinstance(self.threads, bool)
                                         or self.threads < 1):
            raise UserInputError("must be a positive integer", field="threads", value=self.threads)
        if self.tiling is not None and self.tiling.tile_size != self.recipe.imgsz:
            raise UserInputError(f"with tiling the detector input must be the tile size ({self.tiling.tile_size} px)",
                                 field="imgsz", value=self.recipe.imgsz)

    @property
    def use_amp(self) -> bool:
        """Mixed precision is on: asked for, and the device is CUDA."""
        return self.amp and self.device.startswith("cuda")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["recipe"] = self.recipe.to_dict()
        data["tiling"] = None if self.tiling is None else self.tiling.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, file: str | Path | None = None, key: str = "config") -> TrainConfig:
        """Inverse of :meth:`to_dict` (used to reload a trained detector's record, ``file``, at ``key``).

        Raises:
            UserInputError: a missing section, an unknown key or a value of the wrong type, naming ``file``
                and the field (a record is a user's file like any other).
        """
        def section(name: str) -> dict[str, Any]:
            value = data.get(name)
            if not isinstance(value, dict):
                raise UserInputError("corrupt detector record: expected a mapping", file=file, field=f"{key}.{name}",
                                     value=value)
            return dict(value)

        recipe = dataclass_from(Recipe, section("recipe"), file=file, key=f"{key}.recipe")
        tiling = None
        if data.get("tiling") is not None:
            values = section("tiling")
            if isinstance(values.get("window_percentiles"), list):
                values["window_percentiles"] = tuple(values["window_percentiles"])
            tiling = dataclass_from(TileConfig, values, file=file, key=f"{key}.tiling")
        return dataclass_from(cls, {**data, "recipe": recipe, "tiling": tiling}, file=file, key=key)


def resolve_device(device: str | None) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; any other name is returned unchanged.

    Raises:
        UserInputError: a CUDA device is named but torch sees none.
    """
    name = (device or "cpu").strip()
    if name not in ("auto", "cpu") and not name.startswith("cuda") and name != "mps":
        raise UserInputError("unknown device; expected auto, cpu, cuda, cuda:N or mps", field="--device", value=name)
    if name == "auto" or name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            if name == "auto":
                return "cpu"
            raise UserInputError("torch sees no CUDA device here", field="--device", value=name)
        return "cuda" if name == "auto" else name
    return name

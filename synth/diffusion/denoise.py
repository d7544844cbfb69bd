"""Denoising one batch of patches: the object drawn inside a region, the background kept outside it.

The window is denoised with DDIM (Song et al., 2021, arXiv:2010.02502), DPM-Solver++ (Lu et al., 2022,
arXiv:2211.01095) or DDPM, with classifier-free guidance ``eps = eps_null + w (eps_class - eps_null)``.
After every step the known region is replaced by the background forward-noised to the next timestep
(RePaint, Lugmayr et al., CVPR 2022), and at the last step by the background itself, so the patch
outside the region equals the background. ``mode="repaint"`` also hides the region and background
channels from the network (the unconditional prior of the same weights) and can resample each step
``resample`` times (RePaint's jumps of length 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from synth.diffusion.model import model_input, null_labels
from synth.diffusion.patches import smooth_fill
from toolkit_core.errors import UserInputError

if TYPE_CHECKING:
    import torch

SCHEDULERS = ("ddim", "dpm", "ddpm")
MODES = ("conditional", "repaint")
BASES = ("background", "fill")


@dataclass(frozen=True)
class SamplerConfig:
    """How patches are denoised.

    Attributes:
        scheduler: ``ddim``, ``dpm`` (DPM-Solver++ multistep) or ``ddpm``.
        steps: denoising steps.
        guidance_scale: classifier-free guidance weight ``w`` (1 = plain conditional, 0 = unconditional).
        mode: ``conditional`` (region + background channels given) or ``repaint`` (hidden; known region
            enforced only by replacement).
        resample: RePaint resampling per step (1 = none); ``ddim``/``ddpm`` only.
        eta: DDIM stochasticity (0 = deterministic given the initial noise).
        base: for ``residual``-target models, what the generated object layer is added to inside the
            region: ``background`` (the anatomy actually under the object: an X-ray object overlays it)
            or ``fill`` (the smooth fill the layer was measured against in training; it blurs the
            anatomy under wide regions).
    """

    scheduler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0
    mode: str = "conditional"
    resample: int = 1
    eta: float = 0.0
    base: str = "background"

    def __post_init__(self) -> None:
        if self.base not in BASES:
            raise UserInputError(f"unknown base; expected one of {BASES}", field="base", value=self.base)
        if self.scheduler not in SCHEDULERS:
            raise UserInputError(f"unknown scheduler; expected one of {SCHEDULERS}", field="scheduler",
                                 value=self.scheduler)
        if self.mode not in MODES:
            raise UserInputError(f"unknown mode; expected one of {MODES}", field="mode", value=self.mode)
        if self.steps < 1 or self.resample < 1:
            raise UserInputError("steps and resample must be >= 1", field="steps/resample",
                                 value=(self.steps, self.resample))
        if self.resample > 1 and self.scheduler == "dpm":
            raise UserInputError("resampling needs a single-step scheduler (ddim or ddpm); DPM-Solver is multistep",
                                 field="resample", value=self.resample)


def make_scheduler(train_scheduler, name: str):
    """A sampling scheduler sharing the training noise schedule."""
    from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

    cls = {"ddim": DDIMScheduler, "dpm": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}[name]
    return cls.from_config(train_scheduler.config)


def _guided_output(unet, x, t, region, background, object_mask, class_ids, config: SamplerConfig):
    """The guided model output ``out_null + w (out_class - out_null)`` (whatever the prediction type)."""
    import torch

    n = x.shape[0]
    keep = 0.0 if config.mode == "repaint" else 1.0
    inputs = model_input(x, region * keep, background * keep, None if object_mask is None else object_mask * keep)
    null = null_labels(class_ids)  # the null class of the same scale group
    if config.guidance_scale == 1.0:
        return unet(inputs, t, class_labels=class_ids).sample
    if config.guidance_scale == 0.0:
        return unet(inputs, t, class_labels=null).sample
    both = unet(torch.cat([inputs, inputs]), t, class_labels=torch.cat([class_ids, null])).sample
    cond, uncond = both[:n], both[n:]
    return uncond + config.guidance_scale * (cond - uncond)


@dataclass
class _Noiser:
    """Forward noising with the training ``abar`` table (shared by every sampler of a checkpoint)."""

    alphas_cumprod: Any

    def to_t(self, x0, t: int, generator):
        import torch

        abar = float(self.alphas_cumprod[int(t)])
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        return math.sqrt(abar) * x0 + math.sqrt(1.0 - abar) * noise

    def between(self, x_prev, t_prev: int, t: int, generator):
        """Re-noise a sample from ``t_prev`` to the noisier ``t`` (RePaint's resampling jump)."""
        import torch

        ratio = float(self.alphas_cumprod[int(t)] / self.alphas_cumprod[int(t_prev)])
        noise = torch.randn(x_prev.shape, generator=generator).to(x_prev.device)
        return math.sqrt(ratio) * x_prev + math.sqrt(1.0 - ratio) * noise


def inpaint_patches(
    unet,
    train_scheduler,
    background: torch.Tensor,
    region: torch.Tensor,
    class_ids: torch.Tensor,
    config: SamplerConfig,
    generator: torch.Generator,
    *,
    object_mask: torch.Tensor | None = None,
    residual_scale: float | None = None,
) -> torch.Tensor:
    """Denoise patches whose ``region`` is to be filled with an object of class ``class_ids``.

    Args:
        unet: the inpainting UNet (eval mode).
        train_scheduler: the checkpoint's DDPM schedule.
        background: ``(N, 1, S, S)`` patches in ``[-1, 1]``.
        region: ``(N, 1, S, S)`` 1 where the object goes (0 elsewhere).
        class_ids: ``(N,)`` long class-table labels: category ids (or the null class 0), plus the scale
            group's offset for models with scale groups (:func:`~synth.diffusion.model.conditioning_labels`).
        config: sampler settings.
        generator: CPU torch generator (all noise comes from it).
        object_mask: ``(N, 1, S, S)`` 1 on the object itself, for UNets with an object channel
            (default: the region).
        residual_scale: for ``residual``-target models, the checkpoint's scale: the model draws the
            object layer, which is added to :func:`~synth.diffusion.patches.smooth_fill` of the
            background; ``None`` for ``image``-target models (the model draws the patch).

    Returns:
        ``(N, 1, S, S)`` in ``[-1, 1]``; equal to ``background`` wherever ``region == 0``.
    """
    import torch

    if background.shape != region.shape or background.ndim != 4 or background.shape[1] != 1:
        raise ValueError(f"background and region must both be (N, 1, S, S); got {tuple(background.shape)} "
                         f"and {tuple(region.shape)}")
    if int(unet.config.in_channels) == 4 and object_mask is None:
        object_mask = region
    elif int(unet.config.in_channels) == 3:
        object_mask = None
    residual = residual_scale is not None
    known_x0 = torch.zeros_like(background) if residual else background
    scheduler = make_scheduler(train_scheduler, config.scheduler)
    scheduler.set_timesteps(config.steps)
    noiser = _Noiser(train_scheduler.alphas_cumprod)
    timesteps = [int(t) for t in scheduler.timesteps]
    step_kwargs: dict[str, Any] = {"eta": config.eta} if config.scheduler == "ddim" else {}
    if config.scheduler in ("ddim", "ddpm"):
        step_kwargs["generator"] = generator
    x = torch.randn(background.shape, generator=generator).to(background.device) * float(scheduler.init_noise_sigma)
    x = region * x + (1.0 - region) * noiser.to_t(known_x0, timesteps[0], generator)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            t_next = timesteps[i + 1] if i + 1 < len(timesteps) else None
            for u in range(config.resample):
                scaled = scheduler.scale_model_input(x, t)
                out = _guided_output(unet, scaled, torch.tensor(t, device=x.device), region, background, object_mask,
                                     class_ids, config)
                x_next = scheduler.step(out, t, x, **step_kwargs).prev_sample
                known = known_x0 if t_next is None else noiser.to_t(known_x0, t_next, generator)
                x_next = region * x_next + (1.0 - region) * known
                if u + 1 < config.resample and t_next is not None:
                    x = noiser.between(x_next, t_next, t, generator)
                else:
                    x = x_next
    if residual:
        base = background
        if config.base == "fill":
            base = torch.from_numpy(np.stack([smooth_fill(b[0], r[0] > 0.5) for b, r in
                                              zip(background.cpu().numpy(), region.cpu().numpy())]))[:, None]
        # the layer was measured in [0, 1] grey units; the patches here are in [-1, 1]
        x = base.to(x.device) + 2.0 * float(residual_scale) * x
    x = x.clamp(-1.0, 1.0)
    return region * x + (1.0 - region) * background


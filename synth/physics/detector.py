"""Detector-side stages: scatter, quantum noise, blur (MTF) and the display transform.

Pure functions on arrays; each stage has a frozen config with an ``enabled`` switch.

* **Scatter** — convolution model (Love & Kruger 1987; Ohnesorge et al. 1999): scatter emitted
  around a pixel is proportional to its primary signal times its log-attenuation ``A`` and spread by a
  broad Gaussian kernel: ``S = κ · G_σ ⊛ (P · A)``. ``κ`` is set so that a uniform slab of
  ``reference_water_mm`` of water has the scatter-to-primary ratio ``spr_reference`` (default 0.45: a
  chest PA with an anti-scatter grid). Computed on a coarse grid (scatter has no fine detail).
* **Quantum noise** — Poisson counts at the chosen dose; above 100 expected quanta the Gaussian limit
  ``N(λ, λ)`` is drawn (indistinguishable, much faster).
* **Detector noise** (:func:`add_detector_noise`) — an energy-integrating scintillator detector adds
  two sources to the quantum noise. (1) *Swank noise*: the signal of one absorbed X-ray varies (its
  energy, the light it makes and collects), so the variance per detected quantum is ``1/I`` times the
  Poisson variance, ``I`` the Swank information factor (Swank, J. Appl. Phys. 44:4199, 1973; DQE(0) =
  η·I). Default ``I = 0.75``, inside the 0.7–0.85 range reported for CsI:Tl at chest energies. (2)
  *Electronic (additive) noise* of the readout, independent of dose: a Gaussian of ``σ_e`` in units of
  one detected quantum's mean signal. Amorphous-silicon panels show a few thousand electrons rms
  against roughly a thousand electrons per absorbed 60 keV X-ray in CsI:Tl (Siewerdsen et al., Med.
  Phys. 24:71, 1997), so ``σ_e ≈ 1–5`` quanta; default 3. Its share grows at low dose (behind the
  mediastinum, under metal).
* **Blur** — Gaussian MTF of the scintillator (given by its MTF50) combined with the focal-spot
  penumbra at the object's magnification.
* **Display** — log transform, window, MONOCHROME2 (bright = dense) or MONOCHROME1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ScatterConfig:
    """Scatter stage. ``kernel_sigma_mm`` is the kernel width at the detector."""

    enabled: bool = True
    spr_reference: float = 0.45
    reference_water_mm: float = 200.0
    kernel_sigma_mm: float = 50.0


@dataclass(frozen=True)
class NoiseConfig:
    """Noise stage (dose comes from the tube technique's mAs).

    Attributes:
        enabled: switch the whole stage off (noise-free renders).
        gaussian_above: above this many expected quanta the Gaussian limit is drawn instead of Poisson.
        swank_factor: Swank information factor ``I`` in ``(0, 1]`` of the scintillator (1: pure Poisson).
        electronic_noise_quanta: additive readout noise ``σ_e`` per pixel, in detected-quantum units.
    """

    enabled: bool = True
    gaussian_above: float = 100.0
    swank_factor: float = 0.75
    electronic_noise_quanta: float = 3.0

    def __post_init__(self) -> None:
        from toolkit_core.errors import UserInputError

        if not 0.0 < self.swank_factor <= 1.0:
            raise UserInputError("the Swank factor must lie in (0, 1]", field="swank_factor", value=self.swank_factor)
        if self.electronic_noise_quanta < 0:
            raise UserInputError("electronic noise must be >= 0 quanta", field="electronic_noise_quanta",
                                 value=self.electronic_noise_quanta)

    def variance_quanta2(self, expected_quanta: np.ndarray) -> np.ndarray:
        """Per-pixel noise variance (quanta²) at expected counts ``λ``: ``λ / I + σ_e²``."""
        lam = np.clip(np.asarray(expected_quanta, dtype=np.float64), 0.0, None)
        return lam / self.swank_factor + self.electronic_noise_quanta**2


@dataclass(frozen=True)
class BlurConfig:
    """Blur stage: scintillator MTF50 (lp/mm at the detector) and focal spot size (mm, nominal)."""

    enabled: bool = True
    mtf50_lp_mm: float = 1.8
    focal_spot_mm: float = 1.2


@dataclass(frozen=True)
class DisplayConfig:
    """Display transform: window percentiles of the log image, gamma, photometric, unsharp masking.

    Clinical-style unsharp masking (``A + amount·(A - G_σ ⊛ A)``, as CR/DR consoles do;
    ``unsharp_amount = 0`` switches it off) is applied to the log image in CT mode and to the inserted
    object's signal in radiograph mode (whose background was already processed).
    ``radiograph_headroom``: in radiograph mode the background's display range is scaled into
    ``[0, headroom]`` so that metal denser than the patient is not clipped.
    """

    photometric: str = "MONOCHROME2"
    window_percentiles: tuple[float, float] = (0.5, 99.8)
    gamma: float = 1.0
    radiograph_headroom: float = 0.85
    unsharp_sigma_mm: float = 4.0
    unsharp_amount: float = 1.5

    def __post_init__(self) -> None:
        from toolkit_core.errors import UserInputError

        if self.photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise UserInputError("photometric must be MONOCHROME1 or MONOCHROME2", field="photometric",
                                 value=self.photometric)


def scatter_signal(primary: np.ndarray, attenuation: np.ndarray, config: ScatterConfig, pixel_mm: float,
                   mu_water_per_mm: float) -> np.ndarray:
    """Scatter reaching each pixel, same units as ``primary``.

    Args:
        primary: ``(H, W)`` primary signal.
        attenuation: ``(H, W)`` log-attenuation ``A = -ln(P/P0)`` of the primary.
        config: scatter settings.
        pixel_mm: pixel pitch.
        mu_water_per_mm: effective linear attenuation of water for the beam (sets ``A`` of the reference slab).
    """
    from scipy.ndimage import gaussian_filter, zoom

    if not config.enabled:
        return np.zeros_like(primary)
    kappa = config.spr_reference / (mu_water_per_mm * config.reference_water_mm)
    source = primary * np.clip(attenuation, 0.0, None)
    factor = max(int(config.kernel_sigma_mm / pixel_mm / 4), 1)
    h, w = source.shape
    hc, wc = -(-h // factor), -(-w // factor)
    padded = np.pad(source, ((0, hc * factor - h), (0, wc * factor - w)), mode="edge")
    coarse = padded.reshape(hc, factor, wc, factor).mean(axis=(1, 3))
    blurred = gaussian_filter(coarse, config.kernel_sigma_mm / (pixel_mm * factor), mode="nearest")
    fine = zoom(blurred, factor, order=1, mode="nearest", grid_mode=True)[:h, :w]
    return kappa * fine


def add_quantum_noise(expected_quanta: np.ndarray, rng: np.random.Generator, config: NoiseConfig) -> np.ndarray:
    """Noisy detected quanta for expected counts ``λ`` (Poisson; Gaussian ``N(λ, λ)`` above ``gaussian_above``)."""
    lam = np.clip(np.asarray(expected_quanta, dtype=np.float64), 0.0, None)
    if not config.enabled:
        return lam
    out = np.empty_like(lam)
    high = lam >= config.gaussian_above
    out[high] = lam[high] + np.sqrt(lam[high]) * rng.standard_normal(int(high.sum()))
    out[~high] = rng.poisson(lam[~high])
    return out


def add_detector_noise(expected_quanta: np.ndarray, rng: np.random.Generator, config: NoiseConfig) -> np.ndarray:
    """Detector signal in quanta units: Swank-broadened quantum noise plus electronic noise.

    The mean is ``λ``; the variance ``λ / I + σ_e²`` (:meth:`NoiseConfig.variance_quanta2`). Below
    ``gaussian_above`` the quantum part is drawn as ``Poisson(λ I) / I`` (a compound-Poisson shape with
    the right mean and variance; ``I = 1`` gives :func:`add_quantum_noise`'s counts), above it as a
    Gaussian. The electronic part is Gaussian and may make a dark pixel negative, as a real offset-
    corrected panel does.
    """
    lam = np.clip(np.asarray(expected_quanta, dtype=np.float64), 0.0, None)
    if not config.enabled:
        return lam
    swank = config.swank_factor
    out = np.empty_like(lam)
    high = lam >= config.gaussian_above
    out[high] = lam[high] + np.sqrt(lam[high] / swank) * rng.standard_normal(int(high.sum()))
    out[~high] = rng.poisson(lam[~high] * swank) / swank
    if config.electronic_noise_quanta > 0:
        out += config.electronic_noise_quanta * rng.standard_normal(lam.shape)
    return out


def blur_sigma_px(config: BlurConfig, pixel_mm: float, magnification: float) -> float:
    """Gaussian σ (pixels) of scintillator MTF and focal-spot penumbra for an object at ``magnification``."""
    if not config.enabled:
        return 0.0
    sigma_det = np.sqrt(np.log(2.0) / 2.0) / (np.pi * config.mtf50_lp_mm)  # MTF(f)=exp(-2π²σ²f²)
    sigma_focal = config.focal_spot_mm * max(magnification - 1.0, 0.0) / 2.355
    return float(np.hypot(sigma_det, sigma_focal) / pixel_mm)


def gaussian(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian filter with edge-replicating borders and a kernel truncated at 4σ.

    OpenCV's separable filter; equal to ``scipy.ndimage.gaussian_filter(image, σ, mode="nearest")``
    to rounding (tested) and several times faster on the small regions around an object.
    """
    import cv2

    radius = int(4.0 * sigma_px + 0.5)
    source = np.ascontiguousarray(image, dtype=np.float64)
    return cv2.GaussianBlur(source, (2 * radius + 1, 2 * radius + 1), sigma_px, sigma_px,
                            borderType=cv2.BORDER_REPLICATE)


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur (no-op for σ = 0)."""
    if sigma_px <= 0:
        return image
    return gaussian(image, sigma_px)


def lowpass(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian low-pass; very wide kernels (σ ≥ 24 px) are applied on a grid coarser by ``σ/8`` and interpolated back."""
    from scipy.ndimage import zoom

    factor = int(sigma_px // 8) if sigma_px >= 24 else 1
    if factor <= 1:
        return gaussian(image, sigma_px)
    h, w = image.shape
    hc, wc = -(-h // factor), -(-w // factor)
    padded = np.pad(image, ((0, hc * factor - h), (0, wc * factor - w)), mode="edge")
    coarse = gaussian(padded.reshape(hc, factor, wc, factor).mean(axis=(1, 3)), sigma_px / factor)
    return zoom(coarse, factor, order=1, mode="nearest", grid_mode=True)[:h, :w]


def unsharp_mask(log_image: np.ndarray, config: DisplayConfig, pixel_mm: float) -> np.ndarray:
    """Clinical-style edge enhancement of a log image (no-op when ``unsharp_amount`` is 0)."""
    if config.unsharp_amount <= 0:
        return log_image
    return log_image + config.unsharp_amount * (log_image - lowpass(log_image, config.unsharp_sigma_mm / pixel_mm))


def display_transform(attenuation: np.ndarray, lo: float, hi: float, config: DisplayConfig) -> np.ndarray:
    """Map log-attenuation to ``[0, 1]`` display values (MONOCHROME2: bright = dense).

    Args:
        attenuation: ``(H, W)`` ``-ln(I/I0)``.
        lo, hi: window limits in log-attenuation.
        config: gamma and photometric interpretation.
    """
    p = np.clip((attenuation - lo) / max(hi - lo, 1e-9), 0.0, 1.0)
    if config.gamma != 1.0:
        p = p ** config.gamma
    if config.photometric == "MONOCHROME1":
        p = 1.0 - p
    return p.astype(np.float32)

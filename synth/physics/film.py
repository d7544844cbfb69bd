"""A new film every image: per-image geometric and processing variation of a real radiograph.

One real film under every image lets a detector learn "difference from this film". Each image
therefore sees its own version of it, drawn from the image's random stream (so seeds stay
byte-reproducible):

* **Window** — a zoom (``zoom_range``; > 1 crops in, a smaller field or patient), a shift keeping the
  window inside the film, a small rotation (patient positioning) and an optional left-right mirror.
* **Deformation** — a smooth random displacement field (``elastic_mm`` rms at ``elastic_grid``² control
  points, bicubic between them; its gradient stays far below 1, so the warp is a bijection): breathing,
  posture and habitus differences.
* **Fresh noise** — quantum (Swank-broadened) and electronic noise at the film's own dose, from the
  calibrated log-attenuation of every pixel, blurred by the scintillator MTF and amplified by the console's
  edge enhancement as the film's own noise was; its level is scaled down (never up) to the noise measured
  on the film itself (:meth:`synth.physics.render.Renderer.fresh_noise_scale`). The film's original noise
  stays (attenuated by the resampling), so the total is about √2 that of a single exposure.
* **Processing** — CR/DR console curves on the finished image (film + objects + noise): an extra unsharp
  mask (``unsharp_amount_range`` at ``unsharp_sigma_mm_range``), a contrast/brightness change, a gamma
  curve and a partial histogram equalisation, combined into one monotone look-up table.

The warp maps each output pixel to film coordinates (``map_x``, ``map_y``); per-pixel film quantities
(water-equivalent thickness, scatter) are resampled through the same maps, over an object's region only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit_core.errors import UserInputError

LUT_SIZE = 16384


@dataclass(frozen=True)
class FilmVariationConfig:
    """Ranges of the per-image film variation (radiograph mode); ``enabled=False``: the film as prepared.

    Attributes:
        enabled: draw a new film per image.
        zoom_range: magnification of the window (>= 1 keeps the window inside the film).
        rotation_deg: rotations are uniform in ``±rotation_deg``.
        flip_probability: chance of a left-right mirror. Mirrored chests have the heart on the right
            (dextrocardia is rare); 0 keeps every film anatomically usual.
        elastic_mm: rms of the smooth displacement field at the detector.
        elastic_grid: control points per side of the displacement field.
        gamma_range, contrast_range, brightness_range: processing curve ranges (log-uniform for gamma).
        equalisation_range: blend weight of a histogram-equalisation curve.
        unsharp_amount_range, unsharp_sigma_mm_range: extra console edge enhancement.
    """

    enabled: bool = True
    zoom_range: tuple[float, float] = (1.0, 1.25)
    rotation_deg: float = 4.0
    flip_probability: float = 0.5
    elastic_mm: float = 4.0
    elastic_grid: int = 5
    gamma_range: tuple[float, float] = (0.8, 1.25)
    contrast_range: tuple[float, float] = (0.9, 1.1)
    brightness_range: tuple[float, float] = (-0.04, 0.04)
    equalisation_range: tuple[float, float] = (0.0, 0.35)
    unsharp_amount_range: tuple[float, float] = (0.0, 0.6)
    unsharp_sigma_mm_range: tuple[float, float] = (2.0, 8.0)

    def __post_init__(self) -> None:
        checks = (
            ("zoom_range", self.zoom_range, 0.5, 4.0), ("gamma_range", self.gamma_range, 0.2, 5.0),
            ("contrast_range", self.contrast_range, 0.1, 10.0), ("brightness_range", self.brightness_range, -0.5, 0.5),
            ("equalisation_range", self.equalisation_range, 0.0, 1.0),
            ("unsharp_amount_range", self.unsharp_amount_range, 0.0, 5.0),
            ("unsharp_sigma_mm_range", self.unsharp_sigma_mm_range, 0.1, 100.0),
        )
        for name, (lo, hi), low, high in checks:
            if not low <= lo <= hi <= high:
                raise UserInputError(f"{name} must be (low, high) with {low} <= low <= high <= {high}", field=name,
                                     value=(lo, hi))
        if not 0.0 <= self.flip_probability <= 1.0:
            raise UserInputError("flip_probability must lie in [0, 1]", field="flip_probability",
                                 value=self.flip_probability)
        if self.rotation_deg < 0 or self.elastic_mm < 0 or self.elastic_grid < 2:
            raise UserInputError("need rotation_deg >= 0, elastic_mm >= 0 and elastic_grid >= 2", field="film",
                                 value=(self.rotation_deg, self.elastic_mm, self.elastic_grid))


@dataclass(frozen=True, eq=False)
class Film:
    """One image's version of the film.

    Attributes:
        display: ``(H, W)`` float32 warped film, same scale as the prepared background's display.
        map_x, map_y: ``(H, W)`` float32 film column / row of every output pixel (``None``: identity).
        lut: ``(LUT_SIZE,)`` float32 processing curve on ``[0, 1]`` (``None``: no curve).
        unsharp_amount, unsharp_sigma_px: the extra edge enhancement (amount 0: none).
        params: the values drawn (for the image record).
    """

    display: np.ndarray
    map_x: np.ndarray | None = None
    map_y: np.ndarray | None = None
    lut: np.ndarray | None = None
    unsharp_amount: float = 0.0
    unsharp_sigma_px: float = 0.0
    params: dict[str, Any] | None = None

    def resample(self, field: np.ndarray, rows: slice, cols: slice) -> np.ndarray:
        """A film-frame field (same shape as the film) seen through this film's warp, over ``rows x cols``."""
        import cv2

        if self.map_x is None:
            return field[rows, cols]
        return cv2.remap(np.ascontiguousarray(field, dtype=np.float32), self.map_x[rows, cols], self.map_y[rows, cols],
                         cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def film_pixel(self, row: np.ndarray, col: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Nearest film pixel ``(row, col)`` under output pixels."""
        if self.map_x is None:
            return row, col
        h, w = self.map_x.shape
        return (np.clip(np.rint(self.map_y[row, col]), 0, h - 1).astype(np.int64),
                np.clip(np.rint(self.map_x[row, col]), 0, w - 1).astype(np.int64))


def fast_lowpass(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Approximate Gaussian low-pass for display processing: area-downsample, blur, linear upsample.

    The factor is ``σ/4`` (at least 1), so the coarse blur still has a σ of 4 pixels; the result differs
    from an exact Gaussian by a few per cent of the local contrast, well below what a console's own
    kernel shape varies by.
    """
    import cv2

    source = np.ascontiguousarray(image, dtype=np.float32)
    factor = max(int(sigma_px // 4), 1)
    if factor == 1:
        return cv2.GaussianBlur(source, (0, 0), sigma_px, borderType=cv2.BORDER_REPLICATE)
    h, w = source.shape
    small = cv2.resize(source, (max(w // factor, 1), max(h // factor, 1)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma_px / factor, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def block_noise_sigma(image: np.ndarray, block: int = 32) -> np.ndarray:
    """Noise σ per ``block²`` tile by Immerkær's estimator (Comput. Vis. Image Underst. 64:300, 1996).

    The image is filtered with the difference of two Laplacians (it cancels planes and, mostly, smooth
    anatomy); ``σ = sqrt(π/2) / 6 · mean |response|``. Texture inflates it, so take low percentiles.

    Returns:
        ``(H // block, W // block)`` float64.
    """
    import cv2

    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    response = np.abs(cv2.filter2D(np.ascontiguousarray(image, dtype=np.float32), -1, kernel,
                                   borderType=cv2.BORDER_REFLECT))
    h, w = response.shape[0] // block, response.shape[1] // block
    tiles = response[:h * block, :w * block].reshape(h, block, w, block).mean(axis=(1, 3))
    return np.sqrt(np.pi / 2.0) / 6.0 * tiles.astype(np.float64)


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    lo, hi = bounds
    return float(rng.uniform(lo, hi)) if hi > lo else float(lo)


def _displacement(rng: np.random.Generator, grid: int, rms_px: float, shape: tuple[int, int]) -> np.ndarray:
    """``(H, W)`` float32 smooth random field of rms ``rms_px``: bicubic through ``grid²`` Gaussian control points."""
    import cv2

    h, w = shape
    control = rng.standard_normal((grid, grid)).astype(np.float32) * np.float32(rms_px)
    coarse = cv2.resize(control, (max(w // 8, grid), max(h // 8, grid)), interpolation=cv2.INTER_CUBIC)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)


def _processing_curve(rng: np.random.Generator, config: FilmVariationConfig, sample: np.ndarray
                      ) -> tuple[np.ndarray, dict[str, float]]:
    """Monotone look-up table on ``[0, 1]``: contrast/brightness, gamma, blended with an equalisation curve."""
    x = np.linspace(0.0, 1.0, LUT_SIZE)
    contrast = _uniform(rng, config.contrast_range)
    brightness = _uniform(rng, config.brightness_range)
    lo, hi = np.log(config.gamma_range[0]), np.log(config.gamma_range[1])
    gamma = float(np.exp(rng.uniform(lo, hi))) if hi > lo else float(config.gamma_range[0])
    alpha = _uniform(rng, config.equalisation_range)
    curve = np.clip(contrast * (x - 0.5) + 0.5 + brightness, 0.0, 1.0) ** gamma
    if alpha > 0:
        hist, _ = np.histogram(np.clip(sample, 0.0, 1.0), bins=256, range=(0.0, 1.0))
        cdf = np.concatenate([[0.0], np.cumsum(hist) / max(hist.sum(), 1)])
        curve = (1.0 - alpha) * curve + alpha * np.interp(x, np.linspace(0.0, 1.0, 257), cdf)
    params = {"contrast": round(contrast, 4), "brightness": round(brightness, 4), "gamma": round(gamma, 4),
              "equalisation": round(alpha, 4)}
    return np.clip(curve, 0.0, 1.0).astype(np.float32), params


def draw_film(display: np.ndarray, rng: np.random.Generator, config: FilmVariationConfig, pixel_mm: float,
              headroom: float) -> Film:
    """Draw one image's film: warp maps, warped display and processing curve.

    Args:
        display: ``(H, W)`` float32 prepared film in ``[0, 1]`` (bright = dense).
        rng: the image's random stream.
        config: the variation ranges.
        pixel_mm: output pixel pitch (the deformation is given in mm).
        headroom: the film's display scale in the composite (the equalisation curve sees ``display·headroom``).
    """
    import cv2

    h, w = display.shape
    zoom = _uniform(rng, config.zoom_range)
    angle = float(np.radians(rng.uniform(-config.rotation_deg, config.rotation_deg)))
    flip = bool(rng.random() < config.flip_probability)
    # The window's half-size in film pixels is (w/2)/zoom: shift it at most as far as it stays inside.
    room_x, room_y = max((w - w / zoom) / 2.0, 0.0), max((h - h / zoom) / 2.0, 0.0)
    shift = np.array([rng.uniform(-room_x, room_x), rng.uniform(-room_y, room_y)])
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    sx = -1.0 if flip else 1.0
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    xs = (np.arange(w, dtype=np.float32) - np.float32(cx))[None, :]
    ys = (np.arange(h, dtype=np.float32) - np.float32(cy))[:, None]
    map_x = np.float32(cos * sx) * xs - np.float32(sin) * ys + np.float32(cx + shift[0])
    map_y = np.float32(sin * sx) * xs + np.float32(cos) * ys + np.float32(cy + shift[1])
    rms_px = config.elastic_mm / pixel_mm
    if rms_px > 0:
        map_x += _displacement(rng, config.elastic_grid, rms_px, (h, w))
        map_y += _displacement(rng, config.elastic_grid, rms_px, (h, w))
    warped = cv2.remap(np.ascontiguousarray(display, dtype=np.float32), map_x, map_y, cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    lut, curve_params = _processing_curve(rng, config, warped[::8, ::8] * np.float32(headroom))
    amount = _uniform(rng, config.unsharp_amount_range)
    sigma_mm = _uniform(rng, config.unsharp_sigma_mm_range)
    params = {"zoom": round(zoom, 4), "rotation_deg": round(float(np.degrees(angle)), 3), "flip_lr": flip,
              "shift_px": [round(float(v), 2) for v in shift], "elastic_mm": config.elastic_mm,
              "unsharp_amount": round(amount, 4), "unsharp_sigma_mm": round(sigma_mm, 3), **curve_params}
    return Film(warped, map_x, map_y, lut, amount, sigma_mm / pixel_mm, params)


def enhance(image: np.ndarray, film: Film) -> np.ndarray:
    """The film's extra unsharp mask (linear: it applies alike to an image and to a change added to it)."""
    out = np.asarray(image, dtype=np.float32)
    if film.unsharp_amount > 0:
        out = out + np.float32(film.unsharp_amount) * (out - fast_lowpass(out, film.unsharp_sigma_px))
    return out


def process(image: np.ndarray, film: Film) -> np.ndarray:
    """The console processing of a finished image: extra unsharp mask, then the curve; ``[0, 1]`` float32."""
    out = enhance(image, film)
    np.clip(out, 0.0, 1.0, out=out)
    if film.lut is None:
        return out
    index = (out * np.float32(LUT_SIZE - 1) + np.float32(0.5)).astype(np.int32)
    return film.lut[index]

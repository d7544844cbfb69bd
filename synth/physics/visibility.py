"""Whether a placed object is visible: its peak signal against the local noise it must stand out from.

A label is written only for an object a reader could see. The test is a peak contrast-to-noise ratio
on the noise-free render, in the log-signal domain (where an object's contribution adds):

``CNR = max_mask |Δ| / sqrt(σ_q² + σ_a²)``

- ``Δ``: the object's noise-free change of the log-signal after the detector's and focal spot's blur
  (the same signal its label is drawn from);
- ``σ_q``: the quantum and electronic noise of one pixel at the local dose (the detector model's
  variance, :meth:`synth.physics.detector.NoiseConfig.variance_quanta2`), reduced by the detector's own
  blur (white noise through a Gaussian of σ pixels keeps ``1 / (2 σ √π)`` of its standard deviation; in
  CT mode the object's blur, focal spot included); over a radiograph, the fresh noise exactly as the
  renderer adds it;
- ``σ_a``: the anatomical noise, the spread of the patient's own noise-free log-signal in the object's
  neighbourhood after removing its smooth part (a Gaussian of :data:`ANATOMY_SCALE_MM`): the vessel
  and trabecular texture a faint object is confused with. In chest radiography this term, not the
  quantum noise, limits detection (Burgess et al., Med. Phys. 28, 2001). It is the median absolute
  deviation × 1.4826 (the standard deviation for Gaussian texture), so that a rib or liver edge
  crossing the neighbourhood does not hide a wire lying beside it.

Over a radiograph all three are judged as displayed: after the console's edge enhancement (in the film's
display, in the object's signal, and as the noise's gain) and the film's own (:func:`synth.physics.film.enhance`);
the film's curve, applied last, scales all three alike.

The threshold :data:`MIN_VISIBLE_CNR` = 5 is Rose's criterion for the certain detection of a signal
(Rose 1948). Objects below it stay in the image (physically there, just not seen) and are counted in
the manifest instead of labelled. On the embedded CT (seed 4, 512², eight films) it drops an aluminium
zipper of peak ratio 2.5, a 0.4 mm suture needle (2.4) and a 0.6 mm nitinol guidewire segment (4.2) in one
film and another aluminium zipper (1.1) in another; the faintest object kept, a cottonoid's marker string,
reaches 6.1.
"""

from __future__ import annotations

import numpy as np

MIN_VISIBLE_CNR = 5.0
ANATOMY_SCALE_MM = 4.0


def blurred_noise_fraction(sigma_px: float) -> float:
    """The fraction of white noise's standard deviation left after a Gaussian blur of ``sigma_px``."""
    if sigma_px <= 0:
        return 1.0
    return float(min(1.0, 1.0 / (2.0 * sigma_px * np.sqrt(np.pi))))


def anatomical_sigma(log_background: np.ndarray, pixel_mm: float, scale_mm: float = ANATOMY_SCALE_MM) -> float:
    """Robust spread (MAD × 1.4826) of ``(h, w)`` noise-free log-signal around its Gaussian-smoothed self."""
    from synth.physics.detector import gaussian

    background = np.asarray(log_background, dtype=np.float64)
    if background.size < 4:
        return 0.0
    detail = background - gaussian(background, scale_mm / pixel_mm)
    return float(1.4826 * np.median(np.abs(detail - np.median(detail))))


def peak_cnr(signal_log: np.ndarray, footprint: np.ndarray, quantum_sigma_log: np.ndarray | float,
             anatomy_sigma_log: float) -> float:
    """``max |Δ| / sqrt(σ_q² + σ_a²)`` over ``footprint`` (all ``(h, w)``; see the module docstring)."""
    if not np.any(footprint):
        return 0.0
    sigma_q = np.broadcast_to(np.asarray(quantum_sigma_log, dtype=np.float64), signal_log.shape)[footprint]
    sigma = np.sqrt(sigma_q**2 + anatomy_sigma_log**2)
    return float(np.max(np.abs(signal_log[footprint]) / np.maximum(sigma, 1e-12)))

"""Labels only on visible objects: checked on the displayed, noise-free renders, not on the label rule's own numbers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from synth.physics.config import PhysicsConfig
from synth.physics.visibility import MIN_VISIBLE_CNR, anatomical_sigma, blurred_noise_fraction, peak_cnr


def test_peak_cnr_closed_form() -> None:
    signal = np.zeros((5, 7))
    signal[2, 3] = -0.3  # a darker-than-tissue object counts by its magnitude
    footprint = signal != 0
    assert peak_cnr(signal, footprint, 0.03, 0.04) == pytest.approx(0.3 / 0.05)
    assert peak_cnr(signal, np.zeros_like(footprint), 0.03, 0.04) == 0.0
    assert blurred_noise_fraction(0.0) == 1.0
    assert blurred_noise_fraction(2.0) == pytest.approx(1.0 / (4.0 * np.sqrt(np.pi)))
    rng = np.random.default_rng(0)
    texture = rng.normal(0.0, 0.02, (200, 200))  # white "anatomy": what survives a 4 mm high-pass at 1 mm pixels
    assert anatomical_sigma(texture, 1.0) == pytest.approx(0.02 * np.sqrt(1 - 1 / (4 * np.pi * 16)) , rel=0.05)
    edged = texture.copy()
    edged[:, 100:] += 1.0  # one strong edge (a rib border) does not swamp the texture's spread
    assert anatomical_sigma(edged, 1.0) < 1.5 * anatomical_sigma(texture, 1.0)


def _label_masks(annotations, shape):
    from pycocotools import mask as mask_utils

    for ann in annotations:
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode("ascii")}
        yield ann, mask_utils.decode(rle).astype(bool)


def _displayed_cnr(with_all: np.ndarray, without: np.ndarray, noisy_without: np.ndarray, label: np.ndarray,
                   pixel_mm: float) -> float:
    """Peak displayed change inside the label over the robust local spread of a noisy render's fine detail."""
    rows, cols = np.nonzero(label)
    pad = int(np.ceil(8.0 / pixel_mm))
    box = (slice(max(rows.min() - pad, 0), rows.max() + pad + 1), slice(max(cols.min() - pad, 0), cols.max() + pad + 1))
    noise = anatomical_sigma(noisy_without[box].astype(np.float64), pixel_mm)
    change = np.abs(with_all.astype(np.float64) - without)[label].max()
    return change / max(noise, 1e-9)


# The label rule estimates each object's peak CNR from the model: its signal, the film's texture in the
# object's region and the fresh noise the renderer adds, each after the console's and the film's own edge
# enhancement. This check measures it on the displayed image instead: the peak change inside the label over
# the spread of one noisy render in a box around it. Two estimates of one quantity, from different samples
# and neighbourhoods: over 144 labels of seeds 0-119 at 256² the displayed ratio was 0.53-1.19 times the
# rule's (5th-95th percentile; lower still for strong objects, whose peak the window clips), so a label at
# the rule's threshold of 5 can display at 3.5; the weakest shown were 3.48, 3.86 and 3.89, every other
# above 4. The floor is a peak three local standard deviations above its surroundings. Labelling every
# object instead (label_min_cnr=0) puts labels of displayed ratio 1.4-3 in the radiograph set.
DISPLAYED_MIN = 3.0


def _renders(renderer, seed: int):
    """One scene's noise-free render, its labels, and per labelled object the scene without it (noise-free, noisy)."""
    rng = np.random.default_rng([seed])
    if renderer.config.mode == "ct":
        pose = renderer.draw_patient_pose(rng)
        placed = renderer.draw_scene(rng, pose=pose)

        def render(objects, noise_seed=0):
            return renderer.render_ct(np.random.default_rng(noise_seed), objects, pose)
    else:
        film = renderer.draw_film(rng)
        placed = renderer.draw_scene(rng, film=film)

        def render(objects, noise_seed=0):
            return renderer.render_radiograph(np.random.default_rng(noise_seed), objects, film)
    quiet = renderer.config
    image, annotations = render(placed)
    by_pose = {str(p.pose.to_dict()): j for j, p in enumerate(placed)}
    without, noisy = [], []
    for ann in annotations:
        rest = [p for j, p in enumerate(placed) if j != by_pose[str(ann["pose"])]]
        without.append(render(rest)[0])
        renderer.config = replace(quiet, noise=replace(quiet.noise, enabled=True))
        noisy.append(render(rest, 1)[0])
        renderer.config = quiet
    return image, without, noisy, annotations, len(placed)


def _check(renderer, seeds) -> tuple[int, int]:
    labelled = dropped = 0
    for seed in seeds:
        image, without, noisy, annotations, n_placed = _renders(renderer, seed)
        labelled += len(annotations)
        dropped += n_placed - len(annotations)
        for k, (ann, label) in enumerate(_label_masks(annotations, image.shape)):
            cnr = _displayed_cnr(image, without[k], noisy[k], label, renderer.detector.pixel_mm)
            assert cnr >= DISPLAYED_MIN, (seed, ann["object_params"], ann["visibility_cnr"], cnr)
            assert ann["visibility_cnr"] >= MIN_VISIBLE_CNR
    return labelled, dropped


def _quiet(mode: str, size: int) -> PhysicsConfig:
    base = PhysicsConfig(mode=mode, size=size, negative_fraction=0.0, max_objects=3)
    return replace(base, noise=replace(base.noise, enabled=False))


def test_radiograph_labels_are_visible() -> None:
    from synth.physics.generate import build_renderer

    labelled, dropped = _check(build_renderer(_quiet("radiograph", 256)), range(8))
    assert labelled >= 8 and dropped >= 1  # both branches taken: the check can tell


@pytest.mark.slow
def test_ct_labels_are_visible() -> None:
    """The embedded CT (about 15 s of set-up)."""
    from synth.physics.generate import build_renderer

    labelled, dropped = _check(build_renderer(_quiet("ct", 256)), range(6))
    assert labelled >= 6 and dropped >= 1

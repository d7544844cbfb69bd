"""Detection data for unlearning runs and benchmarks: the generated toy set, dataset paths, and the
seeded, patient-level held-out split that ``vision-unlearn run`` makes when no test data is given.

The toy set (:func:`make_toy_detection_set`): bright needle-like bars, textured sponge-like patches
with a marker thread and clamp-like rings on noisy, smoothly shaded backgrounds, sized so that a
from-scratch YOLOv8n learns them in minutes on a CPU. Its images depend on the seed, and the
sample ids carry it (``toy_{seed}_{i}.png``), so two seeds never share an image id.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from toolkit_core.errors import UserInputError
from vision_unlearn.adapters.yolo_data import DetectionData

TOY_CLASSES = ("needle", "sponge", "clamp")
"""Classes of the toy set (names from :mod:`rfo_bench.categories`)."""


# --------------------------------------------------------------------------------------------- toy data
def _draw_bar(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, length: float) -> np.ndarray:
    angle = rng.uniform(0, math.pi)
    half_width = rng.uniform(0.9, 1.6)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float32)
    along = (xx - cx) * math.cos(angle) + (yy - cy) * math.sin(angle)
    across = -(xx - cx) * math.sin(angle) + (yy - cy) * math.cos(angle)
    mask = (np.abs(along) <= length / 2) & (np.abs(across) <= half_width)
    img[mask] = np.maximum(img[mask], rng.uniform(0.75, 0.95))
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def _draw_patch(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, size: float) -> np.ndarray:
    w, h = size * rng.uniform(0.8, 1.2), size * rng.uniform(0.6, 1.0)
    x1, y1 = int(max(0, cx - w / 2)), int(max(0, cy - h / 2))
    x2, y2 = int(min(img.shape[1], cx + w / 2)), int(min(img.shape[0], cy + h / 2))
    level = rng.uniform(0.45, 0.6)
    texture = level + 0.08 * rng.standard_normal((y2 - y1, x2 - x1))
    img[y1:y2, x1:x2] = np.maximum(img[y1:y2, x1:x2], texture)
    thread_y = rng.integers(y1, y2)  # the radiopaque marker thread
    img[thread_y, x1:x2] = 0.95
    return np.array([x1, y1, x2, y2], dtype=np.float32)


def _draw_ring(img: np.ndarray, rng: np.random.Generator, cx: float, cy: float, size: float) -> np.ndarray:
    radius = size / 2
    thickness = rng.uniform(1.5, 2.5)
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(np.float32)
    dist = np.hypot(xx - cx, yy - cy)
    mask = np.abs(dist - radius) <= thickness / 2
    img[mask] = np.maximum(img[mask], rng.uniform(0.8, 0.95))
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def make_toy_detection_set(n_images: int, seed: int, height: int = 144, width: int = 176,
                           class_probs: Sequence[float] = (0.35, 0.35, 0.35), max_objects: int = 3,
                           images_per_patient: int = 2) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray],
                                                                 list[str], list[str]]:
    """Generate a toy detection set (see the module docstring).

    Args:
        n_images: images to draw.
        seed: seed of the generator.
        height, width: image size in pixels (non-square on purpose).
        class_probs: probability of each class appearing (independently) in an image.
        max_objects: objects per image at most.
        images_per_patient: consecutive images sharing one pseudo patient id.

    Returns:
        ``(images (H, W) float32 in [0, 1], boxes [k, 4] xyxy px, labels [k], sample_ids, patient_ids)``.
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    images, boxes, labels, sample_ids, patient_ids = [], [], [], [], []
    for i in range(n_images):
        gradient = rng.uniform(0.05, 0.25) + rng.uniform(-0.1, 0.1) * (xx / width) + rng.uniform(-0.1, 0.1) * (yy / height)
        img = (gradient + 0.05 * rng.standard_normal((height, width))).astype(np.float32)
        present = [k for k, p in enumerate(class_probs) if rng.random() < p][:max_objects]
        image_boxes, image_labels = [], []
        for k in present:
            size = rng.uniform(18, 34)
            cx, cy = rng.uniform(size, width - size), rng.uniform(size, height - size)
            draw = (_draw_bar, _draw_patch, _draw_ring)[k]
            image_boxes.append(draw(img, rng, cx, cy, size))
            image_labels.append(k)
        images.append(np.clip(img, 0.0, 1.0))
        boxes.append(np.array(image_boxes, dtype=np.float32).reshape(-1, 4))
        labels.append(np.array(image_labels, dtype=np.int64))
        sample_ids.append(f"toy_{seed}_{i:05d}.png")
        patient_ids.append(f"toy_{seed}_p{i // images_per_patient:05d}")
    return images, boxes, labels, sample_ids, patient_ids


def toy_detection_data(n_images: int, seed: int, image_size: int, in_chans: int = 1) -> DetectionData:
    """:func:`make_toy_detection_set` letterboxed to ``image_size``."""
    images, boxes, labels, sample_ids, patient_ids = make_toy_detection_set(n_images, seed)
    return DetectionData.from_arrays(images, boxes, labels, TOY_CLASSES, image_size, in_chans, sample_ids,
                                     patient_ids)


def load_detection_data(spec: str, image_size: int, in_chans: int = 1,
                        class_names: Sequence[str] | None = None) -> DetectionData:
    """``toy:N[:SEED]`` (generated) or a dataset path :func:`rfo_bench.io.formats.read_dataset` reads."""
    if spec.startswith("toy:"):
        parts = spec.split(":")
        try:
            n = int(parts[1])
            seed = int(parts[2]) if len(parts) > 2 else 0
        except (ValueError, IndexError):
            raise UserInputError("expected toy:N or toy:N:SEED", field="--data", value=spec) from None
        return toy_detection_data(n, seed, image_size, in_chans)
    from rfo_bench.io.formats import read_dataset
    from vision_unlearn.adapters.yolo_data import detection_data_from_records

    return detection_data_from_records(read_dataset(spec), image_size, in_chans, class_names)


def heldout_patient_split(patient_ids: Sequence[str], fraction: float, seed: int,
                          keep_in_training: Sequence[int] = (),
                          strata: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``(train, heldout)`` of a seeded, patient-level split: no patient is on both sides.

    Args:
        patient_ids: ``N`` patient ids, one per image (an image without one is its own patient).
        fraction: share of the eligible patients of each stratum to hold out (at least one of a
            stratum with two or more eligible patients; none of a stratum with one, so that training
            keeps an example of each).
        seed: seed of the draw.
        keep_in_training: rows that must stay in training (e.g. the images a forget request names);
            their patients are never held out.
        strata: ``N`` stratum labels (e.g. 1 for images that hold a class to forget); a patient
            belongs to the stratum of its first image. ``None``: one stratum.

    Returns:
        Sorted ``int64`` rows of the training and the held-out images.

    Raises:
        UserInputError: too few patients to hold one out.
    """
    patients = [p if p else f"row{i}" for i, p in enumerate(patient_ids)]
    labels = list(strata) if strata is not None else [0] * len(patients)
    stratum_of: dict[str, int] = {}
    for patient, label in zip(patients, labels):
        stratum_of.setdefault(patient, int(label))
    kept = {patients[i] for i in keep_in_training}
    rng = np.random.default_rng(seed)
    held: set[str] = set()
    for label in sorted(set(stratum_of.values())):
        eligible = sorted(p for p, s in stratum_of.items() if s == label and p not in kept)
        floor = 0 if kept else 1
        n_out = max(1, round(fraction * len(eligible)))
        if len(eligible) - n_out < floor or not eligible:
            continue
        held |= set(rng.choice(eligible, size=n_out, replace=False).tolist())
    if not held:
        raise UserInputError(f"{len(stratum_of)} patient(s) are too few to hold some out for the metrics; "
                             "give held-out images with --test-data", field="--test-data")
    mask = np.fromiter((p in held for p in patients), dtype=bool, count=len(patients))
    return np.flatnonzero(~mask).astype(np.int64), np.flatnonzero(mask).astype(np.int64)

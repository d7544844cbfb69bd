"""Training the benchmark's detectors from scratch (original, retrained references) with reuse by key,
and turning a benchmark scenario into a forget split."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from toolkit_core.utils import atomic_write_text
from vision_unlearn.adapters.yolo import YoloAdapter
from vision_unlearn.adapters.yolo_data import DetectionData
from vision_unlearn.detection_forget import DetectionForgetSplit, resolve_detection_forget
from vision_unlearn.detection_run import _run_method

if TYPE_CHECKING:
    from vision_unlearn.detection_config import DetectionBenchmarkConfig

logger = logging.getLogger(__name__)


def _is_fraction(text: str) -> bool:
    try:
        return 0.0 < float(text) < 1.0
    except ValueError:
        return False




def _image_request(fraction: float, train: DetectionData, seed: int, out: Path) -> str:
    patients = sorted(set(train.patient_ids))
    rng = np.random.default_rng(seed + 1000)
    chosen = set(rng.choice(patients, size=max(1, round(fraction * len(patients))), replace=False).tolist())
    listing = out / f"forget_images_seed{seed}.txt"
    atomic_write_text(listing, "".join(f"{s}\n" for s, p in zip(train.sample_ids, train.patient_ids) if p in chosen))
    return f"images:{listing}"


def scenario_split(scenario: str, train: DetectionData, seed: int, out: Path) -> DetectionForgetSplit:
    """The forget split of one benchmark scenario; ``images:FRACTION`` draws that share of the patients
    for ``seed`` and writes the id file into ``out``."""
    request = scenario
    if scenario.startswith("images:") and _is_fraction(scenario.split(":", 1)[1]):
        request = _image_request(float(scenario.split(":", 1)[1]), train, seed, out)
    return resolve_detection_forget(request, train)


def training_key(config: DetectionBenchmarkConfig, data: DetectionData, seed: int) -> str:
    """A hash of everything a from-scratch training of the benchmark depends on.

    The model yaml, image size, channels, training recipe (``config.original``), seed, device, the
    exact training tensors (images, boxes, labels, which image each box is on, class names) and the
    torch and Ultralytics versions. Training on a CPU is deterministic per key, so a detector stored
    under it is the one a new training would produce.
    """
    from toolkit_core.records import package_versions

    digest = hashlib.sha256()
    header = {"model": config.model, "image_size": config.image_size, "in_chans": config.in_chans,
              "recipe": config.original, "seed": seed, "device": config.device,
              "torch": torch.__version__,  # the build (+cu130, +cpu): kernels, and so weights, differ by build
              **package_versions(("ultralytics",)), "classes": list(data.class_names)}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for tensor in (data.images, data.boxes_xyxy, data.labels, data.box_image):
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class TrainedDetector:
    """A from-scratch training of the benchmark: its state, its cost and where it came from."""

    state: dict[str, torch.Tensor]
    seconds: float
    cpu_seconds: float
    reused: str | None = None


def train_detector(adapter: YoloAdapter, config: DetectionBenchmarkConfig, data: DetectionData, seed: int,
                   label: str, progress: bool = False) -> TrainedDetector:
    """Train ``adapter`` from a fresh ``seed`` initialisation on ``data`` with ``config.original``.

    With ``config.models_dir`` the result is stored as ``{label}_seed{seed}_{key}.pt`` and loaded
    instead of trained when that file exists (:func:`training_key`); the adapter ends up holding the
    trained weights either way.
    """
    path = None
    if config.models_dir is not None:
        path = Path(config.models_dir) / f"{label}_seed{seed}_{training_key(config, data, seed)}.pt"
        if path.is_file():
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
                adapter.model.load_state_dict(stored["state"])
                logger.info("%s (seed %d): reusing %s", label, seed, path)
                return TrainedDetector(stored["state"], float(stored["seconds"]), float(stored["cpu_seconds"]),
                                       str(path))
            except (pickle.UnpicklingError, RuntimeError, KeyError, TypeError, ValueError, EOFError) as err:
                # a damaged or foreign file: train anew and replace it
                logger.warning("%s is not a stored detector of this benchmark (%s); training again", path, err)
    run = _run_method(adapter, "retrain", config.original, data.select([0]), data, seed, config.device, progress,
                      label=f"train {label}")
    state = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".pt.partial")
        torch.save({"state": state, "seconds": run.seconds, "cpu_seconds": run.cpu_seconds}, partial)
        os.replace(partial, path)
    return TrainedDetector(state, run.seconds, run.cpu_seconds)


def mean_reference(references: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mean of every numeric metric over the retrained references (the first one's other fields)."""
    merged = dict(references[0])
    for key in references[0]:
        values = [r.get(key) for r in references]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            merged[key] = float(np.mean(values))
    return merged



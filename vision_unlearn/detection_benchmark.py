"""Unlearning runs and benchmarks for YOLO detectors.

Two entry points, both on the one loop (:func:`vision_unlearn.loop.run_loop`):

* :func:`run_detection_unlearning` — one request on one model: read the data (any layout
  :func:`rfo_bench.io.formats.read_dataset` reads), resolve the forget request
  (:mod:`vision_unlearn.detection_forget`), run the method, save the unlearned model as an
  Ultralytics checkpoint and write the audit record (:mod:`vision_unlearn.audit`).
* :func:`run_detection_benchmark` — train an original detector, retrain it on the retain data
  (the reference), run every method from the original weights and compare them with the
  detection forgetting metrics (:mod:`vision_unlearn.metrics.detection`) over seeds; writes
  ``results.json``, ``results.md`` and a figure.

The data of the CPU preset is a generated toy detection set (:func:`make_toy_detection_set`):
bright needle-like bars, textured sponge-like patches with a marker thread and clamp-like rings on
noisy, smoothly shaded backgrounds, sized so that a from-scratch YOLOv8n learns them in minutes on
a CPU. Physics-based radiographs (``rfo-synth physics``) are read with ``data="PATH"`` instead.

Command line (``python -m vision_unlearn.detection_benchmark``)::

    run --model yolo:yolov8n.pt --data DATA --forget class:needle --method ofmu --out runs/u
    benchmark --out runs/yolo_bench --seeds 0 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import pickle
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rfo_bench.cli_support import add_command, make_parser, run_cli
from rfo_bench.errors import UserInputError
from rfo_bench.utils import atomic_output, atomic_write_text
from vision_unlearn.adapters.yolo import PARAMETER_GROUPS, YoloAdapter, YoloModelSpec
from vision_unlearn.adapters.yolo_data import DetectionData
from vision_unlearn.detection_forget import (
    DetectionForgetSplit,
    parse_detection_forget,
    resolve_detection_forget,
)
from vision_unlearn.methods.grad_ascent import HELDOUT_MODES, HELDOUT_QUANTILES
from vision_unlearn.metrics.detection import (
    Boxes,
    class_forgetting_ap,
    coco_ap_per_class,
    confident_misattribution_rate,
    gaps_to_reference,
    loss_membership_attack,
    per_image_recall,
    runtime_ratio,
)

logger = logging.getLogger(__name__)

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


# --------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def per_image_losses(adapter: YoloAdapter, data: DetectionData, batch_size: int = 32) -> np.ndarray:
    """Eval-mode per-image detection losses ``[N]`` of ``data`` with its own annotations."""
    model = adapter.model
    was_training = model.training
    model.eval()
    original = adapter.spec
    adapter.spec = replace(original, reduction="image")
    device = next(model.parameters()).device
    try:
        stream = data.stream()
        out = []
        for start in range(0, len(data), batch_size):
            batch = {k: v[start:start + batch_size].to(device) for k, v in stream.items()}
            out.append(adapter.loss(batch)["per_sample"].detach().cpu())
    finally:
        adapter.spec = original
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros(0)


def heldout_loss_median(adapter: YoloAdapter, heldout: DetectionData) -> float:
    """The median per-image loss of the detector on held-out images (eval mode, own annotations):
    what ``forget_loss_ceiling="heldout"`` starts from (:class:`~vision_unlearn.methods.grad_ascent.HeldoutCeiling`)."""
    if len(heldout) == 0:
        raise UserInputError("the held-out data holds no images", field="--heldout-data")
    return float(np.median(per_image_losses(adapter, heldout)))


def resolve_loss_ceiling(config: Mapping[str, Any], removes_images: bool, has_heldout: bool,
                         strict: bool = True) -> dict[str, Any]:
    """``config`` with ``forget_loss_ceiling="heldout"`` (or ``"heldout_quantiles"``) resolved for this request.

    Only a sample request (images, patients) is served by a loss ceiling; for a class or instance
    request the objects must go, not reach a held-out loss, so the held-out ceiling becomes ``None``
    (the method's own ascent). For a sample request it stays and needs held-out images
    (:func:`_run_method` attaches them). Other values pass unchanged.

    Args:
        strict: without held-out images, raise (``run``) or, when ``False`` (the benchmark), log a
            warning and run without a ceiling (each row records ``forget_loss_ceiling``).

    Raises:
        UserInputError: ``strict``, a sample request asks for ``"heldout"`` and there are no held-out images.
    """
    mode = config.get("forget_loss_ceiling")
    if mode not in HELDOUT_MODES:
        return dict(config)
    if not removes_images:
        return {**config, "forget_loss_ceiling": None}
    if not has_heldout:
        if not strict:
            logger.warning("no held-out images for forget_loss_ceiling=%r; running without a ceiling", mode)
            return {**config, "forget_loss_ceiling": None}
        raise UserInputError(f"forget_loss_ceiling={mode!r} needs held-out images the detector never saw",
                             field="--heldout-data")
    return dict(config)


def detections_of(adapter: YoloAdapter, data: DetectionData) -> Boxes:
    """Detections on ``data`` (input pixels) as flat :class:`Boxes`."""
    return Boxes.from_detections(adapter.detect(data.images))


def ground_truth_of(data: DetectionData) -> Boxes:
    return Boxes(data.boxes_xyxy.double().numpy(), data.labels.numpy(), data.box_image.numpy())


def evaluate_detector(adapter: YoloAdapter, train: DetectionData, test: DetectionData, split: DetectionForgetSplit,
                      score_threshold: float = 0.25) -> dict[str, float]:
    """Forgetting metrics of one detector (see :mod:`vision_unlearn.metrics.detection`).

    * test AP per class: ``forget_ap50``/``forget_ap50_95`` over the forgotten classes (class
      requests), ``retain_map50``/``retain_map50_95`` over the others, ``map50``/``map50_95``;
    * on the forget training images against their forget annotations: ``forget_recall``
      (mean per-image recall), ``misattribution_rate``;
    * ``mia_auc`` / ``mia_attack_accuracy``: loss-based membership inference of the forget training
      images (with all their annotations) against the test images.
    """
    num_classes = adapter.num_classes
    per_class = coco_ap_per_class(ground_truth_of(test), detections_of(adapter, test), len(test), num_classes)
    metrics = class_forgetting_ap(per_class, split.forgotten_classes)
    for k, name in enumerate(adapter.class_names):
        metrics[f"ap50_{name}"] = float(per_class[k, 1])
    forget = split.forget_data(train)
    forget_truth, forget_dets = ground_truth_of(forget), detections_of(adapter, forget)
    recall = per_image_recall(forget_truth, forget_dets, len(forget), score_threshold=score_threshold)
    metrics["forget_recall"] = float(np.nanmean(recall)) if np.isfinite(recall).any() else float("nan")
    lies = confident_misattribution_rate(forget_truth, forget_dets, len(forget), score_threshold=score_threshold)
    metrics["misattribution_rate"] = lies["misattribution_rate"]
    members = per_image_losses(adapter, train.select(split.forget_images))
    nonmembers = per_image_losses(adapter, test)
    mia = loss_membership_attack(members, nonmembers)
    metrics["mia_auc"] = mia["auc"]
    metrics["mia_attack_accuracy"] = mia["attack_accuracy"]
    metrics["mia_auc_ci_low"], metrics["mia_auc_ci_high"] = mia["auc_ci_low"], mia["auc_ci_high"]
    return metrics


# --------------------------------------------------------------------------------------------- one run
@dataclass(frozen=True)
class MethodRun:
    """One method run: the fitted method, the loop's result and its cost.

    Attributes:
        method: the unlearner (holds e.g. a steering state).
        result: :class:`vision_unlearn.loop.LoopResult`.
        seconds: wall-clock seconds.
        cpu_seconds: CPU seconds of this process (all threads), the fairer cost on a shared CPU
            where other jobs stretch wall time; not the GPU time on a CUDA device.
    """

    method: Any
    result: Any
    seconds: float
    cpu_seconds: float


def _run_method(adapter: YoloAdapter, name: str, config: Mapping[str, Any], forget: DetectionData,
                retain: DetectionData, seed: int, device: str = "cpu", progress: bool = False,
                heldout: DetectionData | None = None) -> MethodRun:
    from vision_unlearn.api import create_unlearner
    from vision_unlearn.loop import LoopSettings, run_loop

    method = create_unlearner(name, adapter, dict(config))
    if config.get("forget_loss_ceiling") in HELDOUT_MODES and heldout is not None:
        method.attach_heldout(heldout.stream())
    start, cpu_start = time.perf_counter(), time.process_time()
    result = run_loop(adapter, method, forget.stream(), retain.stream(),
                      LoopSettings(seed=seed, device=device, progress=progress))
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    steerer = getattr(method, "steerer", None)
    if steerer is not None and name != "steer":
        steerer.remove()
    return MethodRun(method, result, seconds, cpu_seconds)


def _run_and_evaluate(adapter: YoloAdapter, name: str, config: Mapping[str, Any], forget: DetectionData,
                      retain: DetectionData, train: DetectionData, test: DetectionData, split: DetectionForgetSplit,
                      seed: int, device: str = "cpu", progress: bool = False,
                      heldout: DetectionData | None = None) -> tuple[dict[str, Any], float, float]:
    """One benchmark cell: run ``name``, evaluate it, then detach any steering hooks it attached.

    ``steer`` keeps its hooks on the model so that it can be evaluated; the benchmark reuses the same
    model for the next method, which must start from the plain original detector.

    Returns:
        The metrics, wall seconds and CPU seconds of the run.
    """
    run: MethodRun | None = None
    try:
        run = _run_method(adapter, name, config, forget, retain, seed, device, progress, heldout)
        metrics = evaluate_detector(adapter, train, test, split)
        tracker = getattr(run.method, "heldout_ceiling", None)
        if tracker is not None and tracker.value is not None:
            metrics["loss_ceiling_start"], metrics["loss_ceiling_end"] = tracker.start_value, tracker.value
        return metrics, run.seconds, run.cpu_seconds
    finally:
        steerer = getattr(run.method, "steerer", None) if run is not None else None
        if steerer is not None:
            steerer.remove()




def run_detection_unlearning(model: str, data: str, forget: str, method: str, out_dir: str | os.PathLike[str],
                             config: Mapping[str, Any] | None = None, image_size: int = 640, in_chans: int = 1,
                             seed: int = 0, device: str = "cpu", test_data: str | None = None,
                             trainable_groups: Sequence[str] | None = None, progress: bool = False,
                             heldout_data: str | None = None) -> dict[str, Any]:
    """Forget ``forget`` from the detector ``model`` with ``method``; save the result and its audit record.

    Args:
        model: ``yolo:PATH.pt`` (the trained detector; a yaml gives an untrained one).
        data: its training data (``toy:N`` or a dataset path).
        forget: a detection forget request (``class:NAME``, ``images:FILE``, ``instances:FILE``, ...).
        method: registered method name.
        out_dir: gets ``unlearned.pt`` (Ultralytics checkpoint), ``original.pt`` and ``audit.json``;
            for ``steer`` also the steering state alone (:data:`vision_unlearn.methods.steer.STEERING_FILE`, see
            :meth:`vision_unlearn.methods.steer.Steer.from_file`): the weights do not change, so
            ``unlearned.pt`` equals the original and the erasure lives in that file.
        config: method config fields (validated against the method's config class).
        image_size: network input side.
        in_chans: channels for a yaml model.
        seed: run seed.
        device: torch device.
        test_data: held-out data for the metrics (optional).
        trainable_groups: restrict the updated parameter groups.
        progress: show a progress bar.
        heldout_data: images the detector never saw, for ``forget_loss_ceiling="heldout"``
            (:class:`~vision_unlearn.methods.grad_ascent.HeldoutCeiling`); keep them apart from
            ``test_data``, whose images the membership attack compares the forget images with.

    Returns:
        ``{"checkpoint", "audit", "metrics", "split", "seconds"}`` (and ``"steering"`` for ``steer``;
        ``"forget_loss_ceiling"`` ``{"start", "end"}`` when it followed held-out images).

    Raises:
        UserInputError: a model, data or request the detector cannot take (see
            :func:`~vision_unlearn.detection_forget.resolve_detection_forget` and
            :func:`~vision_unlearn.adapters.yolo.build_detection_model`), or bad config fields.
    """
    from vision_unlearn.adapters.yolo import adapter_from_model_text
    from vision_unlearn.api import config_class_of, config_from_dict
    from vision_unlearn.audit import make_audit_record, summarise_forgotten, write_audit_record
    from vision_unlearn.methods.steer import STEERING_FILE, save_steering_state

    fields = dict(config or {})
    config_from_dict(config_class_of(method), fields, source=f"method {method}")  # fail before any work
    out = Path(out_dir)
    source = model[len("yolo:"):] if model.startswith("yolo:") else model
    if Path(source).suffix.lower() in (".yaml", ".yml"):  # an untrained model: classes come from the data
        train = load_detection_data(data, image_size, in_chans)
        adapter = adapter_from_model_text(model, num_classes=train.num_classes, in_chans=in_chans,
                                          class_names=train.class_names, image_size=image_size)
    else:
        adapter = adapter_from_model_text(model, image_size=image_size)
        train = load_detection_data(data, image_size, adapter.in_chans, adapter.class_names)
    if trainable_groups:
        adapter.set_trainable_groups(tuple(trainable_groups))
    split = resolve_detection_forget(forget, train)
    test = load_detection_data(test_data, image_size, adapter.in_chans, adapter.class_names) if test_data else None
    heldout = (load_detection_data(heldout_data, image_size, adapter.in_chans, adapter.class_names)
               if heldout_data is not None else None)
    fields = resolve_loss_ceiling(fields, split.request.removes_images, heldout is not None)
    out.mkdir(parents=True, exist_ok=True)
    before = adapter.save(out / "original.pt")
    run = _run_method(adapter, method, fields, split.forget_data(train), split.retain_data(train), seed, device,
                      progress, heldout)
    unlearner, loop_result, seconds = run.method, run.result, run.seconds
    metrics: dict[str, float] = {}
    if test is not None:
        metrics = evaluate_detector(adapter, train, test, split)
    request = split.request
    rows = [int(i) for i in split.forget_images]
    forgotten = summarise_forgotten(
        request.kind, request.value if request.kind == "class" else None, [train.sample_ids[i] for i in rows],
        [train.patient_ids[i] for i in rows],
        request_file=request.value if request.kind in ("images", "patients", "instances") else None,
    )
    record_stub = {"method": method, "request": request.kind, "forget": split.summary()}
    after = adapter.save(out / "unlearned.pt", record=record_stub)
    result: dict[str, Any] = {"checkpoint": str(after), "audit": str(out / "audit.json"), "metrics": metrics,
                              "split": split.summary(), "seconds": seconds}
    tracker = getattr(unlearner, "heldout_ceiling", None)
    if tracker is not None and tracker.value is not None:
        result["forget_loss_ceiling"] = {"start": tracker.start_value, "end": tracker.value}
    steering = save_steering_state(unlearner, out / STEERING_FILE,
                                   {"model": adapter.describe(), "forget": str(request), "seed": seed})
    if steering is not None:
        result["steering"] = str(steering)
    record = make_audit_record(forgotten=forgotten, method=method, config=fields, seed=seed,
                               metrics=metrics, checkpoint_before=before, checkpoint_after=after,
                               timings_s={"unlearn": seconds}, dataset=data,
                               artifacts=[steering] if steering is not None else [])
    write_audit_record(out / "audit.json", record)
    logger.info("%s on %s: %d steps in %.1f s -> %s", method, request, loop_result.steps_done, seconds, after)
    return result


# --------------------------------------------------------------------------------------------- benchmark
def _default_methods() -> dict[str, dict[str, Any]]:
    """The benchmark's method presets (class requests; sample requests add :func:`_default_sample_methods`).

    Adam restarted on a converged detector takes a step of about ``lr`` in every weight at once;
    a short warm-up and a cosine decay to zero let the methods that move the most weights settle
    again (on the tuning seed, toy seed 2: SCRUB's retain gap to retraining went from -7.7 to +0.4
    points, NegGrad+'s from -25 to -8). SCRUB and both OFMU variants update only the Detect head
    (:attr:`DetectionBenchmarkConfig.groups`): a class lives in the head's classification branch,
    and the thin needles, the most fragile retained class, lost less when the backbone and neck
    stayed fixed (SCRUB +1.4, OFMU -2.0, first-order OFMU -1.1 points, all at forget AP50 0.000).
    """
    adam = {"optimizer": "adam", "weight_decay": 0.0, "batch_size": 16}
    settle = {"schedule": "cosine", "warmup_steps": 5}
    ofmu = {**adam, **settle, "lr": 5e-4, "epochs": 2, "inner_lr": 0.01, "inner_steps": 1}
    return {
        "finetune": {**adam, "lr": 1e-3, "epochs": 2},
        "grad_ascent": {**adam, "lr": 5e-4, "epochs": 2},
        "neggrad_plus": {**adam, **settle, "lr": 1e-3, "epochs": 2, "alpha": 0.9},
        "random_label": {**adam, "lr": 5e-4, "epochs": 2},
        "salun": {**adam, "lr": 5e-4, "epochs": 2},
        "scrub": {**adam, **settle, "lr": 1e-3, "epochs": 8, "max_epochs": 4, "temperature": 4.0},
        "ofmu": dict(ofmu),
        "ofmu_first_order": dict(ofmu),
    }


def _default_sample_methods() -> dict[str, dict[str, Any]]:
    """Overrides for sample requests (images, patients), on top of :func:`_default_methods`.

    A class request wants a class gone; a patient's images want their *membership* gone while their
    classes stay. The ascent methods therefore lift each forget image's loss only to the current
    detector's loss on held-out images, the quantile of the image's rank in its batch
    (``forget_loss_ceiling="heldout_quantiles"``), with the batch-norm statistics frozen: in training
    mode an ascent step raises the loss of a small forget batch through its batch statistics, which
    breaks the running statistics the detector uses at inference. NegGrad+ (Adam 4e-4, 15 epochs over
    the forget images, alpha 0.5, constant rate) was chosen on synthetic radiographs, seed 0: with the
    held-out median as the one ceiling, no rate or length brought the membership AUC below 0.59
    (retraining: 0.48), because the forget losses gathered at the median inside the wider spread of
    unseen losses; with rank-matched quantiles it reached 0.49.

    OFMU keeps its image-level forget objective ``log(1 - p_y)`` here: the per-anchor objective it uses
    for class requests would erase every object on the forget images, which a patient request does
    not ask for.
    """
    adam = {"optimizer": "adam", "weight_decay": 0.0, "batch_size": 16, "freeze_norm_stats": True,
            "forget_loss_ceiling": HELDOUT_QUANTILES, "schedule": "constant", "warmup_steps": 0}
    return {
        "grad_ascent": {**adam, "lr": 1e-5, "epochs": 5},
        "neggrad_plus": {**adam, "lr": 4e-4, "epochs": 15, "alpha": 0.5},
        "ofmu": {"forget_objective": "log1mp"},
        "ofmu_first_order": {"forget_objective": "log1mp"},
    }


@dataclass(frozen=True)
class DetectionBenchmarkConfig:
    """The benchmark preset (defaults: the CPU preset).

    Attributes:
        model: model yaml (trained from scratch on the training data).
        image_size: network input side in pixels.
        n_train, n_test: toy images (ignored when ``data`` is given).
        data, test_data: dataset paths instead of the toy set.
        heldout_data: images apart from the training and test images, whose loss under the current
            detector is the ascent ceiling of ``forget_loss_ceiling="heldout"`` for image requests
            (:class:`~vision_unlearn.methods.grad_ascent.HeldoutCeiling`; also ``"heldout_quantiles"``);
            the toy set draws ``n_test`` of them itself. Without it a held-out ceiling resolves to
            none (recorded per row as ``forget_loss_ceiling``).
        scenarios: forget requests; ``images:FRACTION`` forgets that share of the patients'
            images (drawn per seed) — the benchmark writes the id file itself.
        seeds: benchmark seeds (data order, initialisation, forget draw).
        original: config of the original training (``retrain`` method fields); ``retrain`` reuses it.
        methods: method name -> config overrides.
        sample_methods: method name -> further overrides for sample requests (images, patients),
            see :func:`_default_sample_methods`.
        groups: method name -> the parameter groups (``backbone``, ``neck``, ``head``) it may update;
            a method not named updates all three. The preset restricts SCRUB and both OFMU variants
            to the Detect head (see :func:`_default_methods`).
        device: torch device.
        in_chans: image channels of the detector (1 for radiographs).
        reference_retrains: retrained detectors per request and seed. The first starts from the
            original's seeded initialisation, retrain ``k`` from seed ``seed + 1000 k``; the gaps of
            every method are taken to their mean, and each row records the reference's spread
            (``reference_retain_map50_spread``, max - min). One retrain is a noisy reference: on the toy
            preset two retrains of one class request differ by up to 3.5 points of retain mAP50.
        models_dir: directory that keeps every trained original and retrained detector (state dict,
            wall and CPU seconds), named by a hash of everything its training depends on (model, image
            size, channels, recipe, seed, the exact training tensors, torch and Ultralytics versions).
            A later benchmark with the same key loads it instead of training again, and keeps the
            recorded times as the denominators of the cost ratios; rows say ``reused_model``.
    """

    model: str = "yolov8n.yaml"
    image_size: int = 128
    n_train: int = 240
    n_test: int = 200
    data: str | None = None
    test_data: str | None = None
    heldout_data: str | None = None
    scenarios: tuple[str, ...] = ("class:clamp", "images:0.1")
    seeds: tuple[int, ...] = (0,)
    original: dict[str, Any] = field(default_factory=lambda: {"epochs": 60, "lr": 2e-3, "optimizer": "adam",
                                                               "weight_decay": 0.0, "batch_size": 16,
                                                               "schedule": "cosine", "warmup_steps": 20})
    methods: dict[str, dict[str, Any]] = field(default_factory=_default_methods)
    sample_methods: dict[str, dict[str, Any]] = field(default_factory=_default_sample_methods)
    groups: dict[str, tuple[str, ...]] = field(default_factory=lambda: {"scrub": ("head",), "ofmu": ("head",),
                                                                        "ofmu_first_order": ("head",)})
    device: str = "cpu"
    in_chans: int = 1
    reference_retrains: int = 1
    models_dir: str | None = None


def make_benchmark_config(model: str = "yolov8n.yaml", image_size: int = 128, n_train: int = 240, n_test: int = 200,
                          data: str | None = None, test_data: str | None = None, heldout_data: str | None = None,
                          scenarios: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                          seeds: Sequence[int] = (0,), original_epochs: int | None = None,
                          overrides: Mapping[str, Mapping[str, Any]] | None = None, device: str = "cpu",
                          in_chans: int = 1, reference_retrains: int = 1, models_dir: str | None = None,
                          groups: Mapping[str, Sequence[str]] | None = None) -> DetectionBenchmarkConfig:
    """A validated :class:`DetectionBenchmarkConfig` from command-line style options (both CLIs use it).

    Args:
        model: model yaml, with or without the ``yolo:`` prefix.
        image_size: network input side (a multiple of 32).
        n_train, n_test: toy images when ``data`` is not given.
        data, test_data: dataset paths (``test_data`` defaults to ``data``).
        heldout_data: dataset path of images for ``forget_loss_ceiling="heldout"`` (see
            :class:`DetectionBenchmarkConfig`).
        scenarios: forget requests (default: the preset's ``class:clamp`` and ``images:0.1``).
        methods: method names; ``None`` or ``["all"]``: the preset's methods. A registered method
            without a preset runs with its own defaults; ``retrain`` always runs as the reference.
        seeds: benchmark seeds.
        original_epochs: epochs of the original training (and of ``retrain``).
        overrides: ``{"original" | METHOD: {FIELD: VALUE}}`` (the ``--set METHOD.FIELD=VALUE`` convention).
        device: torch device.
        in_chans: image channels (1 or 3).
        reference_retrains: retrained detectors per request and seed (the reference is their mean).
        models_dir: directory that keeps trained detectors for reuse (see :class:`DetectionBenchmarkConfig`).
        groups: method name -> parameter groups it may update, on top of the preset's.

    Raises:
        UserInputError: unknown method or field, a bad request, no seed, a bad image size.
    """
    from vision_unlearn.api import config_class_of, config_from_dict, list_unlearners

    source = model[len("yolo:"):] if model.startswith("yolo:") else model
    if Path(source).suffix.lower() not in (".yaml", ".yml"):
        raise UserInputError("the detection benchmark trains its detectors from a model yaml (e.g. "
                             "yolo:yolov8n.yaml)", field="--model", value=model)
    if image_size <= 0 or image_size % 32:
        raise UserInputError("the image size must be a positive multiple of 32", field="--imgsz", value=image_size)
    if in_chans not in (1, 3):
        raise UserInputError("in_chans must be 1 or 3", field="--in-chans", value=in_chans)
    if not seeds:
        raise UserInputError("need at least one seed", field="--seeds", value=list(seeds))
    if reference_retrains < 1:
        raise UserInputError("need at least one retrained reference", field="--reference-retrains",
                             value=reference_retrains)
    defaults = DetectionBenchmarkConfig()
    requests = tuple(scenarios) if scenarios else defaults.scenarios
    for request in requests:
        kind, _, value = request.partition(":")
        if not (kind == "images" and _is_fraction(value)):
            parse_detection_forget(request)
    known = set(list_unlearners())
    chosen = list(defaults.methods) if not methods or list(methods) == ["all"] else list(methods)
    for name in chosen:
        if name not in known:
            raise UserInputError(f"unknown unlearning method; known: {', '.join(sorted(known))}", field="--methods",
                                 value=name)
    method_configs = {m: dict(defaults.methods.get(m, {})) for m in chosen if m != "retrain"}
    sample_configs = {m: dict(defaults.sample_methods[m]) for m in method_configs if m in defaults.sample_methods}
    original = dict(defaults.original)
    if original_epochs is not None:
        original["epochs"] = original_epochs
    for name, values in (overrides or {}).items():
        if name == "original":
            original.update(values)
        elif name in method_configs:
            method_configs[name].update(values)
            if name in sample_configs:
                sample_configs[name].update(values)
        else:
            raise UserInputError(f"this method is not benchmarked; methods: {', '.join(method_configs)}",
                                 field="--set", value=name)
    method_groups = {m: g for m, g in defaults.groups.items() if m in method_configs}
    for name, chosen_groups in (groups or {}).items():
        if name not in method_configs:
            raise UserInputError(f"this method is not benchmarked; methods: {', '.join(method_configs)}",
                                 field="--groups", value=name)
        unknown = [g for g in chosen_groups if g not in PARAMETER_GROUPS]
        if unknown or not chosen_groups:
            raise UserInputError(f"parameter groups are {', '.join(PARAMETER_GROUPS)}", field="--groups",
                                 value=f"{name}={','.join(chosen_groups)}")
        method_groups[name] = tuple(chosen_groups)
    config_from_dict(config_class_of("retrain"), original, source="--set original")
    for name, values in method_configs.items():
        config_from_dict(config_class_of(name), values, source=f"--set {name}")
        if name in sample_configs:
            config_from_dict(config_class_of(name), {**values, **sample_configs[name]}, source=f"--set {name}")
    return DetectionBenchmarkConfig(model=source, image_size=image_size, n_train=n_train, n_test=n_test, data=data,
                                    test_data=test_data, heldout_data=heldout_data, scenarios=requests,
                                    seeds=tuple(seeds), original=original, methods=method_configs,
                                    sample_methods=sample_configs, device=device, in_chans=in_chans,
                                    reference_retrains=reference_retrains, groups=method_groups,
                                    models_dir=str(models_dir) if models_dir is not None else None)


def _image_request(fraction: float, train: DetectionData, seed: int, out: Path) -> str:
    patients = sorted(set(train.patient_ids))
    rng = np.random.default_rng(seed + 1000)
    chosen = set(rng.choice(patients, size=max(1, round(fraction * len(patients))), replace=False).tolist())
    listing = out / f"forget_images_seed{seed}.txt"
    atomic_write_text(listing, "".join(f"{s}\n" for s, p in zip(train.sample_ids, train.patient_ids) if p in chosen))
    return f"images:{listing}"


def benchmark_data(config: DetectionBenchmarkConfig,
                   seed: int) -> tuple[DetectionData, DetectionData, DetectionData | None]:
    """The training, test and held-out images of one benchmark seed.

    The toy set draws them with seeds ``100 + seed``, ``200 + seed`` and ``300 + seed``; dataset paths
    are read as given (the held-out set only when ``config.heldout_data`` names one).
    """
    if config.data is not None:
        train = load_detection_data(config.data, config.image_size, config.in_chans)
        test = load_detection_data(config.test_data or config.data, config.image_size, config.in_chans,
                                   train.class_names)
        heldout = (load_detection_data(config.heldout_data, config.image_size, config.in_chans, train.class_names)
                   if config.heldout_data else None)
        return train, test, heldout
    return (toy_detection_data(config.n_train, 100 + seed, config.image_size, config.in_chans),
            toy_detection_data(config.n_test, 200 + seed, config.image_size, config.in_chans),
            toy_detection_data(config.n_test, 300 + seed, config.image_size, config.in_chans))


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
    from importlib.metadata import version

    digest = hashlib.sha256()
    header = {"model": config.model, "image_size": config.image_size, "in_chans": config.in_chans,
              "recipe": config.original, "seed": seed, "device": config.device, "torch": torch.__version__,
              "ultralytics": version("ultralytics"), "classes": list(data.class_names)}
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
    run = _run_method(adapter, "retrain", config.original, data.select([0]), data, seed, config.device, progress)
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


def run_detection_benchmark(config: DetectionBenchmarkConfig, out_dir: str | os.PathLike[str],
                            command: str | None = None, progress: bool = False) -> dict[str, Any]:
    """Original -> retrain reference -> every method, per scenario and seed; write results and a figure.

    Returns:
        The results dict also written to ``results.json``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        torch.manual_seed(seed)
        train, test, heldout = benchmark_data(config, seed)
        spec = YoloModelSpec(config.model, num_classes=train.num_classes, in_chans=train.in_chans,
                             class_names=train.class_names, image_size=config.image_size)
        adapter = YoloAdapter(spec)
        adapter.reset_parameters(seed)
        everything = train.select(np.arange(len(train)))
        logger.info("seed %d: training the original detector on %d images", seed, len(train))
        original_run = train_detector(adapter, config, everything, seed, "original", progress)
        original_state = original_run.state
        for scenario in config.scenarios:
            split = scenario_split(scenario, train, seed, out)
            forget, retain = split.forget_data(train), split.retain_data(train)
            adapter.model.load_state_dict(original_state)
            original_metrics = evaluate_detector(adapter, train, test, split)
            if heldout is not None and split.request.removes_images:
                original_metrics["heldout_loss_median"] = heldout_loss_median(adapter, heldout)
            logger.info("seed %d %s original: %s", seed, scenario, _brief(original_metrics))
            rows.append({"seed": seed, "scenario": scenario, "method": "original", "seconds": original_run.seconds,
                         "cpu_seconds": original_run.cpu_seconds, "reused_model": original_run.reused,
                         **original_metrics})
            adapter.set_trainable_groups(PARAMETER_GROUPS)
            references, retrain_rows = [], []
            for k in range(config.reference_retrains):
                retrain_seed = seed + 1000 * k
                retrain_run = train_detector(adapter, config, retain, retrain_seed, "retrain", progress)
                references.append(evaluate_detector(adapter, train, test, split))
                logger.info("seed %d %s retrain %d (%.0f s): %s", seed, scenario, k, retrain_run.seconds,
                            _brief(references[-1]))
                retrain_rows.append({"seed": seed, "scenario": scenario, "method": "retrain",
                                     "retrain_seed": retrain_seed, "seconds": retrain_run.seconds,
                                     "cpu_seconds": retrain_run.cpu_seconds, "reused_model": retrain_run.reused,
                                     **references[-1]})
            reference = mean_reference(references)
            retrain_seconds = float(np.mean([r["seconds"] for r in retrain_rows]))
            retrain_cpu_seconds = float(np.mean([r["cpu_seconds"] for r in retrain_rows]))
            spread = {f"reference_{k}_spread": float(np.ptp([r[k] for r in references]))
                      for k in ("retain_map50", "mia_auc") if len(references) > 1
                      and all(math.isfinite(r.get(k, float("nan"))) for r in references)}
            for row in retrain_rows:
                rows.append({**row, "time_ratio": runtime_ratio(row["seconds"], retrain_seconds),
                             "cpu_time_ratio": runtime_ratio(row["cpu_seconds"], retrain_cpu_seconds),
                             "reference_retrains": config.reference_retrains, **spread})
            for name, overrides in config.methods.items():
                if split.request.removes_images:
                    overrides = {**overrides, **config.sample_methods.get(name, {})}
                adapter.model.load_state_dict(original_state)
                adapter.set_trainable_groups(config.groups.get(name, PARAMETER_GROUPS))
                overrides = resolve_loss_ceiling(overrides, split.request.removes_images, heldout is not None,
                                                 strict=False)
                try:
                    metrics, seconds, cpu_seconds = _run_and_evaluate(adapter, name, overrides, forget, retain,
                                                                      train, test, split, seed, config.device,
                                                                      progress, heldout)
                    status = "ok"
                except UserInputError as err:  # a diverged run is a result, not a crash
                    logger.warning("%s on %s (seed %d) failed: %s", name, scenario, seed, err)
                    metrics, seconds, cpu_seconds, status = {}, float("nan"), float("nan"), f"failed: {err}"
                gaps = gaps_to_reference(metrics, reference, ("retain_map50", "retain_map50_95", "forget_ap50",
                                                              "mia_auc", "forget_recall"))
                finite = math.isfinite(seconds)
                rows.append({"seed": seed, "scenario": scenario, "method": name, "seconds": seconds,
                             "cpu_seconds": cpu_seconds, "status": status,
                             "forget_loss_ceiling": overrides.get("forget_loss_ceiling"),
                             "time_ratio": runtime_ratio(seconds, retrain_seconds) if finite else float("nan"),
                             "cpu_time_ratio": runtime_ratio(cpu_seconds, retrain_cpu_seconds) if finite
                             else float("nan"), "reference_retrains": config.reference_retrains, **spread,
                             **metrics, **{f"gap_{k}": v for k, v in gaps.items()}})
                logger.info("seed %d %s %s: %s", seed, scenario, name, _brief(rows[-1]))
            adapter.set_trainable_groups(PARAMETER_GROUPS)
            _write_results(out, config, rows, command)
    return _write_results(out, config, rows, command)


def _brief(metrics: Mapping[str, Any]) -> str:
    keys = ("forget_ap50", "retain_map50", "map50", "forget_recall", "mia_auc", "time_ratio", "cpu_time_ratio")
    return " ".join(f"{k} {_fmt(metrics.get(k))}" for k in keys if k in metrics)


def _is_fraction(text: str) -> bool:
    try:
        return 0.0 < float(text) < 1.0
    except ValueError:
        return False


SUMMARY_COLUMNS = ("forget_ap50", "forget_ap50_95", "retain_map50", "retain_map50_95", "forget_recall",
                   "misattribution_rate", "mia_auc", "mia_auc_ci_low", "mia_auc_ci_high", "seconds", "time_ratio",
                   "cpu_seconds", "cpu_time_ratio", "gap_retain_map50", "gap_mia_auc", "reference_retain_map50_spread")


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else float("nan")


def summarise_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (scenario, method): every column's mean over seeds, its standard deviation and its value per seed.

    Rows of one seed are averaged first (several reference retrains), so each seed weighs the same.
    ``COLUMN_by_seed`` maps the seed (as a string) to that seed's value.
    """
    groups: dict[tuple[str, str], dict[int, list[Mapping[str, Any]]]] = {}
    for row in rows:
        groups.setdefault((str(row["scenario"]), str(row["method"])), {}).setdefault(int(row["seed"]), []).append(row)
    summary = []
    for (scenario, method), by_seed in groups.items():
        entry: dict[str, Any] = {"scenario": scenario, "method": method, "seeds": len(by_seed)}
        for column in SUMMARY_COLUMNS:
            per_seed = {}
            for seed, members in sorted(by_seed.items()):
                values = np.array([_number(m.get(column)) for m in members])
                values = values[np.isfinite(values)]
                per_seed[str(seed)] = float(values.mean()) if values.size else float("nan")
            finite = np.array([v for v in per_seed.values() if math.isfinite(v)])
            entry[column] = float(finite.mean()) if finite.size else float("nan")
            entry[f"{column}_std"] = float(finite.std()) if finite.size > 1 else 0.0
            entry[f"{column}_by_seed"] = per_seed
        summary.append(entry)
    return summary


def merge_results(paths: Sequence[str | os.PathLike[str]]) -> dict[str, Any]:
    """Rows of several ``results.json`` (e.g. one process per seed) as one results dict.

    Raises:
        UserInputError: a file that is missing or not a detector benchmark's results, or two files
            holding the same (seed, scenario, method) cell.
    """
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[Any, ...], str] = {}
    commands, configs = [], []
    for path in paths:
        try:
            results = json.loads(Path(path).read_text())
        except (OSError, ValueError) as err:
            raise UserInputError(f"cannot read benchmark results: {err}", field="results", value=str(path)) from err
        if not isinstance(results, dict) or not isinstance(results.get("rows"), list):
            raise UserInputError("not a detector benchmark's results.json (no 'rows')", field="rows", value=str(path))
        for row in results["rows"]:
            key = (row.get("seed"), row.get("scenario"), row.get("method"), row.get("retrain_seed"))
            if key in seen:
                raise UserInputError(f"the cell seed {key[0]} {key[1]} {key[2]} is also in {seen[key]}",
                                     field="rows", value=str(path))
            seen[key] = str(path)
            rows.append(row)
        commands.append(results.get("command"))
        configs.append(results.get("config"))
    return {"commands": commands, "configs": configs, "rows": rows, "summary": summarise_rows(rows)}


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if not isinstance(value, (int, float)) or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(low: Any, high: Any) -> str:
    low, high = _number(low), _number(high)
    return f" [{low:.2f}, {high:.2f}]" if math.isfinite(low) and math.isfinite(high) else ""


def _cell(entry: Mapping[str, Any], column: str, digits: int = 3, interval: bool = False,
          seed_digits: int = 2) -> str:
    """``mean`` or, over several seeds, ``mean (seed a / seed b / ...)``; the MIA AUC with its DeLong
    95 % interval (the interval per seed, and the mean of each end for one seed)."""
    by_seed = entry.get(f"{column}_by_seed") or {}
    ci = (lambda key: _interval(entry.get("mia_auc_ci_low_by_seed", {}).get(key),
                                entry.get("mia_auc_ci_high_by_seed", {}).get(key))) if interval else (lambda key: "")
    if len(by_seed) <= 1:
        only = next(iter(by_seed), None)
        return _fmt(entry.get(column), digits) + (ci(only) if only is not None else "")
    parts = " / ".join(f"{_fmt(v, seed_digits)}{ci(k)}" for k, v in by_seed.items())
    return f"{_fmt(entry.get(column), digits)} ({parts})"


def results_markdown(summary: Sequence[Mapping[str, Any]], command: str | None) -> str:
    """One table per request: mean over seeds, then each seed's value in brackets (seed order).

    ``retain gap`` is retain mAP50 minus the reference's (the mean of the request's retrained
    detectors), so 0.01 is one point.
    """
    lines = []
    if command:
        lines += ["Reproduce with:", "", "```", command, "```", ""]
    for scenario in dict.fromkeys(s["scenario"] for s in summary):
        entries = [s for s in summary if s["scenario"] == scenario]
        seeds = next(iter(entries))["retain_map50_by_seed"].keys()
        lines += [f"### `{scenario}`", "", f"Seeds: {', '.join(seeds)}.", "",
                  "| method | forget AP50 | retain mAP50 | retain gap to retrain | forget recall | misattribution "
                  "| MIA AUC [95 % CI] | time / retrain | CPU time / retrain |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for s in entries:
            gap = "reference" if s["method"] == "retrain" else _cell(s, "gap_retain_map50", seed_digits=3)
            lines.append(f"| {s['method']} | {_cell(s, 'forget_ap50')} | {_cell(s, 'retain_map50')} | {gap} | "
                         f"{_cell(s, 'forget_recall')} | {_cell(s, 'misattribution_rate')} | "
                         f"{_cell(s, 'mia_auc', interval=True)} | {_cell(s, 'time_ratio')} | "
                         f"{_cell(s, 'cpu_time_ratio')} |")
        spread = [s for s in entries if s["method"] == "retrain"]
        if spread and any(math.isfinite(v) for v in spread[0]["reference_retain_map50_spread_by_seed"].values()):
            per_seed = ", ".join(f"seed {k}: {_fmt(v, 3)}" for k, v in
                                 spread[0]["reference_retain_map50_spread_by_seed"].items())
            lines += ["", f"The reference is the mean of several retrained detectors per seed; their retain mAP50 "
                          f"spread (max - min): {per_seed}."]
        lines.append("")
    return "\n".join(lines)


def plot_summary(summary: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Forget AP50 / retain mAP50 / MIA AUC per method and scenario as grouped bars."""
    from rfo_bench.offline import prepare_offline

    prepare_offline()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(s["scenario"] for s in summary))
    metrics = (("forget_ap50", "forget AP50"), ("retain_map50", "retain mAP50"), ("mia_auc", "MIA AUC"))
    fig, axes = plt.subplots(1, len(scenarios), figsize=(6 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        entries = [s for s in summary if s["scenario"] == scenario]
        x = np.arange(len(entries))
        for j, (key, label) in enumerate(metrics):
            values = [s[key] if math.isfinite(s[key]) else 0.0 for s in entries]
            errors = [s.get(f"{key}_std", 0.0) for s in entries]
            ax.bar(x + (j - 1) * 0.27, values, 0.27, yerr=errors, label=label)
        ax.set_xticks(x, [s["method"] for s in entries], rotation=35, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(scenario)
        ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def _write_results(out: Path, config: DetectionBenchmarkConfig, rows: list[dict[str, Any]],
                   command: str | None) -> dict[str, Any]:
    summary = summarise_rows(rows)
    results = {"config": asdict(config), "command": command, "rows": rows, "summary": summary}
    atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=str, allow_nan=True) + "\n")
    atomic_write_text(out / "results.md", results_markdown(summary, command))
    if summary:
        plot_summary(summary, out / "results.png")
    return results


# --------------------------------------------------------------------------------------------- CLI
# The command line is ``vision-unlearn run|benchmark --model yolo:...`` (:mod:`vision_unlearn.cli`).
# ``python -m vision_unlearn.detection_benchmark`` keeps its original flags as an alias; both build
# their inputs with the functions above and run the same two entry points.
def _set_threads(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def _cmd_run(args: argparse.Namespace) -> int:
    from vision_unlearn.api import parse_overrides

    _set_threads(args)
    result = run_detection_unlearning(args.model, args.data, args.forget, args.method, args.out,
                                      config=parse_overrides(args.set), image_size=args.imgsz,
                                      in_chans=args.in_chans, seed=args.seed, device=args.device,
                                      test_data=args.test_data, trainable_groups=args.groups,
                                      heldout_data=args.heldout_data)
    print(json.dumps(result, indent=2, default=str))
    return 0


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from vision_unlearn.cli import parse_method_groups, split_method_overrides

    _set_threads(args)
    config = make_benchmark_config(model=args.model, image_size=args.imgsz, n_train=args.n_train, n_test=args.n_test,
                                   data=args.data, test_data=args.test_data, heldout_data=args.heldout_data,
                                   scenarios=args.scenarios,
                                   methods=args.methods, seeds=args.seeds, original_epochs=args.original_epochs,
                                   overrides=split_method_overrides(args.set), device=args.device,
                                   reference_retrains=args.reference_retrains, models_dir=args.models_dir,
                                   groups=parse_method_groups(args.groups))
    results = run_detection_benchmark(config, args.out, command=args.command_text or None, progress=args.progress)
    print(results_markdown(results["summary"], None))
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    merged = merge_results(args.results)
    atomic_write_text(out / "results.json", json.dumps(merged, indent=2, default=str, allow_nan=True) + "\n")
    commands = "\n".join(c for c in merged["commands"] if c)
    atomic_write_text(out / "results.md", results_markdown(merged["summary"], commands or None))
    if merged["summary"]:
        plot_summary(merged["summary"], out / "results.png")
    print(results_markdown(merged["summary"], None))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser, sub = make_parser("vision-unlearn-yolo", "Unlearning for Ultralytics YOLO detectors (alias of "
                                                     "`vision-unlearn run|benchmark --model yolo:...`).")
    run = add_command(sub, "run", _cmd_run, "forget a class, images or instances from a YOLO detector")
    run.add_argument("--model", required=True, help="yolo:PATH.pt (or yolo:MODEL.yaml)")
    run.add_argument("--data", required=True, help="training data: dataset path (COCO/YOLO/...) or toy:N")
    run.add_argument("--forget", required=True, help="class:NAME | images:FILE | patients:FILE | instances:FILE")
    run.add_argument("--method", default="ofmu", help="registered unlearning method")
    run.add_argument("--out", required=True, help="output directory")
    run.add_argument("--set", nargs="+", action="extend", default=[], metavar="FIELD=VALUE",
                     help="method config overrides (repeatable)")
    run.add_argument("--imgsz", type=int, default=640, help="network input side (multiple of 32)")
    run.add_argument("--in-chans", type=int, default=1, help="channels of a yaml model")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="cpu")
    run.add_argument("--test-data", default=None, help="held-out data for the forgetting metrics")
    run.add_argument("--heldout-data", default=None, help="other unseen images, for forget_loss_ceiling=heldout")
    run.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    run.add_argument("--groups", nargs="*", default=None, help="trainable parameter groups (backbone neck head)")
    bench = add_command(sub, "benchmark", _cmd_benchmark, "methods vs retrain on a small detection set")
    bench.add_argument("--out", required=True)
    bench.add_argument("--model", default="yolov8n.yaml")
    bench.add_argument("--imgsz", type=int, default=128)
    bench.add_argument("--n-train", type=int, default=240)
    bench.add_argument("--n-test", type=int, default=200)
    bench.add_argument("--data", default=None, help="dataset path instead of the toy set")
    bench.add_argument("--test-data", default=None)
    bench.add_argument("--heldout-data", default=None, help="images for forget_loss_ceiling=heldout")
    bench.add_argument("--scenarios", nargs="*", default=None, help="e.g. class:clamp images:0.1")
    bench.add_argument("--methods", nargs="*", default=None)
    bench.add_argument("--seeds", type=int, nargs="+", default=[0])
    bench.add_argument("--original-epochs", type=int, default=None)
    bench.add_argument("--reference-retrains", type=int, default=1,
                       help="retrained detectors per request and seed; gaps are taken to their mean")
    bench.add_argument("--models-dir", default=None, help="keep trained detectors here and reuse them")
    bench.add_argument("--groups", action="append", default=[], metavar="METHOD=GROUP[,GROUP...]",
                       help="parameter groups a method may update (repeatable)")
    bench.add_argument("--set", nargs="+", action="extend", default=[], metavar="METHOD.FIELD=VALUE",
                       help="override a method's config (or original.FIELD)")
    bench.add_argument("--device", default="cpu")
    bench.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    bench.add_argument("--progress", action="store_true")
    bench.add_argument("--command-text", default=None, help=argparse.SUPPRESS)
    merge = add_command(sub, "merge", _cmd_merge, "one table from several benchmark results (e.g. one per seed)")
    merge.add_argument("--results", nargs="+", required=True, help="results.json files")
    merge.add_argument("--out", required=True, help="directory for the merged results.json, .md and .png")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(build_parser(), argv)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

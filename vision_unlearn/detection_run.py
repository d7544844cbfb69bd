"""One unlearning request on one YOLO detector: ``vision-unlearn run --model yolo:...``.

The road, forward only: read the detector (restrictedly, :mod:`rfo_bench.detectors.ultralytics_setup`)
and its training image size -> read the data -> hold out test images when none are given -> resolve
the forget request on the training part -> the request kind's preset under the user's fields ->
evaluate the original -> unlearn -> evaluate again -> write the checkpoint, the audit record and
the before/after report.

* **Image size**: the detector's own training size (``train_args["imgsz"]`` of the checkpoint, which
  :func:`~vision_unlearn.adapters.yolo.save_ultralytics_checkpoint` also writes); ``--imgsz`` wins;
  a model yaml (untrained) falls back to :data:`FALLBACK_IMAGE_SIZE`.
* **Held-out images**: without ``test_data`` a seeded, patient-level share
  (:data:`HELDOUT_FRACTION`) of the given data is split off (:func:`~vision_unlearn.detection_data.heldout_patient_split`),
  never unlearned on, and listed in ``OUT/heldout_images.txt``; the images a forget request names stay
  in training.
* **Presets**: :func:`~vision_unlearn.detection_presets.run_preset` for the request's kind; ``config``
  fields and ``trainable_groups`` win.
* **Before and after**: the same metrics for the original and the unlearned detector; when the original
  does not find what it should forget (:func:`~vision_unlearn.detection_eval.evaluability`) the result
  says so (``"evaluable": false``) instead of reporting a forget AP50 of 0 as success.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit_core.utils import atomic_write_text
from vision_unlearn.adapters.yolo import YoloAdapter
from vision_unlearn.adapters.yolo_data import DetectionData
from vision_unlearn.detection_data import heldout_patient_split, load_detection_data
from vision_unlearn.detection_eval import (
    MembershipLosses,
    evaluability,
    evaluate_detector,
    resolve_loss_ceiling,
)
from vision_unlearn.detection_forget import (
    DetectionForgetSplit,
    parse_detection_forget,
    resolve_detection_forget,
)
from vision_unlearn.detection_presets import run_preset
from vision_unlearn.loop import LoopSettings
from vision_unlearn.methods.grad_ascent import HELDOUT_MODES
from vision_unlearn.run import MethodRun, detach_test_time_hooks, run_method

if TYPE_CHECKING:
    from vision_unlearn.request import UnlearnRequest

logger = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.2
"""Share of the patients split off as test images when ``run`` is given no test data."""

FALLBACK_IMAGE_SIZE = 640
"""Input side of a model yaml (no training size to read) when ``--imgsz`` is not given."""


def checkpoint_image_size(source: str) -> int | None:
    """The training image side recorded in an Ultralytics checkpoint (``train_args["imgsz"]``), rounded
    up to a multiple of 32; ``None`` for a model yaml or a checkpoint that records none.

    Raises:
        UserInputError: a file the restricted loader refuses (:func:`rfo_bench.detectors.ultralytics_setup.load_yolo_checkpoint`).
    """
    if Path(source).suffix.lower() not in (".pt", ".pth"):
        return None
    from rfo_bench.detectors.ultralytics_setup import load_yolo_checkpoint

    model, ckpt = load_yolo_checkpoint(source)
    args = (ckpt or {}).get("train_args") or getattr(model, "args", None) or {}
    value = args.get("imgsz") if isinstance(args, Mapping) else None
    if isinstance(value, (list, tuple)) and value:
        value = max(value)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
        return None
    return int(-(-int(value) // 32) * 32)


def _run_method(adapter: YoloAdapter, name: str, config: Mapping[str, Any], forget: DetectionData,
                retain: DetectionData, seed: int, device: str = "cpu", progress: bool = False,
                heldout: DetectionData | None = None, label: str | None = None) -> MethodRun:
    """:func:`vision_unlearn.run.run_method` on detection data (a held-out-aware method gets ``heldout``;
    ``label`` names the progress bar, the method's name when not given)."""
    return run_method(name, adapter, forget.stream(), retain.stream(), config=config,
                      settings=LoopSettings(seed=seed, device=device, progress=progress, label=label),
                      heldout=heldout.stream() if heldout is not None else None)


def _run_and_evaluate(adapter: YoloAdapter, name: str, config: Mapping[str, Any], forget: DetectionData,
                      retain: DetectionData, train: DetectionData, test: DetectionData, split: DetectionForgetSplit,
                      seed: int, device: str = "cpu", progress: bool = False,
                      heldout: DetectionData | None = None,
                      references: list[MembershipLosses] | None = None) -> tuple[dict[str, Any], float, float]:
    """One benchmark cell: run ``name``, evaluate it, then detach the hooks of a test-time method.

    A :class:`~vision_unlearn.protocols.TestTimeMethod` keeps its hooks on the model so that it can be
    evaluated; the benchmark reuses the same model for the next method, which must start from the
    plain original detector.

    Returns:
        The metrics, wall seconds and CPU seconds of the run.
    """
    run: MethodRun | None = None
    try:
        run = _run_method(adapter, name, config, forget, retain, seed, device, progress, heldout)
        metrics = evaluate_detector(adapter, train, test, split, references=references)
        if run.ceiling:
            metrics["loss_ceiling_start"], metrics["loss_ceiling_end"] = run.ceiling["start"], run.ceiling["end"]
        return metrics, run.seconds, run.cpu_seconds
    finally:
        if run is not None:
            detach_test_time_hooks(run.method)


@dataclass(frozen=True)
class RunData:
    """What a ``run`` trains on and evaluates on.

    Attributes:
        train: the images the detector is unlearned on (forget and retain streams come from here).
        test: the images the metrics use, never unlearned on (``None``: no evaluation).
        split: the forget request resolved on ``train``.
        test_source: where ``test`` came from (the ``test_data`` path, or a sentence about the split).
    """

    train: DetectionData
    test: DetectionData | None
    split: DetectionForgetSplit
    test_source: str | None


def prepare_run_data(full: DetectionData, forget: str, test: DetectionData | None, test_data: str | None,
                     evaluate: bool, seed: int) -> RunData:
    """Resolve the request and, without ``test`` (and when evaluating), split held-out images off ``full``.

    The forget request is first resolved on all of ``full`` (so unknown ids are named whatever the
    split); the patients of the images it names stay in training. A class request's objects are to be
    forgotten everywhere, so its split is stratified: patients with and without the class are held
    out in the same share.
    """
    request = parse_detection_forget(forget)
    if test is not None or not evaluate:
        return RunData(full, test, resolve_detection_forget(request, full), test_data)
    named = resolve_detection_forget(request, full)
    if request.kind == "class":  # both sides keep images of the class: stratify by it
        strata = np.zeros(len(full), dtype=np.int64)
        strata[named.forget_images] = 1
        train_rows, held_rows = heldout_patient_split(full.patient_ids, HELDOUT_FRACTION, seed, strata=strata)
    else:
        train_rows, held_rows = heldout_patient_split(full.patient_ids, HELDOUT_FRACTION, seed, named.forget_images)
    train, held = full.select(train_rows), full.select(held_rows)
    source = (f"no --test-data: {len(held)} of {len(full)} images ({HELDOUT_FRACTION:.0%} of the patients, "
              f"seed {seed}) were split off the training data for the metrics and not unlearned on")
    return RunData(train, held, resolve_detection_forget(request, train), source)


def run_detection_unlearning(unlearn_request: UnlearnRequest, *, use_presets: bool = True) -> dict[str, Any]:
    """Forget ``unlearn_request.forget`` from the detector ``unlearn_request.model``; save the result and
    its audit record (the detector leg of :func:`vision_unlearn.road.run_request`).

    What is read from the request (:class:`~vision_unlearn.request.UnlearnRequest`):

    * ``model``: ``yolo:PATH.pt`` (the trained detector; a yaml gives an untrained one, ``in_chans``
      channels, 1 when not given); ``data``: its training data (``toy:N`` or a dataset path);
    * ``forget``: a detection forget request (``class:NAME``, ``images:FILE``, ``instances:FILE``, ...);
    * ``config``: the user's method config fields; they win over the request kind's preset;
      ``groups``: restrict the updated parameter groups (``None``: the preset's);
    * ``image_size``: network input side; ``None``: the checkpoint's training size (see the module
      docstring);
    * ``test_data``: held-out data for the metrics; ``None``: split some off ``data`` (seeded by ``seed``);
    * ``heldout_data``: images the detector never saw, for ``forget_loss_ceiling="heldout"``
      (:class:`~vision_unlearn.methods.grad_ascent.HeldoutCeiling`); keep them apart from ``test_data``,
      whose images the membership attack compares the forget images with;
    * ``evaluate``, ``progress``, ``device``, ``seed``.

    ``out`` gets ``unlearned.pt`` (Ultralytics checkpoint), ``original.pt``, ``audit.json`` and, when test
    images were split off, ``heldout_images.txt``; for a test-time method also its state alone
    (:data:`vision_unlearn.methods.steer.STEERING_FILE`, see :meth:`vision_unlearn.methods.steer.Steer.from_file`):
    the weights do not change, so ``unlearned.pt`` equals the original and the erasure lives in that file.
    ``use_presets=False`` starts from the method's defaults instead of
    :func:`~vision_unlearn.detection_presets.run_preset`.

    Returns:
        ``{"checkpoint", "audit", "metrics": {"before", "after"}, "evaluable", "notes", "evaluation",
        "config", "groups", "split", "seconds", "cpu_seconds"}`` (and ``"steering"`` for ``steer``;
        ``"forget_loss_ceiling"`` ``{"start", "end"}`` when it followed held-out images).

    Raises:
        UserInputError: a model, data or request the detector cannot take (see
            :func:`~vision_unlearn.detection_forget.resolve_detection_forget` and
            :func:`~vision_unlearn.adapters.yolo.build_detection_model`), bad config fields, or too
            few patients to split test images off.
    """
    job = unlearn_request
    model, data, forget, method, out_dir = job.model, str(job.data), job.forget, job.method, job.out
    config, image_size, in_chans, seed, device = job.config, job.image_size, job.in_chans or 1, job.seed, job.device
    test_data, trainable_groups, progress, heldout_data, evaluate = (job.test_data, job.groups, job.progress,
                                                                     job.heldout_data, job.evaluate)
    from vision_unlearn.adapters.yolo import adapter_from_model_text
    from vision_unlearn.api import config_class_of, config_from_dict
    from vision_unlearn.audit import make_audit_record, summarise_forgotten, write_audit_record
    from vision_unlearn.methods.steer import STEERING_FILE, save_steering_state

    explicit = dict(config or {})
    config_from_dict(config_class_of(method), explicit, source=f"method {method}")  # fail before any work
    request = parse_detection_forget(forget)
    preset, preset_groups = run_preset(method, request.removes_images) if use_presets else ({}, None)
    fields = {**preset, **explicit}
    config_from_dict(config_class_of(method), fields, source=f"preset of {method} for {request.kind} requests")
    groups = tuple(trainable_groups) if trainable_groups else preset_groups
    notes: list[str] = []
    source = model[len("yolo:"):] if model.startswith("yolo:") else model
    is_yaml = Path(source).suffix.lower() in (".yaml", ".yml")
    if image_size is not None:
        size_source = "--imgsz"
    else:
        image_size = None if is_yaml else checkpoint_image_size(source)
        size_source = "the checkpoint's train_args.imgsz"
        if image_size is None:
            image_size, size_source = FALLBACK_IMAGE_SIZE, "fallback (no training size recorded)"
            notes.append(f"no training image size recorded in {source}; running at {image_size} px (set --imgsz)")
    out = Path(out_dir)
    if is_yaml:  # an untrained model: classes come from the data
        full = load_detection_data(data, image_size, in_chans)
        adapter = adapter_from_model_text(model, num_classes=full.num_classes, in_chans=in_chans,
                                          class_names=full.class_names, image_size=image_size)
    else:
        adapter = adapter_from_model_text(model, image_size=image_size)
        full = load_detection_data(data, image_size, adapter.in_chans, adapter.class_names)
    if groups:
        adapter.set_trainable_groups(tuple(groups))
    given_test = (load_detection_data(test_data, image_size, adapter.in_chans, adapter.class_names)
                  if test_data and evaluate else None)
    prepared = prepare_run_data(full, forget, given_test, test_data, evaluate, seed)
    train, test, split = prepared.train, prepared.test, prepared.split
    if test is not None and test_data is None:
        notes.append(str(prepared.test_source))
    heldout = (load_detection_data(heldout_data, image_size, adapter.in_chans, adapter.class_names)
               if heldout_data is not None else None)
    strict = "forget_loss_ceiling" in explicit
    resolved = resolve_loss_ceiling(fields, split.request.removes_images, heldout is not None, strict=strict)
    if fields.get("forget_loss_ceiling") in HELDOUT_MODES and resolved.get("forget_loss_ceiling") is None \
            and split.request.removes_images:
        notes.append(f"the preset's forget_loss_ceiling={fields['forget_loss_ceiling']!r} needs --heldout-data "
                     "(images apart from the test images); ran without a ceiling")
    fields = resolved
    out.mkdir(parents=True, exist_ok=True)
    if test is not None and test_data is None:
        atomic_write_text(out / "heldout_images.txt", "".join(f"{s}\n" for s in test.sample_ids))
    before_metrics = evaluate_detector(adapter, train, test, split) if test is not None else {}
    status = evaluability(before_metrics, request.kind == "class") if test is not None else \
        {"evaluable": False, "reason": "no metrics (--no-eval)"}
    if test is not None and not status["evaluable"]:
        notes.append(str(status["reason"]))
    before = adapter.save(out / "original.pt")
    run = _run_method(adapter, method, fields, split.forget_data(train), split.retain_data(train), seed, device,
                      progress, heldout)
    unlearner, loop_result, seconds = run.method, run.result, run.seconds
    after_metrics = evaluate_detector(adapter, train, test, split) if test is not None else {}
    rows = [int(i) for i in split.forget_images]
    forgotten = summarise_forgotten(
        request.kind, request.value if request.kind == "class" else None, [train.sample_ids[i] for i in rows],
        [train.patient_ids[i] for i in rows],
        request_file=request.value if request.kind in ("images", "patients", "instances") else None,
    )
    record_stub = {"method": method, "request": request.kind, "forget": split.summary()}
    after = adapter.save(out / "unlearned.pt", record=record_stub)
    result: dict[str, Any] = {
        "checkpoint": str(after), "audit": str(out / "audit.json"),
        "metrics": {"before": before_metrics, "after": after_metrics}, "evaluable": status["evaluable"],
        "notes": notes, "config": fields, "groups": list(groups) if groups else "all",
        "evaluation": {"image_size": image_size, "image_size_source": size_source,
                       "test_images": len(test) if test is not None else 0,
                       "test_source": prepared.test_source if test is not None else None,
                       "train_images": len(train)},
        "split": split.summary(), "seconds": seconds, "cpu_seconds": run.cpu_seconds}
    if run.ceiling:
        result["forget_loss_ceiling"] = dict(run.ceiling)
    steering = save_steering_state(unlearner, out / STEERING_FILE,
                                   {"model": adapter.describe(), "forget": str(request), "seed": seed})
    if steering is not None:
        result["steering"] = str(steering)
    audit_metrics = {**after_metrics, **{f"before_{k}": v for k, v in before_metrics.items()}}
    record = make_audit_record(forgotten=forgotten, method=method, config=fields, seed=seed,
                               metrics=audit_metrics, checkpoint_before=before, checkpoint_after=after,
                               timings_s={"unlearn": seconds}, dataset=data,
                               artifacts=[steering] if steering is not None else [])
    write_audit_record(out / "audit.json", record)
    for note in notes:
        logger.warning("%s", note)
    logger.info("%s on %s: %d steps in %.1f s -> %s", method, request, loop_result.steps_done, seconds, after)
    return result

"""Ultralytics YOLO baselines (YOLOv8 / YOLO11, n and s) trained by the Ultralytics trainer.

Models are built from their architecture yaml (random initialisation) or, when
``TrainConfig.weights`` names a local ``.pt``, from that file; nothing is downloaded. Ultralytics is
set up by :func:`rfo_bench.detectors.ultralytics_setup.import_ultralytics` (offline, restricted
checkpoint loading) and every checkpoint a user passes in is vetted by
:func:`~rfo_bench.detectors.ultralytics_setup.check_yolo_checkpoint` first: a crafted ``.pt`` is
refused with one line naming the file instead of running code.

Training data go through :func:`rfo_bench.io.yolo_format.write_yolo` (links to the PNG/JPEG files,
16-bit PNGs for DICOM). The Ultralytics data pipeline then decodes images with OpenCV as 8-bit
3-channel arrays: with YOLO, precision drops to 8 bits inside the trainer (the torchvision family
keeps float32 end to end; OpenCV keeps only the high byte of a 16-bit PNG). Prediction feeds the same
8-bit gray-to-3-channel conversion. Tiled training (``TrainConfig.tiling``) windows each film by its own
percentiles before the tiles are written as 8-bit PNGs, so faint objects keep their contrast in those
8 bits; sliced prediction applies the same window.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.detectors.config import TrainConfig
from rfo_bench.detectors.data import CategoryMap
from rfo_bench.detectors.detections import Detections
from rfo_bench.detectors.registry import register_detector
from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError

logger = logging.getLogger(__name__)


def _yaml_builder(yaml_name: str):
    def builder() -> str:
        return yaml_name

    builder.__name__ = f"build_{yaml_name.removesuffix('.yaml')}"
    return builder


for _name, _yaml, _text in (
    ("yolov8n", "yolov8n.yaml", "YOLOv8 nano (Ultralytics), anchor-free one-stage"),
    ("yolov8s", "yolov8s.yaml", "YOLOv8 small (Ultralytics), anchor-free one-stage"),
    ("yolo11n", "yolo11n.yaml", "YOLO11 nano (Ultralytics), anchor-free one-stage"),
    ("yolo11s", "yolo11s.yaml", "YOLO11 small (Ultralytics), anchor-free one-stage"),
):
    register_detector(_name, family="ultralytics", description=_text)(_yaml_builder(_yaml))


def write_training_layout(
    sources: dict[str, Sequence[DetectionDataset]], categories: CategoryMap, root: Path
) -> Path:
    """Write the Ultralytics layout of several datasets with one class order; return its ``data.yaml``.

    Each dataset is written by :func:`rfo_bench.io.yolo_format.write_yolo` into its own folder after
    its category table is replaced by the union ``categories`` (so class ``k`` means the same thing in
    every folder); the returned ``data.yaml`` lists all folders of a split.

    Args:
        sources: split name (``train``, ``val``) -> datasets whose images go into that split.
        categories: class order (YOLO class ``k`` is ``categories.categories[k]``).
        root: directory to write.
    """
    import yaml

    from rfo_bench.io.yolo_format import write_yolo

    folders: dict[str, list[str]] = {}
    for split, datasets in sources.items():
        for index, dataset in enumerate(datasets):
            unified = replace(dataset, categories=categories.categories)
            sub = f"{split}{index}"
            write_yolo(unified, root / sub, {split: [r.image_id for r in dataset.images]})
            folders.setdefault(split, []).append(f"{sub}/images/{split}")
    data = {
        "path": str(root.resolve()),
        "train": folders["train"],
        "val": folders.get("val", folders["train"]),
        "names": {k: c.name for k, c in enumerate(categories.categories)},
    }
    target = root / "data.yaml"
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


LAYOUT_NAME = "yolo_data"
"""Stem of the hidden training-layout folder written inside the output directory."""


def train_ultralytics(
    builder, config: TrainConfig, train_sets: Sequence[DetectionDataset], categories: CategoryMap, out: Path,
    *, val_set: DetectionDataset | None = None, resume: bool = False, progress: bool = True,
) -> tuple[str, list[dict[str, Any]]]:
    """Train one YOLO model with the Ultralytics trainer; returns ``(weights path relative to out, history)``.

    Ultralytics' own bars stay off (``YOLO_VERBOSE=false``, see :mod:`toolkit_core.offline`); with
    ``progress`` one bar on stderr counts the batches of every epoch (:func:`_progress_callbacks`).

    The training layout is written into a fresh hidden folder of ``out`` (owned by this run) and
    removed afterwards; no folder that was already there is deleted. With ``resume`` and an
    Ultralytics ``last.pt`` in ``out`` (saved every epoch), training continues from it on the new layout,
    or from the mid-epoch ``partial.pt`` written every ``config.checkpoint_every`` batches when that is
    newer (:mod:`rfo_bench.detectors.yolo_checkpoints`).

    Raises:
        UserInputError: a missing image, or ``config.weights`` is missing or refused (see
            :func:`~rfo_bench.detectors.ultralytics_setup.check_yolo_checkpoint`).
    """
    from rfo_bench.detectors.ultralytics_setup import check_yolo_checkpoint, import_ultralytics
    from toolkit_core.output_dirs import remove_stale_staging, write_marker

    import_ultralytics()
    if config.weights is not None:
        check_yolo_checkpoint(config.weights)  # before anything is written; YOLO() reads it restrictedly too
    # the layout links image files; a missing one would become a dangling link that the Ultralytics
    # loader skips with a warning, silently training on fewer images than the record states
    for dataset in [*train_sets, *([val_set] if val_set is not None else [])]:
        for record in dataset.images:
            if not (dataset.root / record.file_name).is_file():
                raise UserInputError("image file does not exist", file=dataset.root / record.file_name,
                                     field="images.file_name")
    sources: dict[str, Sequence[DetectionDataset]] = {"train": train_sets}
    if val_set is not None and len(val_set):
        sources["val"] = [val_set]
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out, LAYOUT_NAME)  # layouts of killed runs (their process is gone)
    layout = Path(tempfile.mkdtemp(prefix=f".{LAYOUT_NAME}.tmp-", dir=out))
    try:
        write_marker(layout, "rfo-bench train", state="staging")
        return _train_on_layout(builder, config, sources, categories, out, layout, resume=resume,
                                progress=progress)
    finally:
        shutil.rmtree(layout, ignore_errors=True)  # created above by this call: never a user's folder


def _train_on_layout(builder, config: TrainConfig, sources: dict[str, Sequence[DetectionDataset]],
                     categories: CategoryMap, out: Path, layout: Path, *, resume: bool = False,
                     progress: bool = True) -> tuple[str, list[dict[str, Any]]]:
    from ultralytics import YOLO  # set up by train_ultralytics

    from rfo_bench.detectors.ultralytics_setup import load_yolo_checkpoint
    from rfo_bench.detectors.yolo_checkpoints import (
        PARTIAL_NAME,
        clear_partial,
        mid_epoch_checkpoints,
        read_partial,
    )

    recipe = config.recipe
    train_sets = sources["train"]
    data_yaml = write_training_layout(sources, categories, layout)
    weights_dir = out / "ultralytics" / "weights"
    last = weights_dir / "last.pt"
    if resume and last.is_file():
        _, checkpoint = load_yolo_checkpoint(last)  # vetted like any user file; Ultralytics reads it restrictedly
        if int(checkpoint.get("epoch", -1)) < 0 or checkpoint.get("optimizer") is None:
            logger.info("the Ultralytics run in %s has finished; nothing to resume", out)  # its optimizer was stripped
            return _finished_run(out)
        partial = read_partial(weights_dir, int(checkpoint["epoch"]))
        started_amp = (checkpoint.get("train_args") or {}).get("amp")
        if started_amp is not None and bool(started_amp) != config.use_amp:  # the trainer keeps its own
            logger.warning("the run started %s mixed precision and goes on so (the Ultralytics trainer keeps the "
                           "setting it started with, whatever the device now)", "with" if started_amp else "without")
        start = weights_dir / PARTIAL_NAME if partial is not None else last
        if partial is not None:
            load_yolo_checkpoint(start)
            logger.info("resuming the Ultralytics run from %s (epoch %d, %d batches done)", start,
                        partial.epoch + 1, partial.batches_done)
        else:
            clear_partial(weights_dir)  # stale: written before last.pt's epoch ended, or damaged
            logger.info("resuming the Ultralytics run from %s", last)
        model = YOLO(str(start))
        _keep_threads(model, config.threads)
        _validate_only_on(model, "val" in sources)
        with _progress_callbacks(model, progress, partial.batches_done if partial else 0), \
                mid_epoch_checkpoints(model, weights_dir, config.checkpoint_every, partial):
            # Into this folder: the checkpoint names the folder it was written in, which a run carried to
            # another machine or path (copy_resume_state) no longer is; the trainer must not write there.
            model.train(resume=str(start), data=str(data_yaml), device=config.device, workers=config.workers,
                        save_dir=str((out / "ultralytics").resolve()))
        clear_partial(weights_dir)
        return _finished_run(out)
    clear_partial(weights_dir)  # a fresh run never resumes from another run's mid-epoch checkpoint
    model = YOLO(str(config.weights)) if config.weights is not None else YOLO(builder())
    # Ultralytics warms up for max(warmup_epochs * batches, 100) iterations; below 100 it cannot honour the
    # recipe, so short recipes train without warm-up rather than spending every iteration in it.
    batches = max(1, math.ceil(sum(len(d) for d in train_sets) / recipe.batch_size))
    warmup_epochs = recipe.warmup_iters / batches if recipe.warmup_iters >= 100 else 0.0
    _keep_threads(model, config.threads)
    _validate_only_on(model, "val" in sources)
    with _progress_callbacks(model, progress), \
            mid_epoch_checkpoints(model, weights_dir, config.checkpoint_every):
        _train_fresh(model, config, data_yaml, warmup_epochs, out, validate="val" in sources)
    clear_partial(weights_dir)
    return _finished_run(out)


def _train_fresh(model, config: TrainConfig, data_yaml: Path, warmup_epochs: float, out: Path, *,
                 validate: bool) -> None:
    recipe = config.recipe
    model.train(
        data=str(data_yaml), epochs=recipe.epochs, warmup_epochs=warmup_epochs, imgsz=recipe.imgsz,
        batch=recipe.batch_size, workers=config.workers,
        device=config.device, seed=config.seed, deterministic=True, optimizer="AdamW" if recipe.optimizer == "adamw" else "SGD", lr0=recipe.lr,
        lrf=recipe.lr_gamma,  # Ultralytics decays linearly to lr0 * lrf instead of in steps
        momentum=recipe.momentum, weight_decay=recipe.weight_decay,
        fliplr=recipe.hflip_p, mosaic=recipe.mosaic, close_mosaic=recipe.close_mosaic,
        hsv_v=recipe.intensity_jitter, hsv_h=0.0, hsv_s=0.0,
        project=str(out.resolve()), name="ultralytics", exist_ok=True, amp=config.use_amp, plots=False,
        verbose=False, val=validate, pretrained=config.weights is not None,
    )


def _keep_threads(model, threads: int | None) -> None:
    """Train on ``threads`` CPU threads of torch (``None``: the Ultralytics trainer's own count).

    The trainer sets torch's threads to one fewer than the machine's cores each time it picks a CPU device
    (a 2-core machine trains on one), over whatever the caller chose: when it starts, and when its final
    validation starts. The callbacks right after each choice set the count asked for again.
    """
    if threads is None:
        return

    def set_threads(_) -> None:
        import torch

        torch.set_num_threads(threads)

    for event in ("on_pretrain_routine_start", "on_val_start", "on_train_end"):
        model.add_callback(event, set_threads)


def _validate_only_on(model, has_val_set: bool) -> None:
    """Without a validation set, skip the trainer's validation passes (they would score the training images).

    With ``val=False`` the Ultralytics trainer still validates after its last epoch and once more with
    ``best.pt`` (``final_eval``), on the layout's ``val`` split, which without a validation set is the
    training split: on the shipped recipe, 23 275 training tiles twice at the end of a CPU run, for
    figures no one reads (a recipe's held-out evaluation is its own step). The validator is replaced by
    one that returns the trainer's zero metrics, so the results table keeps its columns and ``best.pt``
    is the last epoch's weights, as before.
    """
    if has_val_set:
        return

    def on_train_start(trainer) -> None:  # the trainer builds its validator just before this event
        trainer.validator = _NoValidation(trainer.validator, trainer.metrics)

    model.add_callback("on_train_start", on_train_start)


class _NoValidation:
    """Stands in for the trainer's validator: no pass over any data, the trainer's zero metrics."""

    def __init__(self, validator: Any, zeros: dict[str, Any] | None) -> None:
        self.args, self.metrics = validator.args, validator.metrics  # the trainer sets options on them
        self.dataloader = getattr(validator, "dataloader", None)
        self._zeros = dict(zeros or {})

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # a fitness of its own: without one the trainer ranks by its loss, a numpy scalar that it writes into
        # the checkpoint, where the restricted loader rightly refuses it
        return {**self._zeros, "fitness": 0.0}


def _mean_loss(tloss: Any) -> float | None:
    """The trainer's running loss summed over its terms (a tensor or, in newer releases, a dict of them)."""
    terms = list(tloss.values()) if isinstance(tloss, dict) else [tloss]
    try:
        return float(sum(float(t.sum()) if hasattr(t, "sum") else float(t) for t in terms))
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _progress_callbacks(model, progress: bool, batches_done: int = 0) -> Iterator[None]:
    """One tqdm bar on stderr over the batches of all epochs, fed by the Ultralytics trainer's callbacks.

    ``batches_done``: batches of the first epoch that a resumed mid-epoch checkpoint already covers.
    """
    from tqdm.auto import tqdm

    bar = tqdm(desc="train", unit="batch", disable=not progress, leave=True)

    def on_train_start(trainer) -> None:
        per_epoch = len(trainer.train_loader)
        bar.reset(total=trainer.epochs * per_epoch)
        bar.update(trainer.start_epoch * per_epoch + batches_done)

    def on_train_epoch_start(trainer) -> None:  # drawn at once, however fast the epoch
        bar.set_description(f"epoch {trainer.epoch + 1}/{trainer.epochs}", refresh=True)

    def on_train_batch_end(trainer) -> None:
        loss = _mean_loss(getattr(trainer, "tloss", None))
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        bar.update(1)

    if progress:
        model.add_callback("on_train_start", on_train_start)
        model.add_callback("on_train_epoch_start", on_train_epoch_start)
        model.add_callback("on_train_batch_end", on_train_batch_end)
    try:
        yield
    finally:
        bar.close()


def _finished_run(out: Path) -> tuple[str, list[dict[str, Any]]]:
    run = out / "ultralytics"
    best, last = run / "weights" / "best.pt", run / "weights" / "last.pt"
    weights = best if best.is_file() else last
    history = _read_results_csv(run / "results.csv")
    return os.path.relpath(weights, out), history


def _read_results_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    history = []
    for row in rows:
        record: dict[str, Any] = {}
        for key, value in row.items():
            try:
                record[key.strip()] = float(value)
            except (TypeError, ValueError):
                record[key.strip()] = value
        history.append(record)
    return history


class UltralyticsDetector:
    """A trained YOLO model; see :class:`rfo_bench.detectors.api.TrainedDetector`."""

    def __init__(self, config: TrainConfig, categories: CategoryMap, weights: Path) -> None:
        from rfo_bench.detectors.ultralytics_setup import check_yolo_checkpoint, import_ultralytics

        import_ultralytics()
        from ultralytics import YOLO

        self.config = config
        self.categories = categories
        check_yolo_checkpoint(weights)  # refuses a crafted file; YOLO() then reads it restrictedly as well
        self.model = YOLO(str(weights))

    def predict(self, pixels: np.ndarray) -> Detections:
        gray = np.round(np.clip(np.asarray(pixels, dtype=np.float64), 0, 1) * 255).astype(np.uint8)
        bgr = np.repeat(gray[:, :, None], 3, axis=2)
        recipe = self.config.recipe
        result = self.model.predict(bgr, imgsz=recipe.imgsz, conf=recipe.score_threshold,
                                    max_det=recipe.max_detections, device=self.config.device, verbose=False)[0]
        if result.boxes is None or len(result.boxes) == 0:
            return Detections.empty()
        boxes = result.boxes.xyxy.cpu().numpy().astype(np.float32)
        scores = result.boxes.conf.cpu().numpy().astype(np.float32)
        classes = result.boxes.cls.cpu().numpy().astype(np.int64)
        ids = np.array([self.categories.categories[int(k)].id for k in classes], dtype=np.int64)
        return Detections(boxes, scores, ids)


def copy_resume_state(run_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> str:
    """Copy what ``--resume`` needs of a YOLO run into ``dest`` (a new folder), to carry it to another machine.

    Everything in the run's folder but what a resumed run makes again: the tiles (``.tiles*``, cut again
    from the same films), the trainer's data layout (``.yolo_data*``) and ``best.pt`` (the final epoch
    writes it). That is the newest checkpoints (``last.pt``; ``partial.pt`` and its stamp inside an
    epoch), the compute ledger, the trainer's settings and history and the folder's ownership marker. The
    copy's ``last.pt`` is read back restrictedly, so a checkpoint copied while being written is refused.

    Returns:
        where the copied run stands, e.g. ``"3 epochs done, 150 batches of epoch 4"``.

    Raises:
        UserInputError: ``dest`` exists, or the run has no readable ``last.pt`` yet (nothing is left at
            ``dest``).
    """
    from rfo_bench.detectors.tile_cache import TILES_NAME
    from rfo_bench.detectors.ultralytics_setup import load_yolo_checkpoint
    from rfo_bench.detectors.yolo_checkpoints import read_partial

    source, target = Path(run_dir), Path(dest)
    if target.exists():
        raise UserInputError("already exists; the state is copied into a new folder", file=target)
    if not (source / "ultralytics" / "weights" / "last.pt").is_file():
        raise UserInputError("holds no checkpoint yet (ultralytics/weights/last.pt)", file=source)
    skipped = (f".{TILES_NAME}", f".{LAYOUT_NAME}")

    def ignore(folder: str, names: list[str]) -> list[str]:
        top = Path(folder) == source
        weights = Path(folder) == source / "ultralytics" / "weights"
        return [n for n in names if (top and n.startswith(skipped)) or (weights and n == "best.pt")]

    shutil.copytree(source, target, ignore=ignore, symlinks=True)
    weights_dir = target / "ultralytics" / "weights"
    try:
        epoch = int(load_yolo_checkpoint(weights_dir / "last.pt")[1].get("epoch", -1))
    except UserInputError:
        shutil.rmtree(target)  # the folder this call made, and nothing else
        raise
    partial = read_partial(weights_dir, epoch)
    where = f"{epoch + 1} epoch{'' if epoch == 0 else 's'} done"
    return where + (f", {partial.batches_done} batches of epoch {epoch + 2}" if partial is not None else "")

"""Demo stages 3 and 5: train a YOLO detector, evaluate it with ``rfo_bench``, and unlearn a deletion request
(stage 4, the patch classifier, is :mod:`rfo_toolkit.demo.classifier`).

Everything here composes the toolkit's public pieces: the YOLO adapter and the one training loop
(:mod:`vision_unlearn.loop`) train the detector from scratch (``retrain`` on all training data is
plain training); :func:`rfo_bench.evaluate.evaluate_detailed` gives COCO, FROC and AUROC with
bootstrap intervals; the detection forget requests, methods and metrics of
:mod:`vision_unlearn` do the unlearning and prove it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit_core.utils import atomic_output, atomic_write_text

ADAM = {"optimizer": "adam", "weight_decay": 0.0, "batch_size": 16}


@dataclass(frozen=True, kw_only=True)
class DemoModelPlan:
    """Training and unlearning budgets of the demo.

    Attributes:
        image_size: YOLO input side.
        detector_epochs: epochs of the original detector (and of ``retrain``).
        bootstrap: bootstrap replicates of the evaluator's confidence intervals.
        methods: unlearning methods with their config overrides (``retrain`` always runs).
    """

    image_size: int
    detector_epochs: int
    bootstrap: int
    methods: dict[str, dict[str, Any]]


def demo_model_plan(fast: bool) -> DemoModelPlan:
    """Budgets for ``--fast`` (tests) and the default ``make demo``."""
    methods = {
        "ofmu": {**ADAM, "lr": 5e-4, "epochs": 2, "inner_lr": 0.01, "inner_steps": 1},
        "finetune": {**ADAM, "lr": 1e-3, "epochs": 2},
        "random_label": {**ADAM, "lr": 5e-4, "epochs": 2},
    }
    if fast:
        return DemoModelPlan(image_size=128, detector_epochs=3, bootstrap=100,
                             methods={k: {**v, "epochs": 1} for k, v in methods.items()})
    return DemoModelPlan(image_size=160, detector_epochs=60, bootstrap=1000, methods=methods)


def _original_config(plan: DemoModelPlan) -> dict[str, Any]:
    return {**ADAM, "epochs": plan.detector_epochs, "lr": 2e-3, "schedule": "cosine", "warmup_steps": 10}


def _load(synth_dir: Path, split: str, image_size: int, class_names: tuple[str, ...] | None = None,
          in_chans: int = 1):
    return load_split(synth_dir / f"{split}.json", image_size, class_names, in_chans)


def load_split(path: Path, image_size: int, class_names: tuple[str, ...] | None = None, in_chans: int = 1):
    """``(COCO ground truth, letterboxed detection data)`` of one split file, classes in the model's order."""
    from rfo_bench.io.coco import read_coco
    from vision_unlearn.detection_data import load_detection_data

    return read_coco(path), load_detection_data(str(path), image_size, in_chans, class_names)


def timed_unlearn(adapter: Any, name: str, config: dict[str, Any], forget: Any, retain: Any, seed: int,
                  device: str = "cpu", progress: bool = True) -> tuple[float, float]:
    """``vision_unlearn.unlearn`` on the adapter in place; its wall and CPU seconds."""
    from vision_unlearn import unlearn

    # the demo's training and unlearning steps run for minutes on a CPU: show their progress
    _, record = unlearn(adapter, forget=forget, retain=retain, method=name, config=config, seed=seed, copy=False,
                        progress=progress, device=device)
    return record.seconds, record.cpu_seconds


def train_original(adapter: Any, config: dict[str, Any], train: Any, seed: int, label: str = "train original",
                   device: str = "cpu") -> float:
    """The original detector: ``retrain`` on all of ``train``, its bar labelled ``label``; its wall seconds.

    ``config["init"]`` ``current`` fine-tunes the adapter's current weights (a trained detector); otherwise
    ``retrain`` re-initialises them (seeded) and trains from scratch."""
    from vision_unlearn.loop import LoopSettings
    from vision_unlearn.run import run_method

    run = run_method("retrain", adapter, train.select([0]).stream(), train.stream(), config=config,
                     settings=LoopSettings(seed=seed, progress=True, label=label, device=device))
    return run.seconds


def predictions_json(adapter: Any, data: Any, gt: Any) -> list[dict[str, Any]]:
    """COCO results of ``adapter`` on ``data`` (boxes in original image pixels, ids from ``gt``)."""
    detections = adapter.detect(data.images, ratio_pad=data.ratio_pad, original_hw=data.original_hw,
                                conf_threshold=0.001)
    id_of = {str(r.file_name): r.image_id for r in gt.images}
    category_of = {c.name: c.id for c in gt.categories}
    results = []
    for sample, det in zip(data.sample_ids, detections):
        for x1, y1, x2, y2, score, cls in det.tolist():
            results.append({"image_id": id_of[sample], "category_id": category_of[adapter.class_names[int(cls)]],
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})
    return results


def train_and_evaluate_detector(stage_dir: Path, synth_dir: Path, plan: DemoModelPlan, seed: int,
                                device: str = "cpu") -> dict[str, Any]:
    """Train YOLOv8n from scratch on the synthetic training split and evaluate it on the test split."""
    from rfo_bench.evaluate import EvalConfig, evaluate_detailed, write_report
    from rfo_bench.predictions import read_coco_results
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec

    _, train = _load(synth_dir, "train", plan.image_size)
    gt_test, test = _load(synth_dir, "test", plan.image_size, train.class_names)
    adapter = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=train.num_classes, in_chans=1,
                                        class_names=train.class_names, image_size=plan.image_size))
    adapter.reset_parameters(seed)
    seconds = train_original(adapter, _original_config(plan), train, seed, device=device)
    adapter.save(stage_dir / "original.pt")
    results = predictions_json(adapter, test, gt_test)
    atomic_write_text(stage_dir / "predictions.json", json.dumps(results))
    predictions = read_coco_results(stage_dir / "predictions.json", gt_test)
    evaluation = evaluate_detailed(gt_test, predictions, EvalConfig(bootstrap=plan.bootstrap, seed=seed))
    write_report(evaluation, stage_dir / "eval", gt_test, predictions)
    report = json.loads((stage_dir / "eval" / "report.json").read_text())
    return {
        "image_size": plan.image_size, "epochs": plan.detector_epochs, "train_seconds": round(seconds, 2),
        "n_train": len(train), "n_test": len(test), "class_names": list(train.class_names),
        "coco": report["coco"], "froc": report["froc"], "auroc": report.get("auroc"), "ci95": report.get("ci95"),
        "per_category": report.get("per_category"),
        "figures": [f"eval/{p.name}" for p in sorted((stage_dir / "eval").glob("*.png"))],
    }


def patient_request(train: Any, stage_dir: Path) -> tuple[str, str]:
    """``images:FILE`` listing every training image of the patient with the most objects."""
    counts: dict[str, int] = {}
    for row, patient in enumerate(train.patient_ids):
        counts[patient] = counts.get(patient, 0) + int((train.box_image == row).sum())
    patient = max(sorted(counts), key=lambda p: counts[p])
    listing = stage_dir / "forget_patient_images.txt"
    atomic_write_text(listing, "".join(f"{s}\n" for s, p in zip(train.sample_ids, train.patient_ids) if p == patient))
    return f"images:{listing}", patient


PANEL_PX = 360
"""Side of one film in the before/after figure, in pixels (a film is shown whole, at least this large)."""

SHOWN_SCORE = 0.25
"""Detections drawn in the before/after figure: score at least this."""

TRUTH_STYLE = {"color": "#00e5ff", "linestyle": "--", "linewidth": 1.6}
DETECTION_STYLE = {"color": "#ff5722", "linestyle": "-", "linewidth": 1.6}


def draw_before_after(path: Path, films: list[np.ndarray], truths: list[list[tuple[float, float, float, float, str]]],
                      detections: list[list[torch.Tensor]], titles: list[str], class_names: tuple[str, ...],
                      film_labels: list[str], heading: str) -> Path:
    """Each model (rows) on the same films (columns): ground-truth boxes dashed, detections solid, full labels.

    Models go down the page so that the figure stays two films wide: a report page of about 1100 px
    shows every film at its full :data:`PANEL_PX`.

    Args:
        path: PNG to write.
        films: ``(H, W)`` films in ``[0, 1]``, original pixels.
        truths: per film, its annotated boxes ``(x1, y1, x2, y2, class name)`` in the film's pixels.
        detections: per model, per film, ``Tensor[n, 6]`` (``x1, y1, x2, y2, score, class``) in the
            film's pixels; those scoring below :data:`SHOWN_SCORE` are left out.
        titles: model names, one per row.
        class_names: the detector's class vocabulary (the ``class`` index of a detection).
        film_labels: one label per film (its file and patient), over its column.
        heading: the figure's title (the request).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Rectangle

    dpi = 100
    side = PANEL_PX / dpi
    width_in, height_in = side * len(films) + 0.45, side * len(titles) + 1.15
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    axes = fig.subplots(len(titles), len(films), squeeze=False,
                        gridspec_kw={"wspace": 0.03, "hspace": 0.04, "left": 0.4 / width_in, "right": 0.995,
                                     "top": 1 - 0.75 / height_in, "bottom": 0.4 / height_in})
    label_box = {"boxstyle": "square,pad=0.15", "alpha": 0.75, "linewidth": 0}
    for col, film in enumerate(films):
        height, width = film.shape
        for row, title in enumerate(titles):
            ax = axes[row][col]
            ax.imshow(film, cmap="gray", vmin=0, vmax=1, interpolation="antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(film_labels[col], fontsize=9)
            if col == 0:
                ax.set_ylabel(title, fontsize=12)
            for x1, y1, x2, y2, name in truths[col]:
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **TRUTH_STYLE))
                right = x1 > 0.7 * width  # a label starting near the right edge would be cut: end it at x2
                ax.text(x2 if right else x1, min(y2 + 0.01 * height, height - 1), name, fontsize=8, va="top",
                        ha="right" if right else "left", color="black",
                        bbox={**label_box, "facecolor": TRUTH_STYLE["color"]}, clip_on=True)
            for x1, y1, x2, y2, score, cls in detections[row][col].tolist():
                if score < SHOWN_SCORE:
                    continue
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, **DETECTION_STYLE))
                right = x1 > 0.7 * width
                ax.text(x2 if right else x1, max(y1 - 0.01 * height, 0), f"{class_names[int(cls)]} {score:.2f}",
                        fontsize=8, va="bottom" if y1 > 0.06 * height else "top", ha="right" if right else "left",
                        color="white", bbox={**label_box, "facecolor": DETECTION_STYLE["color"]}, clip_on=True)
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
    fig.suptitle(heading, fontsize=12, y=1 - 0.12 / height_in, va="top")
    fig.legend(handles=[Line2D([], [], **TRUTH_STYLE, label="ground truth (annotated box, class)"),
                        Line2D([], [], **DETECTION_STYLE, label=f"detection (class, score >= {SHOWN_SCORE})")],
               loc="lower center", ncol=2, fontsize=9, frameon=False)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    return path


def _films_and_truths(gt: Any, data: Any, rows: list[int]) -> tuple[list[np.ndarray], list[list[tuple]], list[str]]:
    """The stored films of ``data``'s ``rows`` (original pixels), their annotated boxes and a label each."""
    from rfo_bench.io.images import read_image

    record_of = {str(r.file_name): r for r in gt.images}
    films, truths, labels = [], [], []
    for row in rows:
        record = record_of[data.sample_ids[row]]
        films.append(np.clip(read_image(gt.resolve(record)).pixels, 0, 1))
        truths.append([(*obj.bbox_xyxy, gt.category(obj.category_id).name) for obj in record.objects])
        labels.append(f"{Path(record.file_name).name} ({data.patient_ids[row]})")
    return films, truths, labels


def _detect_on_films(adapter: Any, data: Any, rows: list[int]) -> list[torch.Tensor]:
    """Detections of ``adapter`` on ``data``'s ``rows``, mapped back to the films' pixels."""
    index = torch.as_tensor(rows, dtype=torch.long)
    return adapter.detect(data.images[index], ratio_pad=data.ratio_pad[index], original_hw=data.original_hw[index])


def unlearn_detector(stage_dir: Path, synth_dir: Path, detector_dir: Path, plan: DemoModelPlan, seed: int,
                     forget_class: str | None = "clamp", retrain_config: dict[str, Any] | None = None,
                     retrain_start: Path | None = None, prepare_start: Callable[[Any], None] | None = None,
                     trainable_groups: tuple[str, ...] | None = None, device: str = "cpu") -> dict[str, Any]:
    """Answer two deletion requests (one class; one patient's images) with every method and retrain.

    Args:
        synth_dir: folder of ``train.json`` and ``test.json`` (films, or the tiles of a trained detector).
        detector_dir: folder of ``original.pt``.
        forget_class: the class request's class (``None``: the patient request only).
        retrain_config: the retrained reference's training (default: the original's from-scratch recipe).
        retrain_start: weights the reference starts from (default: a fresh initialisation, seeded).
        prepare_start: applied to the adapter holding ``retrain_start`` before its weights are taken (what was
            done to the original's start, e.g. :func:`rfo_toolkit.demo.clinical.prepare_start`).
        trainable_groups: the parameter groups the original was fine-tuned in (``None``: all); the retrained
            references and every method update only these.
        device: torch device of every run (the models stay there for their evaluation).
    """
    from vision_unlearn.adapters.yolo import adapter_from_model_text
    from vision_unlearn.audit import make_audit_record, summarise_forgotten, write_audit_record
    from vision_unlearn.detection_eval import evaluate_detector
    from vision_unlearn.detection_forget import resolve_detection_forget
    from vision_unlearn.metrics.detection import gaps_to_reference, runtime_ratio

    adapter = adapter_from_model_text(f"yolo:{detector_dir / 'original.pt'}", in_chans=1, image_size=plan.image_size)
    if trainable_groups is not None:
        adapter.set_trainable_groups(trainable_groups)
    gt_train, train = _load(synth_dir, "train", plan.image_size, adapter.class_names, adapter.in_chans)
    _, test = _load(synth_dir, "test", plan.image_size, adapter.class_names, adapter.in_chans)
    original_state = {k: v.detach().clone() for k, v in adapter.model.state_dict().items()}
    start_state = None
    if retrain_start is not None:
        start = adapter_from_model_text(f"yolo:{retrain_start}", in_chans=1, image_size=plan.image_size)
        if prepare_start is not None:
            prepare_start(start)
        start_state = {k: v.detach().clone() for k, v in start.model.state_dict().items()}
    patient_listing, patient = patient_request(train, stage_dir)
    requests = {"class": f"class:{forget_class}"} if forget_class is not None else {}
    requests["patient"] = patient_listing
    before = adapter.save(stage_dir / "checkpoints" / "original.pt")
    rows: list[dict[str, Any]] = []
    from tqdm.auto import tqdm

    # minutes per run on a CPU: one bar over the runs above each run's own step bar
    bar = tqdm(total=len(requests) * (1 + len(plan.methods)), desc="unlearn", unit="run", dynamic_ncols=True)
    for scenario, request in requests.items():
        split = resolve_detection_forget(request, train)
        forget, retain = split.forget_data(train), split.retain_data(train)
        adapter.model.load_state_dict(original_state)
        rows.append({"scenario": scenario, "method": "original", **evaluate_detector(adapter, train, test, split)})
        shown = [int(i) for i in split.forget_images[:2]]
        drawn = [_detect_on_films(adapter, train, shown)]
        titles = ["original (before)"]
        retrain = retrain_config or _original_config(plan)
        if start_state is not None:  # the reference trains from that start, never from a fresh initialisation
            retrain = {**retrain, "init": "current"}
        runs = {"retrain": retrain, **plan.methods}
        reference: dict[str, float] = {}
        retrain_cpu = float("nan")
        for name, config in runs.items():
            adapter.model.load_state_dict(original_state)
            if name == "retrain" and start_state is not None:
                adapter.model.load_state_dict(start_state)
            elif name == "retrain":
                adapter.reset_parameters(seed)
            bar.set_postfix_str(f"{scenario} request: {name}")
            seconds, cpu_seconds = timed_unlearn(adapter, name, config, forget, retain, seed, device)
            metrics = evaluate_detector(adapter, train, test, split)
            after = adapter.save(stage_dir / "checkpoints" / f"{scenario}_{name}.pt")
            if name == "retrain":
                reference, retrain_cpu = metrics, cpu_seconds
            gaps = gaps_to_reference(metrics, reference, ("retain_map50", "forget_ap50", "mia_auc", "forget_recall"))
            # the ratio in CPU time: wall time on a shared machine measures the other jobs as much as the method
            row = {"scenario": scenario, "method": name, "seconds": round(seconds, 2),
                   "cpu_seconds": round(cpu_seconds, 2),
                   "time_ratio": runtime_ratio(cpu_seconds, retrain_cpu) if math.isfinite(retrain_cpu) else 1.0,
                   **metrics, **{f"gap_{k}": v for k, v in gaps.items()}}
            rows.append(row)
            rows_ids = [int(i) for i in split.forget_images]
            forgotten = summarise_forgotten(
                split.request.kind, forget_class if scenario == "class" else None,
                [train.sample_ids[i] for i in rows_ids], [train.patient_ids[i] for i in rows_ids])
            record = make_audit_record(forgotten=forgotten, method=name, config=config, seed=seed, metrics=metrics,
                                       checkpoint_before=before, checkpoint_after=after,
                                       timings_s={"unlearn": seconds, "unlearn_cpu": cpu_seconds}, dataset=str(synth_dir / "train.json"))
            write_audit_record(stage_dir / "audit" / f"{scenario}_{name}.json", record)
            drawn.append(_detect_on_films(adapter, train, shown))
            bar.update()
            titles.append("retrain (target)" if name == "retrain" else name)
        films, truths, labels = _films_and_truths(gt_train, train, shown)
        heading = (f"Forget the class '{forget_class}': two of its training films" if scenario == "class" else
                   f"Withdraw patient {patient}: two of their training films")
        draw_before_after(stage_dir / f"detections_{scenario}.png", films, truths, drawn, titles,
                          adapter.class_names, labels, heading)
    bar.close()
    atomic_write_text(stage_dir / "results.json", json.dumps(rows, indent=1, default=float))
    return {"requests": {"class": forget_class, "patient": patient}, "rows": rows,
            "figures": [f"detections_{s}.png" for s in requests],
            "audit_records": sorted(str(p.relative_to(stage_dir)) for p in (stage_dir / "audit").glob("*.json"))}

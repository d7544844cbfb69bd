"""Demo stage 4: a timm patch classifier on films rendered at clinical resolution.

The stage renders its own films over the real radiograph (``film_px`` px: about 0.36 mm per pixel for
the embedded 1955 x 1841 px radiograph at an assumed 0.2 mm; seeds ``seed * 1000 + 3``, never another
stage's nor a recipe's 1701 / 1702), splits them by pseudo-patient, and cuts object and background
patches from the full films (:func:`vision_unlearn.data.rfo_patches.cut_patch_set`: labels in film
pixels, a patch context in mm from the film's spacing, each patch windowed on its own 16-bit values).
Only training patches are cut several times per object (jitter); the classifier (``resnet10t``, one
channel, random initialisation) is trained by the toolkit's one loop and tested once on the held-out
patients. The settings were chosen on a validation split of the training patients by
``benchmarks/bench_patch_classifier.py``, which also states their test accuracy over five seeds.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from toolkit_core.output_dirs import remove_owned
from toolkit_core.utils import atomic_write_text
from vision_unlearn.data.rfo_patches import PatchCut

PATCH_FILM_SEED_OFFSET = 3
"""Render seeds ``seed * 1000 + 3``: the synth stage uses offsets 0 and 1, the clinical films 2."""

PATCH_CLASSES = ("sponge", "clamp", "blade", "chain")


@dataclass(frozen=True, kw_only=True)
class PatchClassifierPlan:
    """Films, patches and training of the classifier stage.

    Attributes:
        n_films: films rendered over the real radiograph (split by pseudo-patient).
        film_px: film side in pixels (the radiograph's field at ``film_px``: its spacing is recorded).
        cut: patch geometry, window and training jitter.
        epochs: training epochs.
        lr: peak learning rate (SGD with momentum, cosine schedule).
        batch_size: patches per batch.
        model: timm architecture (one input channel, no pretrained weights).
        images_per_patient: consecutive films forming one pseudo-patient.
        test_fraction: share of pseudo-patients held out.
        dihedral_average: classify a patch by the mean softmax over its eight flips / quarter turns (an
            object's orientation on a film carries no class information).
    """

    n_films: int
    film_px: int = 1024
    cut: PatchCut = field(default_factory=PatchCut)
    epochs: int = 12
    lr: float = 0.05
    batch_size: int = 32
    model: str = "resnet10t"
    images_per_patient: int = 4
    test_fraction: float = 0.25
    dihedral_average: bool = False


def patch_classifier_plan(fast: bool) -> PatchClassifierPlan:
    """The stage's settings (chosen on validation patients): ``fast`` for tests, else the default demo."""
    cut = PatchCut(patch_px=64, context_mm=32.0, window="patch", jitter_copies=2)
    if fast:  # the same films and cut, fewer of them, smaller patches and a short schedule
        return PatchClassifierPlan(n_films=24, cut=replace(cut, patch_px=32, jitter_copies=1), epochs=3, lr=0.02,
                                   dihedral_average=True)
    return PatchClassifierPlan(n_films=240, cut=cut, epochs=12, lr=0.02, dihedral_average=True)


def render_patch_films(films_dir: Path, plan: PatchClassifierPlan, seed: int, radiograph: str | None) -> dict[str, Any]:
    """Render the stage's films into ``films_dir`` (``all/train.json``, ``all/test.json``: split by pseudo-patient)."""
    from rfo_toolkit.demo.data import DemoDataPlan, synthesise_demo_data

    data_plan = DemoDataPlan(n_radiograph=plan.n_films, n_ct=0, size=plan.film_px, classes=PATCH_CLASSES,
                             images_per_patient=plan.images_per_patient, test_fraction=plan.test_fraction,
                             seed_offset=PATCH_FILM_SEED_OFFSET)
    return synthesise_demo_data(films_dir, data_plan, seed, radiograph, None, progress=True)


def film_spacing_mm(films_dir: Path) -> dict[int, float]:
    """``image id -> pixel_spacing_mm`` the physics generator recorded for each film of ``films_dir/all``."""
    document = json.loads((films_dir / "all" / "annotations.json").read_text(encoding="utf-8"))
    return {int(image["id"]): float(image["pixel_spacing_mm"]) for image in document["images"]}


def load_patch_sets(films_dir: Path, plan: PatchClassifierPlan, seed: int,
                    splits: dict[str, Any] | None = None) -> dict[str, Any]:
    """Patch sets of the films' splits: jittered copies in ``train`` only, classes :data:`PATCH_CLASSES`.

    Args:
        films_dir: a folder written by :func:`render_patch_films`.
        plan: the cut.
        seed: seed of the background positions and the jitter.
        splits: ``name -> DetectionDataset`` to cut instead of ``all/train.json`` and ``all/test.json``
            (the benchmark's validation split); a name starting with ``train`` is jittered.
    """
    from rfo_bench.io.coco import read_coco
    from vision_unlearn.data.rfo_patches import cut_patch_set

    if splits is None:
        splits = {name: read_coco(films_dir / "all" / f"{name}.json") for name in ("train", "test")}
    spacing = film_spacing_mm(films_dir)
    return {name: cut_patch_set(dataset, plan.cut, seed=seed + k, augment=name.startswith("train"),
                                spacing_mm=spacing, class_names=PATCH_CLASSES)
            for k, (name, dataset) in enumerate(splits.items())}


def fit_patch_classifier(train: Any, plan: PatchClassifierPlan, seed: int, device: str = "cpu") -> tuple[Any, float]:
    """``(TimmAdapter, seconds)``: the plan's model trained from a seeded random start on ``train`` (on ``device``,
    where it stays)."""
    from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
    from vision_unlearn.api import config_class_of, config_from_dict
    from vision_unlearn.benchmark import train_original
    from vision_unlearn.loop import LoopSettings

    adapter = TimmAdapter(TimmModelSpec(name=plan.model, num_classes=train.num_classes, in_chans=1))
    adapter.reset_parameters(seed)
    config = config_from_dict(config_class_of("retrain"), {"epochs": plan.epochs, "lr": plan.lr, "schedule": "cosine",
                                                           "batch_size": plan.batch_size})
    return adapter, train_original(adapter, train, seed, config, LoopSettings(seed=seed, device=device))


def dihedral_probabilities(adapter: Any, images: Any) -> Any:
    """``Tensor[N, K]``: the mean softmax of ``adapter`` over the eight flips / quarter turns of ``images`` ``[N, C, H, W]``."""
    import torch

    views = [torch.rot90(flipped, k, dims=(-2, -1)) for flipped in (images, images.flip(-1)) for k in range(4)]
    return torch.stack([adapter.predict(view.contiguous()).softmax(1) for view in views]).mean(0)


def patch_accuracy(adapter: Any, data: Any, dihedral_average: bool = False) -> dict[str, Any]:
    """``{"accuracy": %, "per_class": {name: % or None}, "counts": {name: n}, "predicted": int [N]}`` of
    ``adapter`` on ``data`` (scores averaged over the dihedral views when ``dihedral_average``)."""
    from vision_unlearn.metrics.accuracy import accuracy, per_class_accuracy

    logits = dihedral_probabilities(adapter, data.images) if dihedral_average else adapter.predict(data.images)
    predicted = logits.argmax(1).numpy()
    per_class = per_class_accuracy(logits, data.labels, num_classes=data.num_classes)
    counts = data.class_counts()
    return {"accuracy": accuracy(logits, data.labels),
            "per_class": {name: (None if np.isnan(value) else float(value))
                          for name, value in zip(data.class_names, per_class)},
            "counts": {name: int(n) for name, n in zip(data.class_names, counts)}, "predicted": predicted}


def draw_patches(path: Path, data: Any, predicted: np.ndarray, per_class: int = 8) -> Path:
    """Up to ``per_class`` patches of each class (rows) as the classifier sees them, each titled with its
    predicted class (green when right, red when wrong)."""
    from matplotlib.figure import Figure

    from toolkit_core.utils import atomic_output

    labels = data.labels.numpy()
    rows = [np.flatnonzero(labels == k)[:per_class] for k in range(data.num_classes)]
    fig = Figure(figsize=(1.1 * per_class + 0.8, 1.25 * len(rows) + 0.2), dpi=100)
    axes = fig.subplots(len(rows), per_class, squeeze=False, gridspec_kw={"wspace": 0.05, "hspace": 0.35})
    for k, indices in enumerate(rows):
        for col in range(per_class):
            ax = axes[k][col]
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(data.class_names[k], fontsize=10)
            if col >= len(indices):
                ax.axis("off")
                continue
            i = int(indices[col])
            ax.imshow(data.images[i, 0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            right = int(predicted[i]) == k
            ax.set_title(data.class_names[int(predicted[i])], fontsize=8, color="green" if right else "red")
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png", bbox_inches="tight")
    return path


def train_patch_classifier(stage_dir: Path, plan: PatchClassifierPlan, seed: int,
                           radiograph: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Render the stage's films, cut their patches, train the classifier and test it on held-out patients.

    The films' pixels are removed once cut (their labels, ``films/all/*.json``, and contact sheet stay);
    ``patches.png`` shows held-out patches with their predictions.
    """
    from vision_unlearn.checkpoint import save_checkpoint

    start = time.process_time()
    render_patch_films(stage_dir / "films", plan, seed, radiograph)
    render_cpu = time.process_time() - start
    spacing = sorted(set(film_spacing_mm(stage_dir / "films").values()))
    sets = load_patch_sets(stage_dir / "films", plan, seed)
    train, test = sets["train"], sets["test"]
    remove_owned(stage_dir / "films" / "all" / "images")
    adapter, seconds = fit_patch_classifier(train, plan, seed, device)
    save_checkpoint(stage_dir / "classifier.pt", "model", {"model": adapter.model.state_dict()},
                    meta=adapter.describe())
    result = patch_accuracy(adapter, test, plan.dihedral_average)
    draw_patches(stage_dir / "patches.png", test, result["predicted"])
    summary = {
        "model": plan.model, "epochs": plan.epochs, "lr": plan.lr, "dihedral_average": plan.dihedral_average,
        "train_seconds": round(seconds, 2),
        "render_cpu_seconds": round(render_cpu, 2), "n_films": plan.n_films, "film_px": plan.film_px,
        "spacing_mm": spacing[0] if len(spacing) == 1 else spacing, "cut": asdict(plan.cut),
        "patch_px": plan.cut.patch_px, "n_train": len(train), "n_test": len(test),
        "n_train_patients": len(set(train.patient_ids)), "n_test_patients": len(set(test.patient_ids)),
        "train_counts": {name: int(n) for name, n in zip(train.class_names, train.class_counts())},
        "test_counts": result["counts"], "class_names": list(train.class_names),
        "test_accuracy": result["accuracy"], "per_class_accuracy": result["per_class"],
        "figures": ["patches.png"],
    }
    atomic_write_text(stage_dir / "results.json", json.dumps(summary, indent=1))
    return summary

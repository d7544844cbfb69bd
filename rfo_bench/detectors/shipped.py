"""A detector trained once from a recorded recipe file, and the loader that checks it is that detector.

A recipe file (``configs/shipped_detector.yaml``) states everything a run depends on: the model, the
seed, the classes, the training and held-out data with the commands and seeds that rendered them, the
optimiser schedule, the tiling and the checkpoint cadence. :func:`train_from_recipe` runs it
(resumable: ``resume=True`` continues an interrupted run in the same folder), evaluates the result on
the held-out data with the unchanged evaluator, and writes one ``detector.json`` holding the command,
the recipe file and its SHA-256, the data seeds and SHA-256, the compute spent, the held-out metrics and
the SHA-256 of the weights. :func:`load_shipped_detector` refuses weights whose bytes differ from that
record and loads YOLO weights through the restricted loader only.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rfo_bench.detectors.config import Recipe, TrainConfig, recipe_with_overrides
from rfo_bench.detectors.registry import get_detector
from rfo_bench.detectors.sliced import SliceConfig
from rfo_bench.detectors.tiling import TileConfig
from toolkit_core.errors import UserInputError, dataclass_from, expect_type
from toolkit_core.utils import atomic_write_bytes, sha256_file

logger = logging.getLogger(__name__)

MAX_RECIPE_BYTES = 1 << 20
_TOP_KEYS = {"name", "model", "seed", "classes", "unseen_classes", "data", "recipe", "tiling", "slicing",
             "checkpoint_every", "backbone", "weights", "bootstrap"}
_DATA_KEYS = {"train", "test", "commands", "seeds", "held_out"}


@dataclass(frozen=True)
class TrainingRecipe:
    """A recipe file, parsed and validated.

    Attributes:
        name: the recipe's name.
        file: the file it was read from.
        sha256: SHA-256 of that file.
        model: registered detector name.
        seed: training seed.
        classes: category names, in id order, the training data must define exactly.
        unseen_classes: classes (of ``classes``) whose boxes are removed from the training and held-out
            data before anything else; their objects stay in the films, as background. The detector keeps
            a slot for each but never sees one as an object, so a model fine-tuned from it to detect such
            a class and one fine-tuned without it share a start that never saw the class: the original
            and the retrained reference of a class deletion request (the demo's).
        train: training dataset path (any supported format).
        test: held-out dataset path (``None``: no held-out metrics).
        data_commands: the commands that rendered the data (recorded, not run).
        data_seeds: the seeds of those commands.
        held_out: one line on why the held-out data are disjoint from the training data.
        recipe: optimiser and schedule (``imgsz`` is the tile size).
        tiling: tile cutting.
        slicing: sliced inference for the held-out evaluation.
        checkpoint_every: steps between checkpoints.
        backbone: timm backbone (torchvision family).
        weights: optional local starting weights.
        bootstrap: bootstrap replicates of the held-out intervals.
    """

    name: str
    file: str
    sha256: str
    model: str
    seed: int
    classes: tuple[str, ...]
    train: str
    test: str | None
    data_commands: tuple[str, ...]
    data_seeds: dict[str, Any]
    held_out: str
    recipe: Recipe
    tiling: TileConfig
    slicing: SliceConfig
    checkpoint_every: int = 500
    unseen_classes: tuple[str, ...] = ()
    backbone: str = "resnet18"
    weights: str | None = None
    bootstrap: int = 200

    def train_config(self, device: str, workers: int = 0, checkpoint_every: int | None = None,
                     threads: int | None = None, amp: bool = True) -> TrainConfig:
        """The run's configuration; ``checkpoint_every`` (a runtime setting) overrides the recipe's."""
        every = self.checkpoint_every if checkpoint_every is None else checkpoint_every
        return TrainConfig(model=self.model, recipe=self.recipe, seed=self.seed, backbone=self.backbone,
                           weights=self.weights, device=device, tiling=self.tiling,
                           checkpoint_every=every, workers=workers, threads=threads, amp=amp)


def _section(data: dict[str, Any], key: str, allowed: set[str] | None, file: Path) -> dict[str, Any]:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise UserInputError("expected a mapping", file=file, field=key)
    if allowed is not None:
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise UserInputError("unknown key(s) " + ", ".join(unknown) + "; known: " + ", ".join(sorted(allowed)),
                                 file=file, field=key)
    return value


def load_training_recipe(path: str | Path) -> TrainingRecipe:
    """Read and validate a recipe file (YAML, safe loader).

    Relative data paths are taken relative to the current directory (where the data commands wrote).

    Raises:
        UserInputError: missing, oversized or invalid file; unknown keys; invalid values.
    """
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserInputError("recipe file does not exist", file=file)
    if file.stat().st_size > MAX_RECIPE_BYTES:
        raise UserInputError(f"recipe file is larger than {MAX_RECIPE_BYTES >> 10} KiB", file=file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise UserInputError(f"not valid YAML: {err}".splitlines()[0], file=file) from None
    if not isinstance(data, dict):
        raise UserInputError("expected a YAML mapping", file=file)
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise UserInputError("unknown key(s) " + ", ".join(unknown) + "; known: " + ", ".join(sorted(_TOP_KEYS)),
                             file=file)
    for key in ("model", "classes", "data", "recipe", "tiling"):
        if key not in data:
            raise UserInputError("missing entry", file=file, field=key)
    source = _section(data, "data", _DATA_KEYS, file)
    if not isinstance(source.get("train"), str):
        raise UserInputError("expected the training dataset path", file=file, field="data.train")
    recipe_values = dict(_section(data, "recipe", None, file))
    base = recipe_values.pop("base", "paper")
    try:
        recipe = recipe_with_overrides(base, recipe_values)
    except UserInputError as err:
        raise UserInputError(err.message, file=file, field=f"recipe.{err.field}" if err.field else "recipe",
                             value=err.value) from None
    tiling_values = dict(_section(data, "tiling", None, file))
    if "window_percentiles" in tiling_values:
        tiling_values["window_percentiles"] = tuple(tiling_values["window_percentiles"])
    tiling = dataclass_from(TileConfig, tiling_values, file=file, key="tiling")
    slicing = dataclass_from(SliceConfig, _section(data, "slicing", None, file), file=file, key="slicing")
    classes = data["classes"]
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise UserInputError("expected a list of class names", file=file, field="classes")
    unseen = data.get("unseen_classes") or []
    if not isinstance(unseen, list) or not all(isinstance(c, str) and c in classes for c in unseen):
        raise UserInputError(f"expected a list of names out of classes {classes}", file=file, field="unseen_classes",
                             value=unseen)
    commands = source.get("commands") or []
    if not isinstance(commands, list) or not all(isinstance(c, str) for c in commands):
        raise UserInputError("expected a list of commands", file=file, field="data.commands")
    seeds = expect_type(source.get("seeds") or {}, dict, "data.seeds", file)
    for name, seed in seeds.items():
        if expect_type(seed, int, f"data.seeds.{name}", file) < 0:
            raise UserInputError("expected a seed >= 0", file=file, field=f"data.seeds.{name}", value=seed)
    return TrainingRecipe(
        name=_text(data, "name", file, default=file.stem), file=str(file), sha256=sha256_file(file),
        model=_text(data, "model", file), seed=_integer(data, "seed", file, default=0, minimum=0),
        classes=tuple(classes), train=source["train"], test=_text(source, "test", file, default=None, key="data"),
        data_commands=tuple(commands), data_seeds=dict(seeds),
        held_out=_text(source, "held_out", file, default="", key="data"), recipe=recipe, tiling=tiling,
        slicing=slicing, checkpoint_every=_integer(data, "checkpoint_every", file, default=500, minimum=0),
        backbone=_text(data, "backbone", file, default="resnet18"), weights=_text(data, "weights", file, default=None),
        bootstrap=_integer(data, "bootstrap", file, default=200, minimum=0), unseen_classes=tuple(unseen),
    )


def _integer(data: dict[str, Any], name: str, file: Path, *, default: int, minimum: int) -> int:
    """``data[name]`` as an integer >= ``minimum`` (``default`` when absent); YAML ``1.7`` or ``zero`` refused."""
    value = expect_type(data.get(name, default), int, name, file)
    if value < minimum:
        raise UserInputError(f"expected an integer >= {minimum}", file=file, field=name, value=value)
    return value


def _text(data: dict[str, Any], name: str, file: Path, *, default: Any = ..., key: str = "") -> Any:
    """``data[name]`` as a non-empty string (``default`` when absent or null; required without one)."""
    value = data.get(name)
    field = f"{key}.{name}" if key else name
    if value is None:
        if default is ...:
            raise UserInputError("missing entry", file=file, field=field)
        return default
    if not expect_type(value, str, field, file).strip():
        raise UserInputError("expected a non-empty string", file=file, field=field, value=value)
    return value


def check_classes(dataset, classes: tuple[str, ...], *, what: str) -> None:
    """Refuse data whose category names (in id order) are not the recipe's classes."""
    names = tuple(c.name for c in sorted(dataset.categories, key=lambda c: c.id))
    if names != classes:
        raise UserInputError(f"the {what} data define classes {list(names)}, the recipe {list(classes)}",
                             file=dataset.source or None, field="classes")


def without_classes(dataset, names: tuple[str, ...]):
    """``dataset`` with every box of the classes ``names`` removed (the images and categories stay)."""
    if not names:
        return dataset
    ids = {c.id for c in dataset.categories if c.name in names}
    return dataset.with_images(replace(record, objects=tuple(o for o in record.objects if o.category_id not in ids))
                               for record in dataset.images)


def with_detector_classes(dataset, categories):
    """``dataset`` with every class of the detector (a :class:`~rfo_bench.detectors.data.CategoryMap`) among its
    categories; those it lacks are added without boxes. A detection of a class the films do not hold is then a
    false positive of the class-agnostic FROC instead of being left out of the evaluation, and that class's own AP
    is undefined (no objects), as COCO leaves it, so AP and AP50 do not change.

    Raises:
        UserInputError: one category id names another class in ``dataset`` than in the detector.
    """
    known = {c.id: c for c in dataset.categories}
    added = []
    for category in categories.categories:
        have = known.get(category.id)
        if have is None:
            added.append(category)
        elif have.name != category.name:
            raise UserInputError(f"category id {category.id} is {have.name!r} here but {category.name!r} for the "
                                 "detector", file=dataset.source or None, field="categories", value=have.name)
    return replace(dataset, categories=(*dataset.categories, *added)) if added else dataset


def film_px(dataset) -> int:
    """The median longer side of the films of ``dataset``: new films for the detector are rendered at it."""
    from rfo_bench.io.formats import fill_image_sizes

    sides = sorted(max(int(r.width), int(r.height)) for r in fill_image_sizes(dataset).images)
    return sides[len(sides) // 2] if sides else 0


def train_from_recipe(recipe_file: str | Path, out_dir: str | Path, *, device: str = "cpu", resume: bool = False,
                      workers: int = 0, checkpoint_every: int | None = None, threads: int | None = None,
                      amp: bool = True, progress: bool = True,
                      command: str | None = None) -> dict[str, Any]:
    """Train the recipe's detector into ``out_dir``, evaluate it on the held-out data, write its record.

    Args:
        recipe_file: the recipe (see :func:`load_training_recipe`).
        out_dir: the run's folder (the same folder to resume).
        device: torch device (already resolved; ``auto`` is the CLI's).
        resume: continue an interrupted run from its checkpoint.
        workers: processes that cut tiles and load batches (:attr:`TrainConfig.workers`).
        threads: CPU threads of torch (:attr:`TrainConfig.threads`).
        amp: mixed precision on CUDA (:attr:`TrainConfig.amp`).
        checkpoint_every: steps between mid-epoch checkpoints (``None``: the recipe's).
        progress: progress bars.
        command: the command line to record.

    Returns:
        The final ``detector.json`` content.
    """
    from rfo_bench.detectors.api import RECORD_NAME, load_detector, train_detector
    from rfo_bench.detectors.yolo_data import load_training_data

    recipe = load_training_recipe(recipe_file)
    train = load_training_data(recipe.train, split="train")
    check_classes(train, recipe.classes, what="training")
    test = load_training_data(recipe.test, split="test") if recipe.test else None
    if test is not None:
        check_classes(test, recipe.classes, what="held-out")
        test = without_classes(test, recipe.unseen_classes)
    train = without_classes(train, recipe.unseen_classes)
    extra = {"recipe_file": recipe.file, "recipe_sha256": recipe.sha256, "recipe_name": recipe.name,
             "classes": list(recipe.classes), "unseen_classes": list(recipe.unseen_classes),
             "film_px": film_px(train),
             "data_commands": list(recipe.data_commands),
             "data_seeds": recipe.data_seeds, "held_out": recipe.held_out}
    result = train_detector(recipe.train_config(device, workers, checkpoint_every, threads, amp), [train], out_dir, progress=progress, resume=resume,
                            command=command, extra_record=extra)
    record = dict(result.record)
    if test is not None:
        detector = load_detector(result.run_dir, device=device, slicing=recipe.slicing, require_hash=True)
        record["held_out_metrics"] = evaluate_held_out(detector, test, Path(out_dir) / "held_out",
                                                       bootstrap=recipe.bootstrap, seed=recipe.seed,
                                                       progress=progress)
        record["slicing"] = recipe.slicing.to_dict()
        atomic_write_bytes(Path(out_dir) / RECORD_NAME, json.dumps(record, indent=2).encode("utf-8"))
    return record


def evaluate_held_out(detector, test, out: Path, *, bootstrap: int, seed: int, progress: bool = True
                      ) -> dict[str, Any]:
    """Predict on ``test``, write the predictions under ``out`` and evaluate them with the toolkit's evaluator.

    Returns:
        ``AP50``, ``AP``, ``FROC``, ``AUROC``, per-category metrics and 95 % intervals, from the evaluation report,
        with the ``data_sha256`` of the films and boxes they were measured on (the unseen classes' boxes removed).
    """
    from rfo_bench.detectors.provenance import dataset_sha256
    from rfo_bench.evaluate import EvalConfig

    report = predict_and_evaluate(detector, test, out, EvalConfig(bootstrap=bootstrap, seed=seed,
                                                                  auroc_positive="critical"), progress=progress)[0].report
    coco, froc = report.get("coco") or {}, report.get("froc") or {}
    return {"images": len(test), "data_sha256": dataset_sha256([test]),
            "AP50": coco.get("AP50"), "AP": coco.get("AP"), "FROC": froc.get("score"),
            "AUROC": report.get("auroc"), "per_category": report.get("per_category"),
            "ci95": report.get("ci95")}


def predict_and_evaluate(detector, test, out: Path, config, *, progress: bool = True, report_dir: Path | None = None):
    """Predict on ``test`` (sliced where the detector is), write the predictions under ``out``, evaluate them
    against ``test`` with every class of the detector among its categories (:func:`with_detector_classes`: a
    detection of a class the films do not hold counts as a false positive, it is not left out).

    ``report_dir``: where to write the evaluation's report and figures (:func:`rfo_bench.evaluate.write_report`),
    against that same ground truth; ``None``: none.

    Returns:
        ``(evaluation, parsed predictions)`` of :func:`rfo_bench.evaluate.evaluate_detailed` with ``config``.
    """
    from rfo_bench.detectors.predict import (
        CLASSIFICATION_CSV,
        PREDICTIONS_JSON,
        predict_dataset,
        write_predictions,
    )
    from rfo_bench.evaluate import evaluate_detailed, write_report
    from rfo_bench.predictions import read_predictions

    test = with_detector_classes(test, detector.categories)
    predictions = predict_dataset(detector, test, progress=progress)
    write_predictions(predictions, detector.categories, out, coco_category_ids={c.id for c in test.categories})
    parsed = read_predictions(out / PREDICTIONS_JSON, test, classification=out / CLASSIFICATION_CSV)
    evaluation = evaluate_detailed(test, parsed, config)
    if report_dir is not None:
        write_report(evaluation, report_dir, test, parsed)
    return evaluation, parsed


def evaluate_checkpoint(recipe_file: str | Path, checkpoint: str | Path, data: str | Path, out: str | Path, *,
                        device: str = "cpu", max_images: int | None = None, bootstrap: int = 0,
                        progress: bool = True) -> dict[str, Any]:
    """A running recipe's YOLO checkpoint (``last.pt`` or ``partial.pt``), evaluated on ``data`` exactly as
    its record's held-out evaluation will be: the recipe's classes, unseen classes removed, sliced by the
    recipe's slicing, the toolkit's evaluator (``bootstrap`` replicates for the 95 % intervals; 0: none).
    A finished run's weights are evaluated the same way on other films (e.g. anatomy the recipe never used).

    A CPU run lasts many hours; this says how it is going. ``data`` must not be the recipe's held-out test
    (refused): the shipped recipe's validation films are ``rfo-synth physics --n 100 --imgsz 2048 --seed
    1703``. The checkpoint is read restrictedly, like any file from elsewhere.

    Returns:
        ``{"images", "AP50", "AP", "FROC", "AUROC", "per_category", "epoch"}`` (``epoch``: the epochs the
        checkpoint holds; ``None`` for a finished run's weights).

    Raises:
        UserInputError: the recipe's test data, a refused checkpoint, or data without the recipe's classes.
    """
    from rfo_bench.detectors.data import category_map
    from rfo_bench.detectors.sliced import SlicedDetector
    from rfo_bench.detectors.ultralytics_setup import load_yolo_checkpoint
    from rfo_bench.detectors.yolo import UltralyticsDetector
    from rfo_bench.detectors.yolo_data import load_training_data

    recipe = load_training_recipe(recipe_file)
    if recipe.test and Path(data).resolve() == Path(recipe.test).resolve():
        raise UserInputError("this is the recipe's held-out test: progress is checked on other films", file=data)
    if get_detector(recipe.model).family != "ultralytics" or recipe.tiling is None:
        raise UserInputError("only a tiled YOLO recipe's checkpoints can be evaluated", file=recipe.file,
                             field="model")
    done = int(load_yolo_checkpoint(checkpoint)[1].get("epoch", -1))
    epoch = done + 1 if done >= 0 else None  # a finished run's weights no longer state their epoch
    dataset = load_training_data(data, split="val")
    if recipe.test and Path(recipe.test).is_file():  # a copy or a subset of the test films is the test too
        shared = _film_hashes(dataset) & _film_hashes(load_training_data(recipe.test, split="test"))
        if shared:
            raise UserInputError(f"{len(shared)} of its films are the recipe's held-out test films: progress is "
                                 "checked on other films", file=data)
    check_classes(dataset, recipe.classes, what="evaluation")
    dataset = without_classes(dataset, recipe.unseen_classes)
    if max_images is not None:
        dataset = replace(dataset, images=dataset.images[:max_images])
    config = recipe.train_config(device)
    detector = SlicedDetector(UltralyticsDetector(config, category_map([dataset]), Path(checkpoint)), config.tiling,
                              recipe.slicing)
    return {**evaluate_held_out(detector, dataset, Path(out), bootstrap=bootstrap, seed=recipe.seed,
                                progress=progress), "epoch": epoch}


def _film_hashes(dataset) -> set[str]:
    """The SHA-256 of every image file of ``dataset`` (what a film is, wherever it was copied)."""
    return {sha256_file(dataset.resolve(record)) for record in dataset.images if dataset.resolve(record).is_file()}


def load_shipped_detector(run_dir: str | Path, *, device: str | None = None, slicing: SliceConfig | None = None):
    """Load a recipe-trained detector after checking its weights against the record's SHA-256.

    Raises:
        UserInputError: a record without ``weights_sha256``, weights that differ from it, or a checkpoint
            the restricted loader refuses.
    """
    from rfo_bench.detectors.api import load_detector

    return load_detector(run_dir, device=device, slicing=slicing, require_hash=True)


@dataclass(frozen=True)
class DetectorStart:
    """What a model fine-tuned from a recipe-trained detector takes from that detector's record.

    Attributes:
        run_dir: the detector's folder (``rfo-bench train --config RECIPE --out DIR``).
        model: registered detector name.
        weights: the weights file (inside ``run_dir``).
        weights_sha256: the record's SHA-256 of that file (checked with :func:`check_start_weights`).
        tiling: the tiles it was trained on (a fine-tuned model is trained on tiles cut the same way).
        slicing: how it predicts over whole films (``None``: the record states none, the defaults apply).
        film_px: the side of its training films in pixels.
        categories: its category table, ``(id, name)`` in id order.
        unseen_classes: classes whose boxes were removed from its training and held-out data.
        recipe_name: the recipe it was trained by.
        recipe_sha256: SHA-256 of that recipe file.
        compute: its own training compute (``cpu_seconds``, ``accelerator_seconds``, ``wall_seconds``).
    """

    run_dir: str
    model: str
    weights: str
    weights_sha256: str
    tiling: TileConfig
    slicing: SliceConfig | None
    film_px: int
    categories: tuple[tuple[int, str], ...]
    unseen_classes: tuple[str, ...]
    recipe_name: str
    recipe_sha256: str
    compute: dict[str, float]


def read_detector_start(run_dir: str | Path) -> DetectorStart:
    """The start settings of a recipe-trained detector folder, read from its ``detector.json`` (weights not read).

    Raises:
        UserInputError: no such folder or record, or a record without weights SHA-256, tiling or ``film_px``.
    """
    from rfo_bench.detectors.api import RECORD_NAME, read_record, record_weights_path, recorded_slicing

    record = read_record(run_dir)
    path = Path(run_dir) / RECORD_NAME
    weights = record_weights_path(run_dir, record)
    tiling = (record.get("config") or {}).get("tiling")
    if not isinstance(tiling, dict):
        raise UserInputError("the detector was not trained on tiles (its record states no tiling); train it with "
                             "rfo-bench train --config RECIPE", file=path, field="config.tiling")
    if not isinstance(record.get("film_px"), int) or record["film_px"] <= 0:
        raise UserInputError("the record states no film size; train it with rfo-bench train --config RECIPE",
                             file=path, field="film_px")
    if not isinstance(record.get("weights_sha256"), str):
        raise UserInputError("the detector record states no weights_sha256", file=path, field="weights_sha256")
    try:
        tiles = TileConfig.from_dict(tiling)
        categories = tuple((int(c["id"]), str(c["name"])) for c in record["categories"])
    except (UserInputError, TypeError, KeyError, ValueError) as err:
        raise UserInputError(f"corrupt detector record: {err}".splitlines()[0], file=path, field="config") from None
    slicing = recorded_slicing(run_dir) if record.get("slicing") is not None else None
    compute = record.get("compute") if isinstance(record.get("compute"), dict) else {}
    return DetectorStart(
        run_dir=str(run_dir), model=str(record["model"]), weights=str(weights),
        weights_sha256=record["weights_sha256"], tiling=tiles, slicing=slicing, film_px=int(record["film_px"]),
        categories=tuple(sorted(categories)), unseen_classes=tuple(record.get("unseen_classes") or ()),
        recipe_name=str(record.get("recipe_name") or ""), recipe_sha256=str(record.get("recipe_sha256") or ""),
        compute={k: float(compute.get(k) or 0.0) for k in ("cpu_seconds", "accelerator_seconds", "wall_seconds")},
    )


def check_start_weights(start: DetectorStart) -> Path:
    """The start's weights file after checking its bytes against the record (and, for YOLO, the restricted loader).

    Raises:
        UserInputError: a missing file, bytes that differ from the record's SHA-256, or a checkpoint the
            restricted loader refuses.
    """
    from rfo_bench.detectors.provenance import verify_weights
    from rfo_bench.detectors.registry import get_detector

    weights = Path(start.weights)
    if not weights.is_file():
        raise UserInputError("weights file of the trained detector is missing", file=weights, field="weights")
    verify_weights(weights, start.weights_sha256, required=True)
    if get_detector(start.model).family != "torchvision":
        from rfo_bench.detectors.ultralytics_setup import check_yolo_checkpoint

        check_yolo_checkpoint(weights)
    return weights

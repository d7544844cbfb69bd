"""``rfo-bench benchmark``: models x data arms x seeds, evaluated, ranked and plotted.

One YAML file (see ``configs/benchmark_cpu.yaml``) fixes everything a leaderboard depends on: the
ground truth (``data.train`` / ``data.test``, or ``data.build`` to synthesise a held-out benchmark),
the models with their recipes, the data arms, the seeds, the generators' command lines and the
bootstrap. ``leaderboard.json`` records that configuration, the seeds, the file hashes of the data and
the library versions, so ``rfo-bench benchmark --config FILE`` regenerates the table.

Data arms (training data; the test set is always the same held-out real test split):

========================  ==========================================================
``real``                  the real training split
``real+physics``          real training split + physics-generated synthetic images
``real+diffusion``        real training split + diffusion-generated synthetic images
``synthetic_only``        the synthetic images only (generator: ``synthetic_only_from``)
========================  ==========================================================

Synthetic images are generated **only from training backgrounds**: the negative images (no
annotated object) of the real training split are written to ``<out>/backgrounds/train`` and that
directory is the only background source handed to a generator. The training and test splits must be
patient-disjoint (checked when both carry patient ids). An arm whose generator is not installed
(its ``rfo-synth`` sub-command is absent) or fails is skipped, and the leaderboard says why; it runs on
the next invocation once the generator exists.

Every finished run keeps ``metrics.json`` in its directory and is reused on the next invocation
when its resolved configuration is unchanged (``--force`` re-runs it), so an interrupted benchmark
resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shlex
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import claim_output_dir, release_output_dir, remove_owned
from toolkit_core.utils import atomic_write_bytes, sha256_file, sha256_text

logger = logging.getLogger(__name__)

BENCHMARK_TOOL = "rfo-bench benchmark"
"""The tool name recorded in the benchmark output folder's ownership marker."""

ARMS = ("real", "real+physics", "real+diffusion", "synthetic_only")
ARM_GENERATORS = {"real": (), "real+physics": ("physics",), "real+diffusion": ("diffusion",)}
METRICS = ("AP50", "AP", "FROC", "AUROC")

DEFAULT_GENERATOR_COMMANDS: dict[str, tuple[str, ...]] = {
    "physics": ("physics --n {n} --out {out} --seed {seed} --backgrounds {backgrounds}",),
    "diffusion": (
        "diffusion train --data {train_dir} --out {work}/ckpt --seed {seed}",
        "diffusion sample --ckpt {work}/ckpt --backgrounds {backgrounds} --n {n} --out {out} --seed {seed}",
    ),
}
"""``rfo-synth`` command templates run in order per generator. Placeholders: ``{n}``, ``{seed}``,
``{out}`` (where the COCO ``annotations.json`` must end up), ``{work}`` (scratch directory, e.g. a
checkpoint), ``{backgrounds}`` (directory of 16-bit PNG training backgrounds), ``{backgrounds_json}``
(the same as a COCO file without annotations), ``{train_json}`` / ``{train_dir}`` (the real training
split, for generators that learn from it)."""


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ModelEntry:
    """One leaderboard model: a registered detector with its recipe.

    Attributes:
        name: registered detector name.
        recipe: recipe preset name.
        overrides: recipe fields to override (e.g. ``{"epochs": 3}``).
        backbone: timm backbone (torchvision family).
        weights: optional local weights file.
        label: the row label (default: ``name`` or ``name/backbone``).
    """

    name: str
    recipe: str = "cpu-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    backbone: str = "resnet18"
    weights: str | None = None
    label: str = ""

    @property
    def display(self) -> str:
        from rfo_bench.detectors.registry import get_detector

        if self.label:
            return self.label
        return f"{self.name}/{self.backbone}" if get_detector(self.name).family == "torchvision" else self.name


@dataclass(frozen=True)
class GeneratorEntry:
    """How to call one synthetic-data generator.

    Attributes:
        name: ``physics`` or ``diffusion`` (or any name whose ``commands`` are given).
        n: number of synthetic images.
        seed: generator seed (one synthetic set per benchmark, shared by all training seeds).
        commands: ``rfo-synth`` command templates (see :data:`DEFAULT_GENERATOR_COMMANDS`).
    """

    name: str
    n: int = 32
    seed: int = 1000
    commands: tuple[str, ...] = ()

    def argvs(self, **paths: Path) -> list[list[str]]:
        """The filled-in argument lists, in order (``paths``: the placeholders other than n and seed)."""
        templates = self.commands or DEFAULT_GENERATOR_COMMANDS.get(self.name, ())
        if not templates:
            raise UserInputError("no command template for this generator; give 'commands'",
                                 field=f"generators.{self.name}.commands")
        values = {"n": str(self.n), "seed": str(self.seed), **{k: str(v) for k, v in paths.items()}}
        try:
            return [[part.format(**values) for part in shlex.split(t)] for t in templates]
        except (KeyError, IndexError) as err:
            raise UserInputError(f"unknown placeholder {err} in a command template",
                                 field=f"generators.{self.name}.commands", value=list(templates)) from None


@dataclass(frozen=True)
class BuildEntry:
    """A synthetic benchmark with held-out backgrounds (when no real data is given).

    The embedded real radiograph is cut into square tiles assigned to train or test in a
    checkerboard pattern with a guard band, so no test pixel is ever part of a training background;
    each tile is one pseudo-patient. The generator ``generator`` renders RFOs onto each pool.

    Attributes:
        generator: generator name whose command renders the benchmark images.
        n_train: training images.
        n_test: test images.
        tile_px: tile side in pixels of the embedded radiograph.
        guard_px: pixels dropped around every tile (no shared edge between pools).
        seed_train: generator seed for the training split.
        seed_test: generator seed for the test split.
    """

    generator: str = "physics"
    n_train: int = 48
    n_test: int = 48
    tile_px: int = 448
    guard_px: int = 32
    seed_train: int = 11
    seed_test: int = 12


@dataclass(frozen=True)
class BenchmarkConfig:
    """A complete, reproducible benchmark definition (see the module docstring)."""

    name: str
    out: str
    seeds: tuple[int, ...]
    models: tuple[ModelEntry, ...]
    arms: tuple[str, ...]
    train: str | None = None
    test: str | None = None
    build: BuildEntry | None = None
    generators: tuple[GeneratorEntry, ...] = ()
    synthetic_only_from: str = "physics"
    bootstrap: int = 200
    device: str = "cpu"
    source: str = ""

    def generator(self, name: str) -> GeneratorEntry:
        for entry in self.generators:
            if entry.name == name:
                return entry
        return GeneratorEntry(name=name)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        return data


def _typed(value: Any, kind: type | tuple[type, ...], where: str, file: str) -> Any:
    if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserInputError(f"expected {names}", file=file, field=where, value=value)
    return value


def _known_keys(section: dict[str, Any], allowed: set[str], where: str, file: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise UserInputError("unknown key(s) " + ", ".join(unknown) + "; allowed: " + ", ".join(sorted(allowed)),
                             file=file, field=where)


def parse_benchmark_config(data: Any, *, file: str = "<config>", base_dir: Path | None = None) -> BenchmarkConfig:
    """Validate a parsed YAML mapping into a :class:`BenchmarkConfig`.

    Relative data paths are resolved against ``base_dir`` (the config's directory's parent is *not*
    assumed: paths are relative to the current directory unless ``base_dir`` is given).

    Raises:
        UserInputError: naming the file and the field of the first problem.
    """
    from rfo_bench.detectors.config import recipe_with_overrides
    from rfo_bench.detectors.registry import get_detector

    if not isinstance(data, dict):
        raise UserInputError("expected a YAML mapping", file=file)
    _known_keys(data, {"name", "out", "seeds", "models", "arms", "data", "generators", "synthetic_only_from",
                       "bootstrap", "device"}, "<top level>", file)
    name = str(data.get("name", Path(file).stem))
    seeds = tuple(_typed(s, int, "seeds", file) for s in _typed(data.get("seeds", [0]), list, "seeds", file))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserInputError("seeds must be a non-empty list of distinct non-negative integers", file=file,
                             field="seeds", value=list(seeds))
    models = []
    for index, item in enumerate(_typed(data.get("models"), list, "models", file)):
        where = f"models[{index}]"
        if isinstance(item, str):
            item = {"name": item}
        _typed(item, dict, where, file)
        _known_keys(item, {"name", "recipe", "overrides", "backbone", "weights", "label"}, where, file)
        entry = ModelEntry(
            name=str(item.get("name")), recipe=str(item.get("recipe", "cpu-tiny")),
            overrides=dict(_typed(item.get("overrides", {}) or {}, dict, f"{where}.overrides", file)),
            backbone=str(item.get("backbone", "resnet18")), weights=item.get("weights"),
            label=str(item.get("label", "")),
        )
        try:
            get_detector(entry.name)
            recipe_with_overrides(entry.recipe, entry.overrides)
        except UserInputError as err:
            raise UserInputError(err.message, file=file, field=f"{where}.{err.field or 'name'}",
                                 value=err.value) from None
        models.append(entry)
    if not models:
        raise UserInputError("list at least one model", file=file, field="models")
    labels = [m.display for m in models]
    if len(set(labels)) != len(labels):
        raise UserInputError("two models share a row label; give each a distinct 'label'", file=file,
                             field="models", value=labels)
    arms = tuple(str(a) for a in _typed(data.get("arms", list(ARMS)), list, "arms", file))
    for arm in arms:
        if arm not in ARMS:
            raise UserInputError("unknown arm; expected one of: " + ", ".join(ARMS), file=file, field="arms", value=arm)
    data_section = _typed(data.get("data"), dict, "data", file)
    _known_keys(data_section, {"train", "test", "build"}, "data", file)
    base = base_dir or Path.cwd()

    def _path(key: str) -> str | None:
        value = data_section.get(key)
        if value is None:
            return None
        path = Path(str(value)).expanduser()
        return str(path if path.is_absolute() else (base / path))

    train, test = _path("train"), _path("test")
    build = None
    if "build" in data_section:
        section = _typed(data_section["build"] or {}, dict, "data.build", file)
        _known_keys(section, set(BuildEntry.__dataclass_fields__), "data.build", file)
        build = BuildEntry(**section)
        if train or test:
            raise UserInputError("give either data.train + data.test or data.build, not both", file=file,
                                 field="data")
    elif not (train and test):
        raise UserInputError("data needs both 'train' and 'test' (or a 'build' section)", file=file, field="data")
    generators = []
    for gen_name, section in (_typed(data.get("generators", {}) or {}, dict, "generators", file)).items():
        section = _typed(section or {}, dict, f"generators.{gen_name}", file)
        _known_keys(section, {"n", "seed", "commands"}, f"generators.{gen_name}", file)
        commands = section.get("commands", ())
        if isinstance(commands, str):
            commands = [commands]
        _typed(commands, (list, tuple), f"generators.{gen_name}.commands", file)
        generators.append(GeneratorEntry(
            name=str(gen_name), n=_typed(section.get("n", 32), int, f"generators.{gen_name}.n", file),
            seed=_typed(section.get("seed", 1000), int, f"generators.{gen_name}.seed", file),
            commands=tuple(str(c) for c in commands),
        ))
    bootstrap = _typed(data.get("bootstrap", 200), int, "bootstrap", file)
    if bootstrap < 0:
        raise UserInputError("bootstrap replicates must be >= 0", file=file, field="bootstrap", value=bootstrap)
    return BenchmarkConfig(
        name=name, out=str(data.get("out", f"runs/benchmark_{name}")), seeds=seeds, models=tuple(models),
        arms=arms, train=train, test=test, build=build, generators=tuple(generators),
        synthetic_only_from=str(data.get("synthetic_only_from", "physics")), bootstrap=bootstrap,
        device=str(data.get("device", "cpu")), source=file,
    )


def with_arms(config: BenchmarkConfig, arms: str | Sequence[str]) -> BenchmarkConfig:
    """``config`` restricted to a subset of its arms (comma-separated string or sequence), order kept.

    Raises:
        UserInputError: an arm the config does not list.
    """
    from dataclasses import replace

    wanted = [a.strip() for a in (arms.split(",") if isinstance(arms, str) else arms) if a.strip()]
    unknown = [a for a in wanted if a not in config.arms]
    if unknown or not wanted:
        raise UserInputError("arms must be a subset of the config's arms: " + ", ".join(config.arms),
                             field="--arms", value=unknown or wanted)
    return replace(config, arms=tuple(a for a in config.arms if a in wanted))


def with_models(config: BenchmarkConfig, models: str | Sequence[str]) -> BenchmarkConfig:
    """``config`` restricted to some of its model rows, named by row label (or registry name), order kept.

    Raises:
        UserInputError: a name matching no model of the config.
    """
    from dataclasses import replace

    wanted = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    chosen = tuple(m for m in config.models if m.display in wanted or m.name in wanted)
    unknown = [w for w in wanted if not any(w in (m.display, m.name) for m in config.models)]
    if unknown or not chosen:
        raise UserInputError("models must name rows of the config: " + ", ".join(m.display for m in config.models),
                             field="--models", value=unknown or wanted)
    return replace(config, models=chosen)


def with_seeds(config: BenchmarkConfig, seeds: str | Sequence[int]) -> BenchmarkConfig:
    """``config`` restricted to some of its seeds (comma-separated string or sequence).

    Raises:
        UserInputError: a seed the config does not list, or not an integer.
    """
    from dataclasses import replace

    try:
        wanted = [int(s) for s in (seeds.split(",") if isinstance(seeds, str) else seeds) if str(s).strip()]
    except ValueError:
        raise UserInputError("seeds must be integers", field="--seeds", value=seeds) from None
    unknown = [s for s in wanted if s not in config.seeds]
    if unknown or not wanted:
        raise UserInputError("seeds must be a subset of the config's seeds: " + ", ".join(map(str, config.seeds)),
                             field="--seeds", value=unknown or wanted)
    return replace(config, seeds=tuple(s for s in config.seeds if s in wanted))


def load_benchmark_config(path: str | os.PathLike[str]) -> BenchmarkConfig:
    """Read and validate a benchmark YAML (data paths relative to the current directory)."""
    import yaml

    file = Path(path)
    if not file.is_file():
        raise UserInputError("benchmark config does not exist", file=file)
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise UserInputError(f"not valid YAML: {err}".splitlines()[0], file=file) from None
    return parse_benchmark_config(data, file=str(file))


# --------------------------------------------------------------------------------------------- data
def heldout_tiles(height: int, width: int, tile_px: int, guard_px: int) -> list[tuple[str, int, int, int, int]]:
    """Checkerboard tiling of an image into train / test tiles with a guard band.

    Args:
        height: image rows.
        width: image columns.
        tile_px: side of a grid cell in pixels.
        guard_px: pixels removed on every side of a cell, so neighbouring train and test tiles share
            no pixel and no edge.

    Returns:
        ``(split, row0, col0, row1, col1)`` per tile (half-open pixel ranges), ``split`` ``train`` for
        cells with even ``row + col`` index, ``test`` otherwise.
    """
    if tile_px <= 2 * guard_px + 8:
        raise UserInputError("tile_px must exceed twice guard_px by at least 8", field="data.build.tile_px",
                             value=tile_px)
    tiles = []
    for i in range(height // tile_px):
        for j in range(width // tile_px):
            r0, c0 = i * tile_px + guard_px, j * tile_px + guard_px
            r1, c1 = (i + 1) * tile_px - guard_px, (j + 1) * tile_px - guard_px
            tiles.append(("train" if (i + j) % 2 == 0 else "test", r0, c0, r1, c1))
    return tiles


def _write_background_pool(images: Sequence[tuple[str, np.ndarray]], directory: Path,
                           spacings_mm: Sequence[float | None] | None = None) -> Path:
    """Write ``(stem, float32 [H, W])`` backgrounds as 16-bit PNGs + a COCO file without annotations.

    ``spacings_mm`` (one per image, ``None`` when unknown) goes into ``images[].pixel_spacing_mm``: a PNG
    carries no spacing, and a generator that scales objects by it (diffusion) reads it from there.
    """
    from rfo_bench.categories import coco_categories
    from rfo_bench.io.images import write_png16

    remove_owned(directory)
    directory.mkdir(parents=True)
    entries = []
    for index, (stem, pixels) in enumerate(images, start=1):
        write_png16(directory / f"{stem}.png", pixels)
        entry = {"id": index, "file_name": f"{stem}.png", "width": int(pixels.shape[1]),
                 "height": int(pixels.shape[0]), "patient_id": stem}
        spacing = spacings_mm[index - 1] if spacings_mm is not None else None
        if spacing is not None:
            entry["pixel_spacing_mm"] = float(spacing)
        entries.append(entry)
    coco = {"images": entries, "annotations": [], "categories": coco_categories()}
    atomic_write_bytes(directory / "backgrounds.json", json.dumps(coco, indent=1).encode("utf-8"))
    return directory


@dataclass
class _Notes:
    lines: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        logger.warning("%s", text)
        self.lines.append(text)


def _generator_available(argv: Sequence[str]) -> bool:
    """Whether ``rfo-synth`` has the (nested) sub-command ``argv`` starts with."""
    import argparse

    from synth.cli import build_parser

    parser = build_parser()
    for token in argv:
        actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not actions:
            return True
        if token not in actions[0].choices:
            return False
        parser = actions[0].choices[token]
    return True


def synth_main(argv: Sequence[str]) -> int:
    """Run one ``rfo-synth`` command in this process; its exit code."""
    from synth.cli import build_parser
    from toolkit_core.cli_support import run_cli

    return run_cli(build_parser(), argv)


def run_generator(
    entry: GeneratorEntry, *, out: Path, backgrounds: Path, train_json: Path | None = None
) -> DetectionDataset:
    """Run a generator's ``rfo-synth`` commands and read the COCO set the last one wrote to ``out``.

    A finished set (same filled-in commands) is reused.

    Raises:
        RuntimeError: a command is not available, exits with an error, or no images were written (the
            message is what the leaderboard shows).
    """
    import contextlib
    import io


    work = out.parent / f"{out.name}_work"
    paths: dict[str, Path] = {"out": out, "work": work, "backgrounds": backgrounds,
                              "backgrounds_json": backgrounds / "backgrounds.json"}
    if train_json is not None:
        paths.update(train_json=train_json, train_dir=train_json.parent)
    try:
        argvs = entry.argvs(**paths)
    except UserInputError as err:
        raise RuntimeError(str(err)) from None
    for argv in argvs:
        subcommand = [a for a in argv[:2] if not a.startswith("-")]
        if not _generator_available(subcommand):
            raise RuntimeError(f"generator `rfo-synth {' '.join(subcommand)}` is not available in this installation")
    annotations = out / "annotations.json"
    stamp = out / ".generator.json"
    wanted = {"commands": argvs}
    if annotations.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        logger.info("reusing synthetic set %s", out)
        return read_generated_set(annotations, entry.name)
    for directory in (out, work):
        remove_owned(directory)
    work.mkdir(parents=True)
    start = time.perf_counter()
    for argv in argvs:
        logger.info("generating: rfo-synth %s", shlex.join(argv))
        captured = io.StringIO()
        with contextlib.redirect_stderr(captured):
            code = synth_main(argv)
        if code != 0:
            last = (captured.getvalue().strip().splitlines() or [f"exit code {code}"])[-1]
            raise RuntimeError(f"`rfo-synth {shlex.join(argv[:2])} ...` failed: {last}")
    if not annotations.is_file():
        raise RuntimeError(f"`rfo-synth {entry.name}` wrote no {annotations.name} in {out}")
    dataset = read_generated_set(annotations, entry.name)
    if not len(dataset):
        raise RuntimeError(f"`rfo-synth {entry.name}` wrote an empty dataset")
    atomic_write_bytes(stamp, json.dumps(wanted).encode("utf-8"))
    logger.info("generated %d %s images in %.1f s", len(dataset), entry.name, time.perf_counter() - start)
    return dataset


def read_generated_set(annotations: Path, name: str) -> DetectionDataset:
    """Read a generator's COCO file, checking that every image it lists exists.

    ``file_name`` entries are resolved against the json's folder, or against its ``images/`` folder when
    all of them are found there (the two layouts ``rfo-synth`` readers accept).

    Raises:
        RuntimeError: an image is missing under both roots (the arm is skipped with this message rather
            than failing in the middle of training).
    """
    from rfo_bench.io.coco import read_coco

    dataset = read_coco(annotations)

    def missing(root: Path) -> list[str]:
        return [r.file_name for r in dataset.images if not (root / r.file_name).is_file()]

    absent = missing(dataset.root)
    if not absent:
        return dataset
    if not missing(annotations.parent / "images"):
        return read_coco(annotations, root=annotations.parent / "images")
    raise RuntimeError(f"`rfo-synth {name}` listed images that do not exist, e.g. {dataset.root / absent[0]}")


def build_heldout_benchmark(config: BenchmarkConfig, out: Path) -> tuple[Path, Path, Path]:
    """Render the ``data.build`` benchmark; returns ``(train json, test json, training backgrounds dir)``."""
    from rfo_bench.io.embedded import load_embedded_radiograph

    build = config.build
    assert build is not None
    image = load_embedded_radiograph().pixels
    pools: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for split, r0, c0, r1, c1 in heldout_tiles(*image.shape[:2], build.tile_px, build.guard_px):
        pools[split].append((f"tile_r{r0:04d}_c{c0:04d}", image[r0:r1, c0:c1]))
    paths = {}
    generator = config.generator(build.generator)
    for split, n, seed in (("train", build.n_train, build.seed_train), ("test", build.n_test, build.seed_test)):
        pool = _write_background_pool(pools[split], out / "benchmark" / "backgrounds" / split)
        entry = GeneratorEntry(name=generator.name, n=n, seed=seed, commands=generator.commands)
        try:
            dataset = run_generator(entry, out=out / "benchmark" / split, backgrounds=pool)
        except RuntimeError as err:
            raise UserInputError(f"cannot build the held-out benchmark: {err}", file=config.source or None,
                                 field="data.build") from None
        paths[split] = _with_tile_patients(Path(dataset.source))
    logger.info("held-out benchmark: %d train tiles, %d test tiles", len(pools["train"]), len(pools["test"]))
    return paths["train"], paths["test"], out / "benchmark" / "backgrounds" / "train"


def _with_tile_patients(annotations: Path) -> Path:
    """Copy of a generated COCO file whose ``patient_id`` is the background tile each image was drawn on.

    The generators record the background file of every image (``images[].background``); a tile is the
    pseudo-patient of the held-out benchmark, so the bootstrap resamples tiles, not images.
    """
    data = json.loads(annotations.read_text(encoding="utf-8"))
    for image in data.get("images", []):
        background = image.get("background")
        if background and not image.get("patient_id"):
            image["patient_id"] = Path(str(background)).stem
    target = annotations.with_name("benchmark.json")
    atomic_write_bytes(target, json.dumps(data).encode("utf-8"))
    return target


def check_patient_disjoint(train: DetectionDataset, test: DetectionDataset) -> int:
    """Refuse a patient in both splits; returns the number of test patients (0 when ids are absent)."""
    train_ids = {r.patient_id for r in train.images if r.patient_id}
    test_ids = {r.patient_id for r in test.images if r.patient_id}
    shared = sorted(train_ids & test_ids)
    if shared:
        raise UserInputError(
            f"{len(shared)} patient(s) appear in both the training and the test split; use a patient-level split",
            file=test.source or None, field="patient_id", value=shared[:5],
        )
    if not test_ids:
        logger.warning("test set has no patient ids; the bootstrap resamples images")
    return len(test_ids)


def training_backgrounds(train: DetectionDataset, directory: Path) -> Path | None:
    """Write the training split's negative images as the generators' only background pool (None if none)."""
    from rfo_bench.detectors.data import load_pixels

    negatives = [r for r in train.images if not r.objects and not r.positive]
    if not negatives:
        return None
    recorded = _recorded_spacings(Path(train.source)) if train.source else {}
    return _write_background_pool([(f"train_{r.image_id:08d}", load_pixels(train, r)) for r in negatives], directory,
                                  [recorded.get(r.image_id) for r in negatives])


def _recorded_spacings(source: Path) -> dict[int, float]:
    """``images[].pixel_spacing_mm`` of a COCO file by image id (isotropic mean); empty for other sources."""
    if source.suffix.lower() != ".json" or not source.is_file():
        return {}
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    out = {}
    for entry in document.get("images", []) if isinstance(document, dict) else []:
        value = entry.get("pixel_spacing_mm") if isinstance(entry, dict) else None
        values = value if isinstance(value, list) else [value]
        if values and all(isinstance(v, (int, float)) and v > 0 for v in values) and "id" in entry:
            out[int(entry["id"])] = float(np.mean(values))
    return out


# --------------------------------------------------------------------------------------------- runs
@dataclass(frozen=True)
class RunMetrics:
    """Evaluation of one trained run on the test split.

    Attributes:
        values: metric name (:data:`METRICS`) -> point estimate (NaN when undefined).
        intervals: metric name -> ``(low, high)`` 95 % bootstrap interval (NaN when not computed).
        froc_fp_per_image: FROC operating points (false positives per image).
        froc_sensitivity: sensitivity at each operating point.
    """

    values: dict[str, float]
    intervals: dict[str, tuple[float, float]]
    froc_fp_per_image: tuple[float, ...]
    froc_sensitivity: tuple[float, ...]


def evaluate_run(test_json: Path, predictions_dir: Path, *, bootstrap: int, seed: int,
                 report_dir: Path | None = None) -> RunMetrics:
    """Evaluate one run with the toolkit's evaluator (what ``rfo-bench eval`` computes).

    Box metrics come from ``predictions.json``; AUROC from ``classification.csv`` against the
    "critical RFO present" image label. The full evaluation report is written to ``report_dir``.
    """
    from rfo_bench.detectors.predict import CLASSIFICATION_CSV, PREDICTIONS_JSON
    from rfo_bench.evaluate import EvalConfig, evaluate_detailed, write_report
    from rfo_bench.io.formats import read_dataset
    from rfo_bench.predictions import read_predictions

    gt = read_dataset(test_json)
    predictions = read_predictions(predictions_dir / PREDICTIONS_JSON, gt,
                                   classification=predictions_dir / CLASSIFICATION_CSV)
    evaluation = evaluate_detailed(gt, predictions, EvalConfig(bootstrap=bootstrap, seed=seed,
                                                               auroc_positive="critical"))
    if report_dir is not None:
        write_report(evaluation, report_dir, gt, predictions, plots=False)
    return metrics_from_report(evaluation.report)


def metrics_from_report(report: dict[str, Any]) -> RunMetrics:
    """The leaderboard's view of an evaluation report (undefined values, COCO's -1 included, become NaN)."""
    nan = float("nan")

    def number(value: Any) -> float:
        return nan if value is None or value < 0 else float(value)

    coco = report.get("coco") or {}
    froc = report.get("froc") or {}
    values = {"AP50": number(coco.get("AP50")), "AP": number(coco.get("AP")), "FROC": number(froc.get("score")),
              "AUROC": number(report.get("auroc"))}
    ci = report.get("ci95") or {}
    intervals = {}
    for metric, key in (("AP50", "AP50"), ("AP", "AP"), ("FROC", "froc"), ("AUROC", "auroc")):
        pair = ci.get(key)
        intervals[metric] = (number(pair[0]), number(pair[1])) if pair else (nan, nan)
    return RunMetrics(values=values, intervals=intervals,
                      froc_fp_per_image=tuple(float(f) for f in froc.get("fps_per_image", ())),
                      froc_sensitivity=tuple(number(v) for v in froc.get("sensitivity", ())))


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)


@dataclass(frozen=True)
class RunOutcome:
    """One (model, arm, seed) cell of the benchmark."""

    model: str
    arm: str
    seed: int
    run_dir: str
    train_seconds: float
    train_images: int
    metrics: RunMetrics


def _run_one(
    entry: ModelEntry, arm: str, seed: int, train_sets: Sequence[DetectionDataset], test: DetectionDataset,
    config: BenchmarkConfig, run_dir: Path, fingerprint: dict[str, Any], *, force: bool, progress: bool,
) -> RunOutcome:
    from rfo_bench.detectors.api import load_detector, train_detector
    from rfo_bench.detectors.config import TrainConfig, recipe_with_overrides
    from rfo_bench.detectors.predict import predict_dataset, write_predictions

    result_file = run_dir / "metrics.json"
    key = sha256_text(json.dumps(fingerprint, sort_keys=True))
    if result_file.is_file() and not force:
        saved = json.loads(result_file.read_text(encoding="utf-8"))
        if saved.get("key") == key:
            logger.info("reusing finished run %s", run_dir)
            return _outcome_from_json(saved["outcome"])
    recipe = recipe_with_overrides(entry.recipe, entry.overrides)
    train_config = TrainConfig(model=entry.name, recipe=recipe, seed=seed, backbone=entry.backbone,
                               weights=entry.weights, device=config.device)
    trained = train_detector(train_config, train_sets, run_dir / "model", progress=progress)
    detector = load_detector(trained.run_dir)
    predictions = predict_dataset(detector, test, progress=progress)
    write_predictions(predictions, detector.categories, run_dir / "predictions",
                      coco_category_ids={c.id for c in test.categories})
    metrics = evaluate_run(Path(test.source), run_dir / "predictions", bootstrap=config.bootstrap, seed=seed,
                           report_dir=run_dir / "eval")
    outcome = RunOutcome(model=entry.display, arm=arm, seed=seed, run_dir=str(run_dir),
                         train_seconds=trained.train_seconds, train_images=trained.record["train_images"],
                         metrics=metrics)
    payload = {"key": key, "fingerprint": fingerprint, "outcome": _outcome_to_json(outcome)}
    atomic_write_bytes(result_file, json.dumps(payload, indent=2).encode("utf-8"))
    return outcome


def _outcome_to_json(outcome: RunOutcome) -> dict[str, Any]:
    data = asdict(outcome)
    data["metrics"]["intervals"] = {k: list(v) for k, v in outcome.metrics.intervals.items()}
    return _finite_or_none(data)


def _outcome_from_json(data: dict[str, Any]) -> RunOutcome:
    m = data["metrics"]
    nan = float("nan")
    metrics = RunMetrics(
        values={k: nan if v is None else float(v) for k, v in m["values"].items()},
        intervals={k: (nan if v[0] is None else v[0], nan if v[1] is None else v[1]) for k, v in m["intervals"].items()},
        froc_fp_per_image=tuple(m["froc_fp_per_image"]), froc_sensitivity=tuple(
            nan if v is None else v for v in m["froc_sensitivity"]),
    )
    return RunOutcome(**{**data, "metrics": metrics})


def _finite_or_none(value: Any) -> Any:
    """JSON-safe copy: NaN / inf become ``None``."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_or_none(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------- summary
def summarize_seeds(values: Sequence[float]) -> tuple[float, float]:
    """``(mean, sample standard deviation)`` over seeds, ignoring NaN; std is 0 for one value, NaN for none."""
    array = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if array.size == 0:
        return float("nan"), float("nan")
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def aggregate(outcomes: Sequence[RunOutcome]) -> list[dict[str, Any]]:
    """One leaderboard row per (model, arm): mean ± std over seeds, mean per-seed 95 % CI bounds, seconds.

    Rows keep the order in which (model, arm) first appears in ``outcomes``.
    """
    groups: dict[tuple[str, str], list[RunOutcome]] = {}
    for outcome in outcomes:
        groups.setdefault((outcome.model, outcome.arm), []).append(outcome)
    rows = []
    for (model, arm), runs in groups.items():
        row: dict[str, Any] = {"model": model, "arm": arm, "seeds": [r.seed for r in runs],
                               "train_images": runs[0].train_images}
        for metric in METRICS:
            mean, std = summarize_seeds([r.metrics.values.get(metric, float("nan")) for r in runs])
            lows = [r.metrics.intervals.get(metric, (float("nan"),) * 2)[0] for r in runs]
            highs = [r.metrics.intervals.get(metric, (float("nan"),) * 2)[1] for r in runs]
            row[metric] = {"mean": mean, "std": std, "ci95": [summarize_seeds(lows)[0], summarize_seeds(highs)[0]],
                           "per_seed": [r.metrics.values.get(metric, float("nan")) for r in runs]}
        row["train_seconds"] = dict(zip(("mean", "std"), summarize_seeds([r.train_seconds for r in runs]),
                                        strict=True))
        fps = runs[0].metrics.froc_fp_per_image
        sens = np.array([r.metrics.froc_sensitivity for r in runs], dtype=np.float64)
        row["froc_curve"] = {"fp_per_image": list(fps), "sensitivity": list(np.nanmean(sens, axis=0))
                             if sens.size else []}
        rows.append(row)
    return rows


def _cell(metric: dict[str, Any]) -> str:
    mean, std, (low, high) = metric["mean"], metric["std"], metric["ci95"]
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.3f}" if len(metric["per_seed"]) == 1 else f"{mean:.3f} ± {std:.3f}"  # no spread from one seed
    if not (math.isnan(low) or math.isnan(high)):
        text += f" [{low:.3f}, {high:.3f}]"
    return text


def render_markdown(summary: dict[str, Any]) -> str:
    """The leaderboard as a Markdown document (see :func:`run_benchmark` for ``summary``)."""
    lines = [f"# Leaderboard: {summary['name']}", ""]
    data = summary["data"]
    lines += [
        f"Test split: {data['test_images']} images ({data['test_positive_images']} with an RFO, "
        f"{data['test_objects']} objects, {data['test_patients']} patients), never used for training or as a "
        f"synthetic background. Real training split: {data['train_images']} images.",
        "",
        f"Cells: mean ± sample std over seeds {summary['seeds']} (the value itself for one seed), then the mean of "
        "the per-seed 95 % bootstrap "
        f"intervals over test patients ({summary['bootstrap']} replicates). AP = COCO AP@[.5:.95]; FROC = mean "
        "sensitivity at 1/8..8 false positives per image (object-CXR protocol); AUROC = image-level, critical RFO "
        "present.",
        "",
        "| Model | Arm | Train images | AP50 | AP | FROC | AUROC | Train s |",
        "|---|---|---:|---|---|---|---|---:|",
    ]
    for row in summary["rows"]:
        cells = [_cell(row[m]) for m in METRICS]
        seconds = row["train_seconds"]["mean"]
        lines.append(f"| {row['model']} | {row['arm']} | {row['train_images']} | " + " | ".join(cells)
                     + f" | {seconds:.0f} |")
    if summary["notes"]:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in summary["notes"]]
    lines += ["", f"FROC curves per arm: `{summary['plot']}`.", "",
              f"Regenerate: `{summary['command']}`", ""]
    return "\n".join(lines)


def plot_froc(rows: Sequence[dict[str, Any]], arms: Sequence[str], path: Path) -> Path | None:
    """One panel per arm, one FROC curve (sensitivity vs false positives per image) per model."""
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state is touched

    present = [a for a in arms if any(r["arm"] == a for r in rows)]
    if not present:
        return None
    fig = Figure(figsize=(4.2 * len(present), 3.6))
    axes = fig.subplots(1, len(present), squeeze=False, sharey=True)
    for ax, arm in zip(axes[0], present, strict=True):
        for row in rows:
            if row["arm"] != arm or not row["froc_curve"]["fp_per_image"]:
                continue
            ax.plot(row["froc_curve"]["fp_per_image"], row["froc_curve"]["sensitivity"], marker="o", label=row["model"])
        ax.set_xscale("log", base=2)
        ticks = sorted({f for row in rows for f in row["froc_curve"]["fp_per_image"]})
        if ticks:
            ax.set_xticks(ticks, [f"1/{round(1 / t)}" if t < 1 else f"{t:g}" for t in ticks])
        ax.set_title(arm)
        ax.set_xlabel("false positives per image")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("sensitivity")
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


# --------------------------------------------------------------------------------------------- driver
@dataclass(frozen=True)
class BenchmarkResult:
    """Files written by :func:`run_benchmark` and the summary they hold."""

    out_dir: Path
    markdown_path: Path
    json_path: Path
    plot_path: Path | None
    summary: dict[str, Any]


def _versions() -> dict[str, str]:
    from importlib import metadata

    found = {"python": platform.python_version()}
    for package in ("torch", "torchvision", "timm", "ultralytics", "albumentations", "rfo-toolkit"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def _arm_training_sets(
    arm: str, config: BenchmarkConfig, real_train: DetectionDataset, synthetic: dict[str, DetectionDataset | str]
) -> list[DetectionDataset] | str:
    """Training datasets of an arm, or the reason it is skipped."""
    needed = ARM_GENERATORS.get(arm, (config.synthetic_only_from,))
    sets = [] if arm == "synthetic_only" else [real_train]
    for name in needed:
        got = synthetic.get(name)
        if got is None:
            return f"generator `{name}` was not configured"
        if isinstance(got, str):
            return got
        sets.append(got)
    return sets


def run_benchmark(
    config: BenchmarkConfig, *, out_dir: str | os.PathLike[str] | None = None, force: bool = False,
    progress: bool = True, command: str | None = None,
) -> BenchmarkResult:
    """Train, predict and evaluate every (model, arm, seed) of ``config`` and write the leaderboard.

    ``command`` is the command line recorded as the way to regenerate the leaderboard.

    Writes into ``out_dir`` (default ``config.out``): ``leaderboard.md``, ``leaderboard.json``,
    ``froc.png``, ``config.json`` and ``runs/<model>/<arm>/seed<k>/`` (trained model, predictions,
    ``metrics.json``).

    Raises:
        UserInputError: unreadable data, a patient shared by train and test, or a training split
            without positives.
    """
    from rfo_bench.detectors.config import recipe_with_overrides
    from rfo_bench.detectors.data import count_objects, require_trainable
    from rfo_bench.io.coco import read_coco

    out = claim_output_dir(out_dir or config.out, BENCHMARK_TOOL)
    notes = _Notes()
    start = time.perf_counter()
    backgrounds: Path | None
    if config.build is not None:
        train_path, test_path, backgrounds = build_heldout_benchmark(config, out)
        notes.lines.append(
            f"Benchmark built from held-out backgrounds: the embedded radiograph is cut into {config.build.tile_px}-px "
            f"cells assigned to train/test as a checkerboard with a {config.build.guard_px}-px guard band; the "
            f"`{config.build.generator}` generator renders RFOs onto each pool. Each tile is one pseudo-patient."
        )
    else:
        train_path, test_path, backgrounds = Path(config.train or ""), Path(config.test or ""), None
    real_train, test = read_coco(train_path), read_coco(test_path)
    require_trainable([real_train], what="training split")
    test_patients = check_patient_disjoint(real_train, test)
    if backgrounds is None:
        backgrounds = training_backgrounds(real_train, out / "backgrounds" / "train")

    synthetic: dict[str, DetectionDataset | str] = {}
    wanted = {g for arm in config.arms for g in ARM_GENERATORS.get(arm, (config.synthetic_only_from,))}
    for name in sorted(wanted):
        if backgrounds is None:
            synthetic[name] = "the training split has no negative image to use as a synthetic background"
            continue
        entry = config.generator(name)
        try:
            synthetic[name] = run_generator(entry, out=out / "synthetic" / name, backgrounds=backgrounds,
                                            train_json=train_path)
        except RuntimeError as err:
            synthetic[name] = str(err)
        except UserInputError as err:
            synthetic[name] = f"generator `{name}` refused its input: {err}"

    data_hashes = {"train": sha256_file(train_path), "test": sha256_file(test_path)}
    outcomes: list[RunOutcome] = []
    for arm in config.arms:
        sets = _arm_training_sets(arm, config, real_train, synthetic)
        if isinstance(sets, str):
            notes.add(f"arm `{arm}` skipped: {sets}")
            continue
        try:
            require_trainable(sets, what=f"training data of arm {arm}")
        except UserInputError as err:
            notes.add(f"arm `{arm}` skipped: {err}")
            continue
        synth_hashes = {d.source: sha256_file(d.source) for d in sets[(0 if arm == "synthetic_only" else 1):]}
        for entry in config.models:
            for seed in config.seeds:
                run_dir = out / "runs" / _slug(entry.display) / _slug(arm) / f"seed{seed}"
                fingerprint = {"model": asdict(entry), "arm": arm, "seed": seed, "data": data_hashes,
                               "recipe": recipe_with_overrides(entry.recipe, entry.overrides).to_dict(),
                               "synthetic": synth_hashes, "bootstrap": config.bootstrap, "device": config.device}
                logger.info("run %s | %s | seed %d", entry.display, arm, seed)
                outcomes.append(_run_one(entry, arm, seed, sets, test, config, run_dir, fingerprint,
                                         force=force, progress=progress))

    rows = aggregate(outcomes)
    plot_path = plot_froc(rows, config.arms, out / "froc.png")
    train_pos, _ = count_objects([real_train])
    test_pos, test_objects = count_objects([test])
    config_source = config.source or "CONFIG"
    summary = {
        "name": config.name,
        "command": command or (f"rfo-bench benchmark --config {config_source}" + (f" --out {out_dir}" if out_dir else "")),
        "config": config.to_dict(),
        "seeds": list(config.seeds),
        "bootstrap": config.bootstrap,
        "data": {"train": str(train_path), "test": str(test_path), "sha256": data_hashes,
                 "train_images": len(real_train), "train_positive_images": train_pos,
                 "test_images": len(test), "test_positive_images": test_pos, "test_objects": test_objects,
                 "test_patients": test_patients},
        "synthetic": {k: (v if isinstance(v, str) else {"source": v.source, "images": len(v)})
                      for k, v in synthetic.items()},
        "rows": rows,
        "runs": [_outcome_to_json(o) for o in outcomes],
        "notes": notes.lines,
        "plot": plot_path.name if plot_path else "none",
        "versions": _versions(),
        "seconds": time.perf_counter() - start,
    }
    markdown = render_markdown(summary)
    json_path, md_path = out / "leaderboard.json", out / "leaderboard.md"
    atomic_write_bytes(json_path, json.dumps(_finite_or_none(summary), indent=2).encode("utf-8"))
    atomic_write_bytes(md_path, markdown.encode("utf-8"))
    atomic_write_bytes(out / "config.json", json.dumps(config.to_dict(), indent=2).encode("utf-8"))
    release_output_dir(out, BENCHMARK_TOOL)
    logger.info("leaderboard written to %s (%.0f s)", md_path, summary["seconds"])
    return BenchmarkResult(out_dir=out, markdown_path=md_path, json_path=json_path, plot_path=plot_path,
                           summary=summary)

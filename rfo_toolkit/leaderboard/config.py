"""The benchmark definition: one YAML file, validated into frozen dataclasses.

:func:`load_benchmark_config` reads the file, :func:`parse_benchmark_config` checks every field (errors
name the file and the field), and :func:`with_arms` / :func:`with_models` / :func:`with_seeds`
restrict a configuration to what the command line asks for.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rfo_bench.detectors.shipped import DetectorStart
from rfo_bench.detectors.tiling import TileConfig
from rfo_bench.eval_config import BOOTSTRAP_UNITS
from toolkit_core.errors import UserInputError, expect_type

if TYPE_CHECKING:
    from rfo_bench.detectors.config import Recipe

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
split, for generators that learn from it), ``{imgsz}`` (the film side set by ``data.build.pixel_mm``)."""


@dataclass(frozen=True)
class ModelEntry:
    """One leaderboard model: a registered detector with its recipe, trained from scratch or from a start.

    Attributes:
        name: registered detector name (for a ``start`` entry: the start's model, which it defaults to).
        recipe: recipe preset name (for a ``start`` entry: the fine-tuning's; ``imgsz`` becomes the tile size).
        overrides: recipe fields to override (e.g. ``{"epochs": 3}``).
        backbone: timm backbone (torchvision family).
        weights: optional local weights file (a plain file, no record: a timm backbone or an Ultralytics ``.pt``).
        label: the row label (default: ``name`` or ``name/backbone``; ``+start`` for a ``start`` entry).
        tiling: train on tiles cut at the films' native spacing and predict sliced over whole films (a
            from-scratch entry; ``None``: whole images resized to ``imgsz``).
        start: a recipe-trained detector folder (``rfo-bench train --config RECIPE --out DIR``), or
            ``shipped``: the detector bundled with the toolkit (``rfo-bench bundle``). Every
            run of the entry fine-tunes that detector: its weights (checked against the record's SHA-256
            before any work), its tiling and bit depth, its slicing at prediction, and its unseen classes
            come from its ``detector.json`` (:func:`rfo_bench.detectors.shipped.read_detector_start`).
    """

    name: str
    recipe: str = "cpu-tiny"
    overrides: dict[str, Any] = field(default_factory=dict)
    backbone: str = "resnet18"
    weights: str | None = None
    label: str = ""
    tiling: TileConfig | None = None
    start: DetectorStart | None = None

    @property
    def display(self) -> str:
        from rfo_bench.detectors.registry import get_detector

        if self.label:
            return self.label
        base = f"{self.name}/{self.backbone}" if get_detector(self.name).family == "torchvision" else self.name
        return f"{base}+start" if self.start is not None else base

    @property
    def run_tiling(self) -> TileConfig | None:
        """The tiles the entry's runs train on: the start's, else the entry's own (``None``: whole images)."""
        return self.start.tiling if self.start is not None else self.tiling

    def train_recipe(self) -> Recipe:
        """The recipe of the entry's runs (with tiling, ``imgsz`` is the tile size)."""
        from rfo_bench.detectors.config import recipe_with_overrides

        tiling = self.run_tiling
        overrides = dict(self.overrides)
        if tiling is not None:
            overrides.setdefault("imgsz", tiling.tile_size)
        return recipe_with_overrides(self.recipe, overrides)

    def fingerprint(self) -> dict[str, Any]:
        """What the entry's results depend on (a from-scratch entry without tiling: what it always recorded)."""
        data = asdict(self)
        for key in ("tiling", "start"):
            if data[key] is None:
                data.pop(key)
        return data


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

    def takes(self, placeholder: str) -> bool:
        """Whether one of the command templates uses ``{placeholder}``."""
        templates = self.commands or DEFAULT_GENERATOR_COMMANDS.get(self.name, ())
        return any("{" + placeholder + "}" in t for t in templates)

    def argvs(self, **paths: object) -> list[list[str]]:
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
        pixel_mm: the films' resolution: ``native`` (a cell is rendered at its own pixel count, the
            radiograph's spacing), a number of mm per pixel (a cell of ``c`` px at spacing ``s`` mm is
            rendered at ``round(c * s / pixel_mm)`` px), or ``None`` (the generator commands state their
            own ``--imgsz``). When set, the generators' commands receive the film side as ``{imgsz}``.
    """

    generator: str = "physics"
    n_train: int = 48
    n_test: int = 48
    tile_px: int = 448
    guard_px: int = 32
    seed_train: int = 11
    seed_test: int = 12
    pixel_mm: str | float | None = None

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "tile_px", "guard_px", "seed_train", "seed_test"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserInputError("expected a non-negative integer", field=name, value=value)
        value = self.pixel_mm
        if value is not None and value != "native" and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.01 <= value <= 5.0):
            raise UserInputError("expected 'native' or a pixel size in mm between 0.01 and 5", field="pixel_mm",
                                 value=value)

    def film_px(self, spacing_mm: float) -> int | None:
        """The side of a rendered film for cells of a radiograph of ``spacing_mm`` (``None``: the commands'')."""
        cell_px = self.tile_px - 2 * self.guard_px
        if self.pixel_mm is None:
            return None
        if self.pixel_mm == "native":
            return cell_px
        return max(32, round(cell_px * spacing_mm / float(self.pixel_mm)))


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
    bootstrap_unit: str = "auto"
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
    from rfo_bench.detectors.registry import get_detector

    if not isinstance(data, dict):
        raise UserInputError("expected a YAML mapping", file=file)
    _known_keys(data, {"name", "out", "seeds", "models", "arms", "data", "generators", "synthetic_only_from",
                       "bootstrap", "bootstrap_unit", "device"}, "<top level>", file)
    name = str(data.get("name", Path(file).stem))
    seeds = tuple(expect_type(s, int, "seeds", file) for s in expect_type(data.get("seeds", [0]), list, "seeds", file))
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise UserInputError("seeds must be a non-empty list of distinct non-negative integers", file=file,
                             field="seeds", value=list(seeds))
    models = []
    for index, item in enumerate(expect_type(data.get("models"), list, "models", file)):
        where = f"models[{index}]"
        if isinstance(item, str):
            item = {"name": item}
        expect_type(item, dict, where, file)
        _known_keys(item, {"name", "recipe", "overrides", "backbone", "weights", "label", "tiling", "start"},
                    where, file)
        start = _start(item, where, file, base_dir or Path.cwd())
        tiling = None
        if item.get("tiling") is not None:
            if start is not None:
                raise UserInputError("a start entry takes its tiling from the detector's record; remove 'tiling'",
                                     file=file, field=f"{where}.tiling")
            values = dict(expect_type(item["tiling"], dict, f"{where}.tiling", file))
            try:
                tiling = TileConfig.from_dict(values)
            except UserInputError as err:
                raise UserInputError(err.message, file=file, field=f"{where}.tiling.{err.field}",
                                     value=err.value) from None
            except TypeError as err:
                raise UserInputError(f"invalid tiling: {err}", file=file, field=f"{where}.tiling") from None
        name = str(item.get("name") or (start.model if start is not None else None))
        if start is not None and name != start.model:
            raise UserInputError(f"the start detector is a {start.model}", file=file, field=f"{where}.name",
                                 value=name)
        if start is not None and item.get("weights") is not None:
            raise UserInputError("a start entry's weights are the detector's; remove 'weights'", file=file,
                                 field=f"{where}.weights")
        entry = ModelEntry(
            name=name, recipe=str(item.get("recipe", "cpu-tiny")),
            overrides=dict(expect_type(item.get("overrides", {}) or {}, dict, f"{where}.overrides", file)),
            backbone=str(item.get("backbone", "resnet18")), weights=item.get("weights"),
            label=str(item.get("label", "")), tiling=tiling, start=start,
        )
        try:
            get_detector(entry.name)
            recipe = entry.train_recipe()
            if entry.run_tiling is not None and recipe.imgsz != entry.run_tiling.tile_size:
                raise UserInputError(f"with tiling imgsz must be the tile size ({entry.run_tiling.tile_size} px)",
                                     field="imgsz", value=recipe.imgsz)
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
    arms = tuple(str(a) for a in expect_type(data.get("arms", list(ARMS)), list, "arms", file))
    for arm in arms:
        if arm not in ARMS:
            raise UserInputError("unknown arm; expected one of: " + ", ".join(ARMS), file=file, field="arms", value=arm)
    data_section = expect_type(data.get("data"), dict, "data", file)
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
        section = expect_type(data_section["build"] or {}, dict, "data.build", file)
        _known_keys(section, set(BuildEntry.__dataclass_fields__), "data.build", file)
        try:
            build = BuildEntry(**section)
        except UserInputError as err:
            raise UserInputError(err.message, file=file, field=f"data.build.{err.field}", value=err.value) from None
        if train or test:
            raise UserInputError("give either data.train + data.test or data.build, not both", file=file,
                                 field="data")
    elif not (train and test):
        raise UserInputError("data needs both 'train' and 'test' (or a 'build' section)", file=file, field="data")
    if any(m.start is not None for m in models) and build is not None and build.pixel_mm is None:
        raise UserInputError("a start detector is fine-tuned at clinical resolution: give data.build.pixel_mm "
                             "('native' or mm per pixel)", file=file, field="data.build.pixel_mm")
    generators = []
    for gen_name, section in (expect_type(data.get("generators", {}) or {}, dict, "generators", file)).items():
        section = expect_type(section or {}, dict, f"generators.{gen_name}", file)
        _known_keys(section, {"n", "seed", "commands"}, f"generators.{gen_name}", file)
        commands = section.get("commands", ())
        if isinstance(commands, str):
            commands = [commands]
        expect_type(commands, (list, tuple), f"generators.{gen_name}.commands", file)
        generators.append(GeneratorEntry(
            name=str(gen_name), n=expect_type(section.get("n", 32), int, f"generators.{gen_name}.n", file),
            seed=expect_type(section.get("seed", 1000), int, f"generators.{gen_name}.seed", file),
            commands=tuple(str(c) for c in commands),
        ))
    bootstrap = expect_type(data.get("bootstrap", 200), int, "bootstrap", file)
    if bootstrap < 0:
        raise UserInputError("bootstrap replicates must be >= 0", file=file, field="bootstrap", value=bootstrap)
    bootstrap_unit = str(data.get("bootstrap_unit", "auto"))
    if bootstrap_unit not in BOOTSTRAP_UNITS:
        raise UserInputError(f"expected one of {', '.join(BOOTSTRAP_UNITS)}", file=file, field="bootstrap_unit",
                             value=bootstrap_unit)
    return BenchmarkConfig(
        name=name, out=str(data.get("out", f"runs/benchmark_{name}")), seeds=seeds, models=tuple(models),
        arms=arms, train=train, test=test, build=build, generators=tuple(generators),
        synthetic_only_from=str(data.get("synthetic_only_from", "physics")), bootstrap=bootstrap,
        bootstrap_unit=bootstrap_unit, device=str(data.get("device", "cpu")), source=file,
    )


def _start(item: dict[str, Any], where: str, file: str, base: Path) -> DetectorStart | None:
    """The start detector an entry names (read from its record; its weights are checked by the run)."""
    from rfo_bench.detectors.shipped import read_detector_start

    value = item.get("start")
    if value is None:
        return None
    expect_type(value, str, f"{where}.start", file)
    folder = Path(value).expanduser()
    folder = folder if folder.is_absolute() else base / folder
    try:
        if value == "shipped":  # the detector bundled with the toolkit
            from rfo_bench.detectors.bundled import require_bundled_detector

            folder = require_bundled_detector(f"{where}.start")
        elif not folder.is_dir():
            raise UserInputError(f"start detector folder {folder} does not exist (train it with rfo-bench train "
                                 "--config RECIPE --out DIR)")
        return read_detector_start(folder)
    except UserInputError as err:
        raise UserInputError(f"{err.message} ({err.file}: {err.field})" if err.field else err.message,
                             file=file, field=f"{where}.start") from None


def with_arms(config: BenchmarkConfig, arms: str | Sequence[str]) -> BenchmarkConfig:
    """``config`` restricted to a subset of its arms (comma-separated string or sequence), order kept.

    Raises:
        UserInputError: an arm the config does not list.
    """
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


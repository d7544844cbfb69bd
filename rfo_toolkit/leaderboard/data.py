"""The benchmark's ground truth and the generators' background pools.

Synthetic images are generated **only from training backgrounds**: the negative images of the real
training split (:func:`training_backgrounds`), or, for a benchmark built from the embedded radiograph
(``data.build``), the training cells of a checkerboard with a guard band (:func:`heldout_tiles`), so no
test pixel is ever part of a training background. Train and test must be patient-disjoint
(:func:`check_patient_disjoint`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from rfo_bench.io.records import DetectionDataset
from rfo_toolkit.leaderboard.config import BenchmarkConfig, GeneratorEntry
from rfo_toolkit.leaderboard.generators import run_generator
from toolkit_core.errors import UserInputError
from toolkit_core.output_dirs import remove_owned
from toolkit_core.utils import atomic_write_bytes

logger = logging.getLogger(__name__)


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




def build_film_px(config: BenchmarkConfig) -> int | None:
    """The side in pixels of the ``data.build`` films (``data.build.pixel_mm``; ``None``: the commands' own)."""
    from rfo_bench.io.embedded import load_embedded_radiograph

    if config.build is None or config.build.pixel_mm is None:
        return None
    return config.build.film_px(float(min(load_embedded_radiograph().pixel_spacing_mm)))


def build_heldout_benchmark(config: BenchmarkConfig, out: Path) -> tuple[Path, Path, Path]:
    """Render the ``data.build`` benchmark; returns ``(train json, test json, training backgrounds dir)``.

    With ``data.build.pixel_mm`` the generator's commands receive the film side as ``{imgsz}``
    (:func:`build_film_px`); the background cells are written at the radiograph's own spacing either way.
    """
    from rfo_bench.io.embedded import load_embedded_radiograph

    build = config.build
    assert build is not None
    radiograph = load_embedded_radiograph()
    image = radiograph.pixels
    imgsz = build.film_px(float(min(radiograph.pixel_spacing_mm)))
    pools: dict[str, list[tuple[str, np.ndarray]]] = {"train": [], "test": []}
    for split, r0, c0, r1, c1 in heldout_tiles(*image.shape[:2], build.tile_px, build.guard_px):
        pools[split].append((f"tile_r{r0:04d}_c{c0:04d}", image[r0:r1, c0:c1]))
    paths = {}
    generator = config.generator(build.generator)
    for split, n, seed in (("train", build.n_train, build.seed_train), ("test", build.n_test, build.seed_test)):
        pool = _write_background_pool(pools[split], out / "benchmark" / "backgrounds" / split)
        entry = GeneratorEntry(name=generator.name, n=n, seed=seed, commands=generator.commands)
        if imgsz is not None and not entry.takes("imgsz"):
            raise UserInputError("data.build.pixel_mm sets the film size: the generator's commands must take it "
                                 "as --imgsz {imgsz}", file=config.source or None,
                                 field=f"generators.{entry.name}.commands")
        try:
            dataset = run_generator(entry, out=out / "benchmark" / split, backgrounds=pool, imgsz=imgsz)
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
    """``images[].pixel_spacing_mm`` of a COCO file by image id (:func:`rfo_bench.io.coco.coco_pixel_spacing_mm`);
    empty for other sources."""
    from rfo_bench.io.coco import coco_pixel_spacing_mm

    if source.suffix.lower() != ".json" or not source.is_file():
        return {}
    try:
        document = json.loads(source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    out = {}
    for entry in document.get("images", []) if isinstance(document, dict) else []:
        spacing = coco_pixel_spacing_mm(entry)
        if spacing is not None and "id" in entry:
            out[int(entry["id"])] = spacing
    return out

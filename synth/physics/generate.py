"""Dataset generation: backgrounds, their acquisitions, workers, shards, COCO files and the manifest.

Per image ``i`` everything random comes from ``SeedSequence([seed, i])``, so an image depends only on
the seed, its index and the configuration: a dataset is byte-identical across runs, worker counts
and shards. Rendering itself lives in :mod:`synth.physics.render`; the configuration in
:mod:`synth.physics.config` (both re-exported here).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from synth.physics.acquisition import Acquisition, read_header_acquisition, resolve_acquisition
from synth.physics.config import DEFAULT_CLASSES, PhysicsConfig, detected_spectrum
from synth.physics.render import Renderer
from synth.physics.spectra import tube_spectrum
from toolkit_core.errors import UserInputError
from toolkit_core.processes import process_pool
from toolkit_core.records import environment, jsonable

__all__ = ["DEFAULT_CLASSES", "PhysicsConfig", "Renderer", "build_renderer", "detected_spectrum", "generate_dataset",
           "list_backgrounds", "parse_shard"]

logger = logging.getLogger(__name__)


# --- dataset generation ---------------------------------------------------------------------------------

def parse_shard(text: str | None) -> tuple[int, int]:
    """``"K/N"`` → ``(K, N)`` with ``0 <= K < N``.

    Raises:
        UserInputError: malformed or out of range (``3/2``).
    """
    if text is None:
        return 0, 1
    try:
        k_text, n_text = str(text).split("/")
        k, n = int(k_text), int(n_text)
    except ValueError:
        raise UserInputError("shard must look like K/N, e.g. 0/4", field="--shard", value=text) from None
    if n < 1 or not 0 <= k < n:
        raise UserInputError("shard K/N needs 0 <= K < N", field="--shard", value=text)
    return k, n


def list_backgrounds(mode: str, path: str | os.PathLike[str] | None) -> list[Path]:
    """Background files: the embedded radiograph / CT by default, or a file, or the files of a folder
    (:func:`synth.background_files.list_background_files`; CT volumes in ``ct`` mode)."""
    from synth.background_files import list_background_files

    return list_background_files(path, volumes=mode == "ct")


RECORDED_PACKAGES = ("rfo-toolkit", "numpy", "scipy", "torch", "xraydb", "spekpy", "trimesh", "pycocotools", "pillow")
"""Distributions whose versions the manifest records (with Python, platform and source commit)."""

_WORKER: dict[str, Any] = {}


def background_acquisition(config: PhysicsConfig, path: Path) -> Acquisition:
    """The acquisition a background is rendered with: its DICOM header where present, explicit settings first."""
    from synth.physics.acquisition import HeaderAcquisition

    header = read_header_acquisition(path) if config.mode == "radiograph" else HeaderAcquisition()
    return resolve_acquisition(header, config.acquisition_defaults(), config.explicit)


def _renderer_for(index: int) -> Renderer:
    from synth.physics.backgrounds import prepare_ct, prepare_radiograph

    base: PhysicsConfig = _WORKER["config"]
    files: list[Path] = _WORKER["backgrounds"]
    cache: dict[int, Renderer] = _WORKER.setdefault("renderers", {})
    if index not in cache:
        path = files[index]
        acquisition = background_acquisition(base, path)
        cfg = base.with_acquisition(acquisition)
        if cfg.mode == "ct":
            background = prepare_ct(path, cfg.size, cfg.source_to_detector_mm, cfg.patient_centre_to_detector_mm)
        else:
            background = prepare_radiograph(
                path, cfg.size, detected_spectrum(cfg), cfg.source_to_detector_mm,
                cfg.source_to_detector_mm - cfg.patient_centre_to_detector_mm, cfg.wet_range_mm,
                cfg.calibration_percentiles, cfg.scatter, cfg.body_threshold_mm, spacing_mm=cfg.pixel_spacing_mm,
            )
        renderer = Renderer(cfg, background, _WORKER.get("meshes"))
        renderer.acquisition = acquisition
        cache[index] = renderer
    return cache[index]


def build_renderer(config: PhysicsConfig, background: str | os.PathLike[str] | None = None,
                   objects_dir: str | os.PathLike[str] | None = None) -> Renderer:
    """A :class:`Renderer` for one background file (default: the embedded radiograph or CT)."""
    from synth.physics.objects.meshes import load_mesh_dir

    files = list_backgrounds(config.mode, background)[:1]
    meshes = load_mesh_dir(objects_dir) if objects_dir is not None else None
    _init_worker(config, files, meshes, 0, ".")
    renderer = _renderer_for(0)
    _WORKER.clear()
    return renderer


def _init_worker(config: PhysicsConfig, backgrounds: list[Path], meshes: list | None, seed: int, image_dir: str) -> None:
    _WORKER.clear()
    _WORKER.update(config=config, backgrounds=backgrounds, meshes=meshes, seed=seed, image_dir=image_dir)


def _render_one(index: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from rfo_bench.io.images import write_png16
    from synth.export import annotation_id, image_file_name

    rng = np.random.default_rng(np.random.SeedSequence([int(_WORKER["seed"]), int(index)]))
    files = _WORKER["backgrounds"]
    bg_index = int(rng.integers(len(files)))
    renderer = _renderer_for(bg_index)
    image, annotations, info = renderer.render_with_info(rng)
    name = image_file_name(index)
    write_png16(Path(_WORKER["image_dir"]) / name, image)
    record = {"id": int(index) + 1, "file_name": f"images/{name}", "height": int(image.shape[0]),
              "width": int(image.shape[1]), "background": files[bg_index].name,
              "pixel_spacing_mm": round(float(renderer.detector.pixel_mm), 6),
              "photometric": renderer.config.display.photometric, "negative": not annotations,
              "kvp": renderer.config.technique.kvp,
              "source_to_detector_mm": renderer.config.source_to_detector_mm, **jsonable(info)}
    for k, ann in enumerate(annotations):
        ann["id"] = annotation_id(index, k)
        ann["image_id"] = record["id"]
    return record, annotations


def generate_dataset(
    out: str | os.PathLike[str], *, n: int, seed: int, config: PhysicsConfig | None = None,
    backgrounds: str | None = None, objects_dir: str | None = None, shard: str | None = None, workers: int = 1,
    overwrite: bool = False, progress: bool = True,
) -> dict[str, Any]:
    """Render a labelled dataset into ``out`` (annotations.json, images/*.png 16-bit, manifest.json).

    Args:
        out: destination directory (must be empty or absent unless ``overwrite``).
        n: number of images of the whole (unsharded) dataset.
        seed: master seed; image ``i`` uses ``SeedSequence([seed, i])``.
        config: physics configuration (default :class:`PhysicsConfig`'s defaults).
        backgrounds: a radiograph / CT file or folder; default the embedded real data.
        objects_dir: folder of user RFO meshes (replaces the procedural library for their classes).
        shard: ``"K/N"``: render only images ``i`` with ``i % N == K``.
        workers: processes.
        overwrite: replace an existing non-empty ``out``.
        progress: show a progress bar.

    Returns:
        The manifest.
    """
    import multiprocessing

    from tqdm import tqdm

    from rfo_bench.categories import coco_categories
    from synth.export import coco_document, staged_directory, write_json
    from synth.physics.objects.meshes import load_mesh_dir
    from toolkit_core.utils import sha256_file

    config = PhysicsConfig() if config is None else config
    if n < 0:
        raise UserInputError("number of images must be >= 0", field="--n", value=n)
    if workers < 1:
        raise UserInputError("workers must be >= 1", field="--workers", value=workers)
    k, num = parse_shard(shard)
    files = list_backgrounds(config.mode, backgrounds)
    meshes = load_mesh_dir(objects_dir) if objects_dir is not None else None
    indices = [i for i in range(n) if i % num == k]
    records, annotations = [], []
    with staged_directory(out, overwrite) as staging:
        image_dir = staging / "images"
        image_dir.mkdir()
        args = (config, files, meshes, seed, str(image_dir))
        bar = tqdm(total=len(indices), desc="rendering", unit="img", disable=not progress)
        _init_worker(*args)
        can_fork = "fork" in multiprocessing.get_all_start_methods()
        if workers == 1 or len(indices) <= 1:
            for record, anns in (_render_one(i) for i in indices):
                records.append(record)
                annotations.extend(anns)
                bar.update()
        else:
            if can_fork and len(files) <= 8:
                # Prepare the backgrounds (spectrum, calibration, CT projection) once; forked workers inherit them.
                for b in range(len(files)):
                    _renderer_for(b)
            initializer = None if can_fork else _init_worker
            with process_pool(workers, initializer=initializer, initargs=args if initializer else (),
                              method="fork" if can_fork else "spawn") as pool:
                for record, anns in pool.imap(_render_one, indices):
                    records.append(record)
                    annotations.extend(anns)
                    bar.update()
        bar.close()
        _WORKER.clear()
        categories = coco_categories(list(config.classes))
        info = {"description": f"rfo-synth physics ({config.mode} mode)", "version": _version(), "seed": seed}
        write_json(staging / "annotations.json", coco_document(records, annotations, categories, info))
        manifest = {
            "generator": "synth.physics",
            "version": _version(),
            "seed": seed,
            "n_images_total": n,
            "shard": f"{k}/{num}",
            "n_images": len(records),
            "n_annotations": len(annotations),
            # Placed objects left unlabelled: below config.label_min_cnr (synth.physics.visibility).
            "n_objects_not_labelled": sum(int(r.get("objects_not_labelled", 0)) for r in records),
            "config": jsonable(config.to_dict()),
            "backgrounds": [{"file": f.name, "sha256": sha256_file(f)} for f in files],
            "objects": None if meshes is None else [{"file": m.name, "class": m.class_name, "material": m.material}
                                                    for m in meshes],
            "acquisitions": [_acquisition_summary(config, f) for f in files],
            "spectrum": _spectrum_summary(config.with_acquisition(background_acquisition(config, files[0]))),
            "seeding": "image i uses numpy SeedSequence([seed, i])",
            "libraries": environment(RECORDED_PACKAGES),
        }
        write_json(staging / "manifest.json", manifest)
    return manifest


def _acquisition_summary(config: PhysicsConfig, path: Path) -> dict[str, Any]:
    """One background's resolved acquisition and the source of each value (``dicom:<Keyword>``, ...)."""
    acquisition = background_acquisition(config, path)
    return {"file": path.name, **jsonable(acquisition.to_dict())}


def _spectrum_summary(config: PhysicsConfig) -> dict[str, Any]:
    from synth.physics.spectra import spekpy_hvl_mm_al

    tube = tube_spectrum(config.technique)
    detected = detected_spectrum(config)
    return {"kvp": config.technique.kvp, "filters": [list(f) for f in config.technique.filters],
            "mas": config.technique.mas, "mean_energy_kev": round(tube.mean_energy_kev(), 3),
            "hvl_mm_al": round(tube.hvl_mm("aluminum"), 4), "spekpy_hvl_mm_al": round(spekpy_hvl_mm_al(config.technique), 4),
            "energy_bins_kev": [round(float(e), 3) for e in detected.energies_kev],
            "detected_quanta_per_mm2_open_field": round(detected.total_photons_per_mm2, 1)}


def _version() -> str:
    import synth

    return synth.__version__

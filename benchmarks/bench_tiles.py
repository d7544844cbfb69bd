"""Tiled training and sliced inference cost on CPU: tiles/s for cutting, training and inference, and
seconds per 2k x 2k film for sliced inference.

Films (seeded): ``--films`` 16-bit films of ``--film-px`` square (default 4 of 2048 px), a noisy flat
background with ``--objects`` bright rectangles (6-60 px) each, written as a COCO dataset under
``--work``. They measure cost, not accuracy (the realism of the anatomy does not change what a tile
costs). Each detector is trained for one epoch on the cut tiles (``--tile-px``, default 320) and then
predicts sliced on every film (25 % overlap plus the coarse whole-film pass, transitive merging).

Times are CPU seconds (``time.process_time``, one torch thread) unless named ``wall``; the load average
of the machine is reported next to them because on a shared machine wall-clock time mostly measures
the other jobs. Run::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/bench_tiles.py [--films 4] [--film-px 2048] \
        [--models yolov8n,fasterrcnn] [--out bench_tiles.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def write_films(root: Path, films: int, size: int, objects: int, seed: int = 0) -> Path:
    """A COCO dataset of noisy films with bright rectangles (see the module docstring)."""
    from rfo_bench.io.images import write_png16

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(films):
        pixels = np.clip(0.3 + 0.02 * rng.standard_normal((size, size)), 0, 1).astype(np.float32)
        for _ in range(objects):
            w, h = (int(v) for v in rng.integers(6, 60, 2))
            x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
            pixels[y:y + h, x:x + w] += 0.05
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": 5,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        write_png16(root / "images" / f"{i}.png", pixels)
        images.append({"id": i + 1, "file_name": f"images/{i}.png", "width": size, "height": size})
    target = root / "annotations.json"
    target.write_text(json.dumps({"images": images, "annotations": annotations,
                                  "categories": [{"id": 5, "name": "clamp", "supercategory": "critical"}]}))
    return target


class Timer:
    """CPU and wall seconds of a block."""

    def __enter__(self) -> Timer:
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cpu, self.wall = time.process_time() - self.cpu, time.perf_counter() - self.wall


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from rfo_bench.detectors import TrainConfig, recipe_with_overrides
    from rfo_bench.detectors.api import load_detector, train_detector
    from rfo_bench.detectors.data import load_pixels
    from rfo_bench.detectors.sliced import SliceConfig, SlicedDetector
    from rfo_bench.detectors.tiling import TileConfig, slice_windows, write_tile_dataset
    from rfo_bench.io.coco import read_coco

    torch.set_num_threads(1)
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_tiles-"))
    films = read_coco(write_films(work / "films", args.films, args.film_px, args.objects))
    tiling = TileConfig(tile_size=args.tile_px, tiles_per_object=2, negative_ratio=0.5)
    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average_before": [round(v, 2) for v in os.getloadavg()]},
        "films": args.films, "film_px": args.film_px, "tile_px": args.tile_px, "objects_per_film": args.objects,
    }
    for depth in (16, 8):
        with Timer() as cut:
            tiles, counts = write_tile_dataset([films], tiling, work / f"tiles{depth}", seed=0, bit_depth=depth)
        results[f"cut_{depth}bit"] = {"tiles": len(tiles), **counts, "cpu_s": round(cut.cpu, 2),
                                      "tiles_per_cpu_s": round(len(tiles) / cut.cpu, 1)}
    tiles16, _ = write_tile_dataset([films], tiling, work / "tiles16-train", seed=0, bit_depth=16)
    windows = len(slice_windows(args.film_px, args.film_px, args.tile_px, 0.25)) + 1  # + the coarse pass
    results["tiles_per_film_sliced"] = windows
    for model in args.models.split(","):
        recipe = recipe_with_overrides("cpu-tiny", {"epochs": 1, "imgsz": args.tile_px, "batch_size": 8,
                                                    "warmup_iters": 0, "fpn_channels": 64})
        config = TrainConfig(model=model, recipe=recipe, seed=0, backbone="resnet18")
        with Timer() as train:
            train_detector(config, [tiles16], work / f"run-{model}", progress=False)
        detector = SlicedDetector(load_detector(work / f"run-{model}"), tiling, SliceConfig())
        detector.predict(load_pixels(films, films.images[0]))  # warm-up: first-call allocations
        with Timer() as predict:
            found = [len(detector.predict(load_pixels(films, r))) for r in films.images]
        per_film = predict.cpu / len(films)
        results[model] = {
            "train_tiles": len(tiles16), "train_cpu_s": round(train.cpu, 2), "train_wall_s": round(train.wall, 2),
            "train_tiles_per_cpu_s": round(len(tiles16) / train.cpu, 2),
            "sliced_cpu_s_per_film": round(per_film, 2), "sliced_wall_s_per_film": round(predict.wall / len(films), 2),
            "inference_tiles_per_cpu_s": round(windows / per_film, 2),
            "detections_per_film": round(float(np.mean(found)), 1),
        }
    results["machine"]["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--films", type=int, default=4)
    parser.add_argument("--film-px", type=int, default=2048)
    parser.add_argument("--objects", type=int, default=3, help="objects per film")
    parser.add_argument("--tile-px", type=int, default=320)
    parser.add_argument("--models", default="yolov8n,fasterrcnn")
    parser.add_argument("--work", default=None, help="scratch folder (default: a new temporary folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    results = run(args)
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        from toolkit_core.utils import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

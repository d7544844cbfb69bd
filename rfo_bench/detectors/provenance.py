"""What a training record states about its run, and the check that a weights file is the one recorded.

A trained detector's ``detector.json`` carries the SHA-256 of its weights file, the SHA-256 of its
training data (image bytes and annotations), the compute spent (CPU seconds of the process, accelerator
wall seconds) and the command. :func:`verify_weights` refuses a weights file whose bytes differ from
the record before anything is read from it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rfo_bench.io.records import DetectionDataset
from toolkit_core.errors import UserInputError
from toolkit_core.utils import sha256_file


def dataset_sha256(datasets: Sequence[DetectionDataset]) -> str:
    """SHA-256 over every image's bytes and annotations, in order (independent of folder locations).

    Raises:
        UserInputError: an image file is missing.
    """
    digest = hashlib.sha256()
    for dataset in datasets:
        for record in dataset.images:
            path = dataset.resolve(record)
            if not path.is_file():
                raise UserInputError("image file does not exist", file=path, field="images.file_name")
            objects = [[list(o.bbox_xyxy), o.category_id, o.shape, list(o.polygon_xy)] for o in record.objects]
            digest.update(json.dumps([record.file_name, sha256_file(path), objects]).encode("utf-8"))
        digest.update(json.dumps([[c.id, c.name] for c in dataset.categories]).encode("utf-8"))
    return digest.hexdigest()


def verify_weights(weights: Path, expected_sha256: str | None, *, required: bool = False) -> None:
    """Check that ``weights`` has the SHA-256 its record states.

    Args:
        weights: the weights file.
        expected_sha256: the record's ``weights_sha256`` (``None`` for records written before it existed).
        required: refuse a record without a hash (the shipped detector).

    Raises:
        UserInputError: no hash where one is required, or a file whose bytes differ from the record.
    """
    if expected_sha256 is None:
        if required:
            raise UserInputError("the detector record states no weights_sha256", file=weights,
                                 field="weights_sha256")
        return
    actual = sha256_file(weights)
    if actual != expected_sha256:
        raise UserInputError(f"weights file does not match its record (sha256 {actual[:12]}..., record "
                             f"{str(expected_sha256)[:12]}...); it was not produced by the recorded run",
                             file=weights, field="weights_sha256")


@dataclass
class ComputeMeter:
    """CPU seconds (``time.process_time``, all threads of this process) and wall seconds since start.

    ``accelerator_seconds`` counts wall seconds when training ran on an accelerator (CUDA, MPS): the
    device time such a run holds.
    """

    device: str
    cpu_start: float = 0.0
    wall_start: float = 0.0

    def __post_init__(self) -> None:
        self.cpu_start = time.process_time()
        self.wall_start = time.perf_counter()

    def report(self, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
        """Spent so far, plus ``earlier`` (the compute of interrupted segments of the same run)."""
        cpu = time.process_time() - self.cpu_start + float((earlier or {}).get("cpu_seconds", 0.0))
        wall = time.perf_counter() - self.wall_start + float((earlier or {}).get("wall_seconds", 0.0))
        accelerator = wall if self.device != "cpu" else float((earlier or {}).get("accelerator_seconds", 0.0))
        return {"device": self.device, "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
                "accelerator_seconds": round(accelerator, 2)}

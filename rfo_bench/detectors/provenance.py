"""What a training record states about its run, and the check that a weights file is the one recorded.

A trained detector's ``detector.json`` carries the SHA-256 of its weights file, the SHA-256 of its
training data (image bytes and annotations), the compute spent (CPU seconds of the process, accelerator
wall seconds, and for each segment of a resumed run the machine, the source commit and the versions
of the libraries that trained it) and the command. :func:`verify_weights` refuses a weights file whose bytes differ from
the record before anything is read from it.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
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


SEGMENT_PACKAGES = ("rfo-toolkit", "numpy", "torch", "torchvision", "ultralytics")
"""Distributions whose versions each training segment records."""


def _children_cpu_seconds() -> float:
    """CPU seconds of this process's child processes: those that ended (and were waited for) plus live ones.

    Tile-cutting pools and data-loader workers do much of a run's work; ``time.process_time`` alone
    would not see it. Live children are read with ``psutil`` where it is installed (it comes with
    Ultralytics); without it only children that have ended are counted.
    """
    total = 0.0
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        total += usage.ru_utime + usage.ru_stime
    except (ImportError, OSError):  # pragma: no cover - not a POSIX system
        pass
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with the detector extras
        return total
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:  # pragma: no cover
        return total
    for child in children:
        try:
            times = child.cpu_times()
        except psutil.Error:  # ended while being read: counted by RUSAGE_CHILDREN once waited for
            continue
        total += times.user + times.system
    return total


@dataclass
class ComputeMeter:
    """CPU seconds (this process, all its threads, and its child processes) and wall seconds since start.

    ``accelerator_seconds`` counts wall seconds of the segments that trained on an accelerator (CUDA,
    MPS): the device time such a run holds. A run resumed after a stop adds the segments before it
    (``earlier``); ``segments`` lists each one's device and seconds, and the ``software`` that ran it
    (:data:`SEGMENT_PACKAGES`, Python, machine, source commit; a long run may span releases), and the
    ``data_sha256`` it trained on: a run resumed on another machine trains on films rendered there,
    whose pixels may differ by rounding from the first machine's.
    """

    device: str
    data_sha256: str = ""
    cpu_start: float = 0.0
    wall_start: float = 0.0
    software: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from toolkit_core.records import environment

        self.cpu_start = time.process_time() + _children_cpu_seconds()
        self.wall_start = time.perf_counter()
        if not self.software:
            self.software = environment(SEGMENT_PACKAGES)

    def report(self, earlier: dict[str, Any] | None = None) -> dict[str, Any]:
        """Spent so far, plus ``earlier`` (the compute of interrupted segments of the same run)."""
        earlier = earlier or {}
        cpu = time.process_time() + _children_cpu_seconds() - self.cpu_start
        wall = time.perf_counter() - self.wall_start
        segment = {"device": self.device, "cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
                   "software": dict(self.software)}
        torch = sys.modules.get("torch")
        if torch is not None:  # CPU seconds per wall second depend on it
            segment["torch_threads"] = int(torch.get_num_threads())
        if self.data_sha256:
            segment["data_sha256"] = self.data_sha256
        before = [dict(s) for s in earlier.get("segments", []) if isinstance(s, dict)]
        if not before and earlier.get("wall_seconds"):  # a ledger written before segments were listed
            before = [{"device": str(earlier.get("device", "unknown")),
                       "cpu_seconds": float(earlier.get("cpu_seconds", 0.0)),
                       "wall_seconds": float(earlier.get("wall_seconds", 0.0))}]
        segments = [*before, segment]
        accelerator = sum(float(s.get("wall_seconds", 0.0)) for s in segments if s.get("device", "cpu") != "cpu")
        return {"device": self.device,
                "cpu_seconds": round(sum(float(s.get("cpu_seconds", 0.0)) for s in segments), 2),
                "wall_seconds": round(sum(float(s.get("wall_seconds", 0.0)) for s in segments), 2),
                "accelerator_seconds": round(accelerator, 2), "segments": segments}

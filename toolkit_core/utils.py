"""Small helpers shared by the packages: seeding, hashing and atomic writes."""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np


def seed_everything(seed: int, *, deterministic: bool = True) -> np.random.Generator:
    """Seed Python, NumPy and torch; return a NumPy generator for explicit use.

    Args:
        seed: the seed, recorded by every caller in its outputs.
        deterministic: also ask torch for deterministic kernels where available (CPU runs are
            then bit-reproducible).
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        return np.random.default_rng(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return np.random.default_rng(seed)


def sha256_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex SHA-256 of a UTF-8 string (used to pseudonymise ids in outputs)."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _temporary_sibling(target: Path) -> Path:
    """A hidden name next to ``target`` that no concurrent writer shares (same file system: rename is atomic)."""
    return target.with_name(f".{target.name}.tmp-{os.getpid()}-{os.urandom(4).hex()}")


@contextmanager
def atomic_output(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; it replaces ``path`` in one rename on success, is removed on failure.

    For writers that take a file name (``torch.save``, ``cv2.imwrite``, ``fig.savefig``): a reader never
    sees a half-written file and a killed writer never leaves one under the final name. The temporary
    name keeps the suffix of ``path`` so that writers choosing a format by suffix still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(target)
    tmp = tmp.with_name(tmp.name + target.suffix)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.is_symlink() or tmp.exists():  # a link written there may point nowhere yet
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and an atomic rename."""
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))

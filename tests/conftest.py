"""Test-suite settings: offline libraries, a headless plotting backend, and small thread pools."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("RFO_CACHE_DIR", str(_REPO / ".cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "true")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", str(_REPO / ".cache" / "ultralytics"))
os.environ.setdefault("MPLCONFIGDIR", str(_REPO / ".cache" / "matplotlib"))
# A test-only pseudonym key, never the site's key in ~/.config (tests that need another set their own).
os.environ.setdefault("RFO_PSEUDONYM_KEY_FILE", str(_REPO / ".cache" / "test-pseudonym.key"))


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Every test runs torch on one intra-op thread: the models here are tiny, and on a shared 2-core
    CI machine more threads only contend (measured 10-40x slower under load). A test that needs
    another count sets it and restores it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

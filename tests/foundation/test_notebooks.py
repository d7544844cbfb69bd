"""The tutorial notebooks: stored without outputs, and executed end to end at their fast setting.

Each notebook reads ``RFO_NOTEBOOK_FAST=1`` (smaller data, shorter schedules) and writes everything under
``$RFO_NOTEBOOK_OUT/<notebook name>/``, including ``key_numbers.json`` whose values are checked here, so a
notebook that runs but computes nonsense still fails. The notebooks are executed by ``nbclient`` with the
``python3`` kernel of this environment and the repository root as working directory.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
NAMES = ("01_synthetic_data", "02_rfo_benchmark", "03_unlearning_a_detector")


def _load(name: str) -> Any:
    import nbformat

    return nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name: str) -> None:
    import nbformat

    nb = _load(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code and any(cell.cell_type == "markdown" for cell in nb.cells)
    for cell in code:
        assert cell.get("outputs") == [], f"{name}: a code cell has stored outputs"
        assert cell.get("execution_count") is None, f"{name}: a code cell has an execution count"
    source = "\n".join(cell.source for cell in code)
    assert "RFO_NOTEBOOK_FAST" in source and "RFO_NOTEBOOK_OUT" in source and "key_numbers.json" in source


def _execute(name: str, out_root: Path, monkeypatch: pytest.MonkeyPatch, timeout_s: int) -> dict[str, Any]:
    """Run a notebook in a fresh kernel; return its ``key_numbers.json``."""
    from nbclient import NotebookClient

    monkeypatch.setenv("RFO_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("RFO_NOTEBOOK_OUT", str(out_root))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # One intra-op thread per kernel unless the runner says otherwise: on a busy two-core machine two
    # OpenMP threads spin-waiting on each other made a YOLOv8n training step about 20 times slower.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    nb = _load(name)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout_s, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    seconds = time.perf_counter() - start
    errors = [o for cell in nb.cells for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    numbers = json.loads((out_root / name / "key_numbers.json").read_text())
    assert numbers["fast"] is True
    numbers["_seconds"] = seconds
    return numbers


def _unit(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0


def test_01_synthetic_data_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    numbers = _execute("01_synthetic_data", tmp_path, monkeypatch, timeout_s=600)
    assert numbers["n_images"] == 6  # 4 radiograph-mode + 2 CT-mode images at the fast setting
    assert numbers["n_objects"] >= 2  # CT mode has no negatives, so each CT image holds at least one object
    assert numbers["label_errors"] == 0
    assert numbers["mu_rel_error_vs_xraydb"] < 1e-9
    # Beer-Lambert through the steel slab: the mesh tracer against the closed-form oblique chords.
    assert numbers["slab_mono_rel_error"] < 1e-6 and numbers["slab_poly_rel_error"] < 1e-6
    # 2 mm of AISI 316 at 60 keV: mu/rho = 1.266 cm^2/g, rho = 8 g/cm^3 -> T = exp(-1.266 * 8 * 0.2) = 0.132
    assert numbers["slab_central_transmission_60kev"] == pytest.approx(0.132, abs=0.002)
    assert numbers["hvl_mm_al"] == pytest.approx(numbers["spekpy_hvl_mm_al"], rel=0.02)
    _assert_contact_sheet_shows_labelled_images(tmp_path / "01_synthetic_data" / "contact_sheet.png",
                                                tiles=min(8, numbers["n_images"]))


def _assert_contact_sheet_shows_labelled_images(png: Path, tiles: int, columns: int = 4, tile_px: int = 256) -> None:
    """The sheet the notebook displays: a grid of ``tiles`` radiograph tiles (the notebook's columns and
    tile side), with anatomy in it (not one flat colour) and at least one drawn box (red critical or
    blue other, :mod:`synth.physics.preview`)."""
    import numpy as np
    from PIL import Image

    from synth.physics.preview import CRITICAL_RGB, NON_CRITICAL_RGB

    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == (columns * tile_px, -(-tiles // columns) * tile_px)
        pixels = np.asarray(image.convert("RGB")).astype(np.int64)  # saved with an adaptive palette
    first_tile = pixels[:tile_px, :tile_px]
    assert first_tile.std() > 10.0  # a radiograph, not a blank tile (8-bit grey levels)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
    # the radiographs are grey; the only coloured pixels are the drawn boxes (palette-rounded colours)
    coloured = pixels[(pixels.max(axis=-1) - pixels.min(axis=-1)) > 100]
    assert len(coloured) > 0
    distances = [np.abs(coloured - np.array(rgb)).sum(axis=-1) for rgb in (CRITICAL_RGB, NON_CRITICAL_RGB)]
    assert (np.minimum(*distances) < 60).mean() > 0.9


@pytest.mark.slow
def test_02_rfo_benchmark_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    numbers = _execute("02_rfo_benchmark", tmp_path, monkeypatch, timeout_s=900)
    out = tmp_path / "02_rfo_benchmark"
    assert numbers["validation_problems"] == 0
    assert numbers["patients_in_two_splits"] == 0
    assert numbers["split_images"] == numbers["n_images"]
    assert numbers["yolo_train_images"] == numbers["train_images"]
    assert numbers["test_images"] >= 1 and numbers["test_positive_images"] >= 1
    for key in ("AP", "AP50", "froc", "auroc"):
        value = numbers[key]
        assert value is None or _unit(value), key
    if numbers["AP50"] is not None:
        low, high = numbers["ap50_ci"]
        assert 0.0 <= low <= high <= 1.0
    assert numbers["bootstrap_unit"] == "patient"  # every image was given a pseudo-patient id
    report = json.loads((out / "eval" / "report.json").read_text())
    assert report["coco"]["AP50"] == numbers["AP50"]
    assert report["counts"]["images"] == numbers["test_images"]
    assert (out / "eval" / "report.md").is_file()


@pytest.mark.slow
def test_03_unlearning_a_detector_executes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    numbers = _execute("03_unlearning_a_detector", tmp_path, monkeypatch, timeout_s=900)
    out = tmp_path / "03_unlearning_a_detector"
    methods = numbers["methods"]
    assert set(methods) >= {"original", "retrain", "ofmu", "finetune"}
    for scenario in ("class", "patient"):
        for method in ("original", "retrain", "ofmu", "finetune"):
            row = numbers[scenario][method]
            for key in ("retain_map50", "forget_recall"):
                assert row[key] is None or _unit(row[key]), (scenario, method, key)
            # membership is a measure of image and patient requests only, not of class requests
            if scenario == "patient":
                assert row["mia_auc"] is None or _unit(row["mia_auc"]), (scenario, method)
            else:
                assert row.get("mia_auc") is None, (scenario, method)
    # The requests resolved on the generated training set (32 images, seed 100, two images per patient).
    from vision_unlearn.detection_benchmark import make_toy_detection_set

    _, boxes, labels, _, patient_ids = make_toy_detection_set(32, 100)
    clamp = 2  # class order needle, sponge, clamp
    with_clamp = sum(int((lab == clamp).any()) for lab in labels)
    assert numbers["requests"]["class"] == {
        "request": "class:clamp", "forget_images": with_clamp, "retain_images": 32,
        "forget_boxes": sum(int((lab == clamp).sum()) for lab in labels), "forgotten_classes": [clamp]}
    patient = numbers["forgotten_patient"]
    assert numbers["requests"]["patient"]["forget_images"] == patient_ids.count(patient) == 2
    assert numbers["requests"]["patient"]["retain_images"] == 30
    audit = json.loads((out / "audit.json").read_text())
    assert audit["method"] == "ofmu" and audit["forgotten"]["request_kind"] == "patient"
    assert audit["forgotten"]["sample_count"] == 2 and audit["forgotten"]["patient_count"] == 1
    assert patient not in json.dumps(audit)  # only salted digests of the ids are stored
    assert audit["checkpoint_before_sha256"] != audit["checkpoint_after_sha256"]
    assert numbers["audit_verified"] is True

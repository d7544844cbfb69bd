"""The detector bundled with the package holds only weights its recorded command produced.

``make bundle-detector`` copies a finished recipe run (record + weights, byte for byte) into
``rfo_bench/assets/shipped_detector``; ``vision-unlearn demo --detector auto`` uses it when present.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rfo_bench.detectors import bundled
from rfo_bench.detectors.bundled import REQUIRED_FIELDS, bundle_detector, bundled_detector, check_finished_run
from toolkit_core.errors import UserInputError


def _finished_run(folder: Path, content: bytes = b"weights of a finished run", **changes) -> Path:
    """A recipe run folder as ``rfo-bench train --config`` leaves it (the weights' bytes are opaque here)."""
    (folder / "ultralytics" / "weights").mkdir(parents=True)
    (folder / "ultralytics" / "weights" / "best.pt").write_bytes(content)
    record = {"format": 1, "model": "yolov8n", "family": "ultralytics", "config": {"tiling": {"tile_size": 320}},
              "categories": [{"id": 1, "name": "sponge"}], "weights": "ultralytics/weights/best.pt",
              "weights_sha256": hashlib.sha256(content).hexdigest(), "command": "rfo-bench train --config x.yaml",
              "recipe_sha256": "ab" * 32, "data_seeds": {"train": 1701, "test": 1702}, "data_sha256": "cd" * 32,
              "compute": {"cpu_seconds": 1.0}, "held_out_metrics": {"AP50": 0.5}, "film_px": 2048}
    from rfo_bench.detectors.api import RECORD_FORMAT

    record["format"] = RECORD_FORMAT
    record.update(changes)
    (folder / "detector.json").write_text(json.dumps({k: v for k, v in record.items() if v is not None}))
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_finished_run_is_bundled_byte_for_byte(tmp_path: Path) -> None:
    run = _finished_run(tmp_path / "run")
    location = bundle_detector(run, tmp_path / "assets" / "shipped_detector")
    assert _tree(location) == _tree(run)
    assert bundled_detector(location) == location
    assert [p.name for p in location.parent.iterdir()] == ["shipped_detector"]  # no staging left behind


@pytest.mark.parametrize("field", REQUIRED_FIELDS)
def test_a_run_whose_record_lacks_a_field_is_not_bundled(tmp_path: Path, field: str) -> None:
    run = _finished_run(tmp_path / "run", **{field: None})
    with pytest.raises(UserInputError, match="not a finished recipe run") as err:
        bundle_detector(run, tmp_path / "assets" / "shipped_detector")
    assert err.value.field == field
    assert not (tmp_path / "assets" / "shipped_detector").exists()


def test_weights_that_differ_from_the_record_are_not_bundled(tmp_path: Path) -> None:
    run = _finished_run(tmp_path / "run")
    (run / "ultralytics" / "weights" / "best.pt").write_bytes(b"weights from somewhere else")
    with pytest.raises(UserInputError, match="does not match its record"):
        bundle_detector(run, tmp_path / "assets" / "shipped_detector")
    assert not (tmp_path / "assets" / "shipped_detector").exists()


def test_a_weights_path_outside_the_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.pt").write_bytes(b"x")
    run = _finished_run(tmp_path / "run", weights="../elsewhere.pt",
                        weights_sha256=hashlib.sha256(b"x").hexdigest())
    from rfo_bench.detectors.api import load_detector
    from rfo_bench.detectors.shipped import read_detector_start

    for read in (check_finished_run, read_detector_start, load_detector):  # every reader of a record
        with pytest.raises(UserInputError, match="weights: weights path leaves the run folder"):
            read(run)


def test_an_earlier_bundle_is_replaced_but_a_foreign_folder_is_not(tmp_path: Path) -> None:
    location = tmp_path / "assets" / "shipped_detector"
    bundle_detector(_finished_run(tmp_path / "old", b"old weights"), location)
    bundle_detector(_finished_run(tmp_path / "new", b"new weights"), location)
    assert (location / "ultralytics" / "weights" / "best.pt").read_bytes() == b"new weights"
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("a user's file")
    with pytest.raises(UserInputError, match="not a bundled detector"):
        bundle_detector(tmp_path / "new", foreign)
    assert (foreign / "notes.txt").read_text() == "a user's file"


def test_the_bundling_command_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rfo_toolkit.cli import rfo_bench_main

    assert rfo_bench_main(["bundle", "--model-dir", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a trained detector directory" in err


def test_predict_with_the_shipped_detector_names_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from rfo_toolkit.cli import rfo_bench_main

    monkeypatch.setattr(bundled, "bundle_location", lambda: tmp_path / "assets" / "shipped_detector")
    assert rfo_bench_main(["predict", "--model-dir", "shipped", "--data", str(tmp_path / "x.json"),
                           "--out", str(tmp_path / "pred")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no shipped detector" in err and "--model-dir" in err
    assert not (tmp_path / "pred").exists()


def test_the_demo_uses_the_bundled_detector_by_default_and_only_when_it_exists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rfo_toolkit.demo.commands import demo_detector

    location = tmp_path / "assets" / "shipped_detector"
    monkeypatch.setattr(bundled, "bundle_location", lambda: location)
    assert demo_detector("scratch") is None and demo_detector("auto") is None  # nothing bundled: from scratch
    with pytest.raises(UserInputError, match="holds no shipped detector") as err:
        demo_detector("shipped")
    assert err.value.field == "--detector"
    bundle_detector(_finished_run(tmp_path / "run"), location)
    assert demo_detector("auto") == demo_detector("shipped") == str(location)
    assert demo_detector("scratch") is None and demo_detector("runs/mine") == "runs/mine"


def test_the_bundled_weights_match_their_record() -> None:
    """The committed detector: weights byte-identical to the record, loadable by the restricted loader."""
    from rfo_bench.detectors.api import RECORD_NAME
    from rfo_bench.detectors.bundled import bundle_location
    from rfo_bench.detectors.shipped import check_start_weights, read_detector_start

    location = bundle_location()
    assert (location / RECORD_NAME).is_file(), "the project ships a detector (make bundle-detector)"
    assert bundled_detector() == location  # a record without its weights fails here, not silently skipped
    record = check_finished_run(location)
    assert check_start_weights(read_detector_start(location)).is_file()
    # made by the recipe in configs/ (as it reads today) through its own command, and measured on held-out films
    recipe = Path(__file__).parents[2] / "configs" / "shipped_detector.yaml"
    assert record["recipe_sha256"] == hashlib.sha256(recipe.read_bytes()).hexdigest()
    assert record["command"].startswith(f"rfo-bench train --config configs/{recipe.name} ")
    held_out = record["held_out_metrics"]
    assert held_out["images"] >= 200 and held_out["AP50"] >= 0.5 and held_out["FROC"] >= 0.8  # its stated targets


def test_reports_name_the_bundled_detector_shipped_and_any_other_by_its_folder(tmp_path: Path) -> None:
    # where an installation keeps the bundle differs between machines; `shipped` is what the commands accept
    assert bundled.detector_name(bundled.bundle_location()) == "shipped"
    assert bundled.detector_name(str(bundled.bundle_location() / ".." / bundled.BUNDLE_NAME)) == "shipped"
    assert bundled.detector_name(tmp_path / "runs" / "shipped") == str(tmp_path / "runs" / "shipped")

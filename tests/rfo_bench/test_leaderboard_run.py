"""``rfo-bench benchmark`` end to end on tiny data, with a stand-in generator that checks what it is given."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_toolkit import leaderboard
from rfo_toolkit.cli import rfo_bench_main as main
from rfo_toolkit.leaderboard import generators
from rfo_toolkit.leaderboard.config import METRICS
from rfo_toolkit.leaderboard.runs import EVALUATION_SEED, read_replicates, write_replicates
from tests.rfo_bench.test_detectors_data import write_tiny_coco


def _fake_generator(seen: list[list[str]]):
    """An ``rfo-synth`` stand-in: records the background files and writes a small COCO set to --out."""

    def fake_main(argv: list[str], log: Path | None = None) -> int:
        args = dict(zip(argv[1::2], argv[2::2], strict=False))
        backgrounds = Path(args["--backgrounds"])
        seen.append(sorted(p.name for p in backgrounds.glob("*.png")))
        write_tiny_coco(Path(args["--out"]), n=int(args["--n"]), seed=int(args["--seed"]), patient_prefix="s")
        return 0

    return fake_main


def _write_config(tmp_path: Path, train: Path, test: Path,
                  arms: str = "[real+physics, real+diffusion, synthetic_only]") -> Path:
    config = tmp_path / "bench.yaml"
    config.write_text(f"""
name: tiny
out: {tmp_path / 'out'}
seeds: [0]
bootstrap: 10
models:
  - {{name: fcos, backbone: test_resnet, overrides: {{epochs: 1, imgsz: 64, warmup_iters: 0}}}}
arms: {arms}
data: {{train: {train}, test: {test}}}
generators:
  physics: {{n: 4, seed: 5}}
""")
    return config


def test_benchmark_runs_arms_skips_missing_generator_and_reuses_runs(tmp_path: Path, monkeypatch, capsys) -> None:

    train = write_tiny_coco(tmp_path / "train", n=6, seed=1, patient_prefix="p")  # images 2, 4, 6 negative
    test = write_tiny_coco(tmp_path / "test", n=4, seed=2, patient_prefix="q")
    seen: list[list[str]] = []
    monkeypatch.setattr(generators, "synth_command_available", lambda argv: argv[0] == "physics")
    monkeypatch.setattr(generators, "synth_main", _fake_generator(seen))
    config = _write_config(tmp_path, train, test)

    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 0
    out = tmp_path / "out"
    summary = json.loads((out / "leaderboard.json").read_text())
    # the generator saw the training negatives only: never a test image, never a positive
    assert seen == [["train_00000002.png", "train_00000004.png", "train_00000006.png"]]
    assert [(r["model"], r["arm"], r["train_images"]) for r in summary["rows"]] == [
        ("fcos/test_resnet", "real+physics", 10), ("fcos/test_resnet", "synthetic_only", 4)]
    assert any("real+diffusion" in n and "not available" in n for n in summary["notes"])
    assert summary["data"]["test_patients"] == 2 and summary["data"]["test_images"] == 4
    for row in summary["rows"]:
        assert row["AUROC"]["per_seed"][0] is None or 0.0 <= row["AUROC"]["per_seed"][0] <= 1.0
        assert len(row["froc_curve"]["fp_per_image"]) == 7
    run = out / "runs" / "fcos_test_resnet" / "real_physics" / "seed0"
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["counts"]["images"] == 4 and report["bootstrap"]["unit"] == "patient"
    _assert_froc_figure_shows(out / "froc.png", summary["rows"], ["real+physics", "synthetic_only"])
    markdown = (out / "leaderboard.md").read_text()
    assert "| fcos/test_resnet | real+physics | 10 |" in markdown
    assert f"rfo-bench benchmark --config {config}" in markdown

    # the arms are compared with the first arm, paired, from replicates drawn with one evaluation seed
    assert [(c["model"], c["arm"], c["reference"], c["seeds"]) for c in summary["comparisons"]] == [
        ("fcos/test_resnet", "synthetic_only", "real+physics", [0])]
    assert summary["reference_arm"] == "real+physics" and summary["evaluation_seed"] == EVALUATION_SEED
    assert "## Does adding synthetic data help?" in markdown
    assert "| fcos/test_resnet | synthetic_only vs real+physics | 1 |" in markdown
    assert (out / "runs" / "fcos_test_resnet" / "synthetic_only" / "seed0" / "replicates.npz").is_file()

    # a second invocation reuses every finished run and the synthetic set; a cell of an older release (no
    # replicates, or replicates drawn with another seed) is evaluated again from its predictions, not trained
    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    older = out / "runs" / "fcos_test_resnet" / "real_physics" / "seed0"
    (older / "replicates.npz").unlink()
    other_seed = out / "runs" / "fcos_test_resnet" / "synthetic_only" / "seed0" / "replicates.npz"
    stale = read_replicates(other_seed)
    write_replicates(other_seed, {"AP50": stale.metrics["AP50"]}, evaluation_seed=7, bootstrap=stale.bootstrap,
                     key=stale.key)
    monkeypatch.setattr("rfo_bench.detectors.api.train_detector", no_training)
    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 0
    again = json.loads((out / "leaderboard.json").read_text())
    assert again["rows"] == summary["rows"] and again["comparisons"] == summary["comparisons"]
    assert len(seen) == 1
    for run in (older / "replicates.npz", other_seed):
        found = read_replicates(run)
        assert found.evaluation_seed == EVALUATION_SEED and found.bootstrap == 10 and set(found.metrics) == set(METRICS)

    # replicates are never unpickled: a crafted file holding objects is one line naming it (exit 2)
    np.savez(other_seed, AP50=np.array([{"x": 1}], dtype=object), evaluation_seed=np.int64(0),
             bootstrap=np.int64(10), key=np.array(stale.key))
    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(other_seed) in err[0]

    # resampling images instead of (pseudo-)patients re-evaluates every run from its predictions, no training
    other_seed.unlink()
    config.write_text(config.read_text() + "bootstrap_unit: image\n")
    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 0
    by_image = json.loads((out / "leaderboard.json").read_text())
    assert by_image["bootstrap_unit"] == "image" and summary["bootstrap_unit"] == "patient"
    assert json.loads((older / "eval" / "report.json").read_text())["bootstrap"]["unit"] == "image"
    assert read_replicates(older / "replicates.npz").unit == "image"
    assert "intervals over test images" in (out / "leaderboard.md").read_text()


def _assert_froc_figure_shows(png: Path, rows: list[dict], arms: list[str]) -> None:
    """The figure has one panel per arm with one curve per model, plotting the rows' FROC points; the
    PNG written is that figure."""
    import numpy as np
    from PIL import Image

    figure = leaderboard.froc_figure(rows, arms)
    panels = figure.axes
    assert [ax.get_title() for ax in panels] == arms
    assert all(ax.get_xlabel() == "false positives per image" for ax in panels)
    assert panels[0].get_ylabel() == "sensitivity"
    for ax, arm in zip(panels, arms, strict=True):
        (row,) = [r for r in rows if r["arm"] == arm]
        (line,) = ax.get_lines()
        assert line.get_label() == row["model"]
        np.testing.assert_allclose(line.get_xdata(), row["froc_curve"]["fp_per_image"])
        expected = [np.nan if v is None else v for v in row["froc_curve"]["sensitivity"]]
        np.testing.assert_allclose(line.get_ydata(), expected)
        assert all(0.0 <= v <= 1.0 for v in expected if not np.isnan(v))
    width_in, height_in = figure.get_size_inches()
    with Image.open(png) as image:
        assert image.format == "PNG"
        assert image.size == (round(width_in * 120), round(height_in * 120))  # written at dpi 120


def test_benchmark_refuses_shared_patients_and_no_positives(tmp_path: Path, capsys) -> None:
    train = write_tiny_coco(tmp_path / "train", n=4, patient_prefix="p")
    test = write_tiny_coco(tmp_path / "test", n=4, patient_prefix="p")  # same patients p0, p1
    assert main(["benchmark", "--config", str(_write_config(tmp_path, train, test))]) == 2
    assert "both the training and the test split" in capsys.readouterr().err
    negatives = write_tiny_coco(tmp_path / "neg", n=4, positives=False, patient_prefix="n")
    assert main(["benchmark", "--config", str(_write_config(tmp_path, negatives, test))]) == 2
    assert "no positive image" in capsys.readouterr().err


@pytest.mark.slow
def test_shipped_cpu_benchmark_end_to_end(tmp_path: Path) -> None:
    """The CPU preset with the real generators, one model and one seed (minutes on two cores)."""
    repo = Path(__file__).resolve().parents[2]
    assert main(["benchmark", "--config", str(repo / "configs" / "benchmark_cpu.yaml"), "--out", str(tmp_path),
                 "--models", "yolov8n", "--seeds", "0", "--threads", "1", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "leaderboard.json").read_text())
    ran = {row["arm"] for row in summary["rows"]}
    skipped = {arm for arm in summary["config"]["arms"] if any(f"`{arm}` skipped" in n for n in summary["notes"])}
    assert "real" in ran and ran | skipped == set(summary["config"]["arms"])
    assert all(len(row["seeds"]) == 1 for row in summary["rows"])
    assert summary["data"]["test_patients"] == 4  # the four held-out tiles


def _rewrite_file_names(annotations: Path, change) -> None:
    data = json.loads(annotations.read_text())
    for image in data["images"]:
        image["file_name"] = change(image["file_name"])
    annotations.write_text(json.dumps(data))


def test_generated_set_with_names_relative_to_its_images_folder_is_read(tmp_path: Path) -> None:
    annotations = write_tiny_coco(tmp_path / "gen", n=3)
    _rewrite_file_names(annotations, lambda name: name.removeprefix("images/"))  # "0.png" kept in images/
    dataset = leaderboard.read_generated_set(annotations, "diffusion")
    assert dataset.root == (tmp_path / "gen" / "images").resolve() and len(dataset) == 3
    assert Path(dataset.source) == annotations
    _rewrite_file_names(annotations, lambda name: "lost/" + name)
    with pytest.raises(RuntimeError, match=r"listed images that do not exist, e\.g\. .*lost/0\.png"):
        leaderboard.read_generated_set(annotations, "diffusion")


def test_generator_listing_missing_images_skips_its_arm_with_a_note(tmp_path: Path, monkeypatch) -> None:

    train = write_tiny_coco(tmp_path / "train", n=6, seed=1, patient_prefix="p")
    test = write_tiny_coco(tmp_path / "test", n=4, seed=2, patient_prefix="q")

    def broken_generator(argv: list[str], log: Path | None = None) -> int:
        args = dict(zip(argv[1::2], argv[2::2], strict=False))
        annotations = write_tiny_coco(Path(args["--out"]), n=int(args["--n"]), patient_prefix="s")
        _rewrite_file_names(annotations, lambda name: "nowhere/" + name)
        return 0

    monkeypatch.setattr(generators, "synth_command_available", lambda argv: argv[0] == "physics")
    monkeypatch.setattr(generators, "synth_main", broken_generator)
    monkeypatch.setattr("rfo_bench.detectors.api.train_detector",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("no arm should train")))
    config = _write_config(tmp_path, train, test, arms="[real+physics, synthetic_only]")
    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert summary["rows"] == []
    assert [n.split(":")[0] for n in summary["notes"]] == ["arm `real+physics` skipped", "arm `synthetic_only` skipped"]
    assert all("listed images that do not exist" in n for n in summary["notes"])


def test_background_pool_records_the_spacing_of_its_images(tmp_path: Path) -> None:
    """PNG backgrounds carry no spacing; the pool's COCO file keeps what the training set recorded, and
    the diffusion sampler reads it there (objects are scaled by it)."""
    import numpy as np

    from rfo_bench.io.formats import read_dataset
    from rfo_bench.io.images import write_png16
    from synth.diffusion.sample import background_spacing_mm, list_backgrounds, recorded_spacings

    root = tmp_path / "train"
    for name in ("neg.png", "pos.png"):
        write_png16(root / "images" / name, np.full((16, 20), 0.3))
    coco = {"images": [{"id": 1, "file_name": "images/neg.png", "width": 20, "height": 16, "pixel_spacing_mm": 0.77},
                       {"id": 2, "file_name": "images/pos.png", "width": 20, "height": 16}],
            "annotations": [{"id": 1, "image_id": 2, "category_id": 1, "bbox": [2, 2, 5, 5], "area": 25, "iscrowd": 0}],
            "categories": [{"id": 1, "name": "sponge"}]}
    (root / "annotations.json").write_text(json.dumps(coco))
    pool = leaderboard.training_backgrounds(read_dataset(root / "annotations.json"), tmp_path / "pool")
    entries = json.loads((pool / "backgrounds.json").read_text())["images"]
    assert [(e["file_name"], e.get("pixel_spacing_mm")) for e in entries] == [("train_00000001.png", 0.77)]
    files = list_backgrounds(pool)
    from rfo_bench.io.images import read_image

    assert background_spacing_mm(files[0], read_image(files[0]), recorded_spacings(files)) == 0.77


def test_generator_availability_is_asked_of_the_installed_rfo_synth() -> None:
    """Present and absent (nested) sub-commands, through the tool's own help, not its parser's internals."""
    assert generators.synth_command_available(["physics"])
    assert generators.synth_command_available(["diffusion", "train"])
    assert not generators.synth_command_available(["diffusion", "no-such-step"])
    assert not generators.synth_command_available(["no-such-generator"])


def test_a_failing_generator_command_is_reported_by_its_last_line(tmp_path: Path) -> None:
    entry = leaderboard.GeneratorEntry(name="physics", n=2, seed=0,
                                       commands=("physics --n {n} --out {out} --backgrounds {backgrounds}",))
    with pytest.raises(RuntimeError, match=r"`rfo-synth physics --n \.\.\.` failed: .*backgrounds"):
        leaderboard.run_generator(entry, out=tmp_path / "gen", backgrounds=tmp_path / "missing")
    log = (tmp_path / "gen_work" / generators.GENERATOR_LOG).read_text()
    assert log.startswith("$ rfo-synth physics --n 2")

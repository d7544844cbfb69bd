"""Leaderboard rows that fine-tune a recipe-trained detector (``start: DIR``), tiled from-scratch rows, and the
clinical-resolution benchmark data (``data.build.pixel_mm``).

A tiny YOLO is trained by a recipe file once per module (as ``tests/foundation/test_demo_trained_detector.py``
does, seconds on one core); the benchmark's arms fine-tune it on films of other seeds.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from rfo_toolkit import leaderboard
from rfo_toolkit.cli import rfo_bench_main as main
from rfo_toolkit.leaderboard import (
    METRICS,
    BuildEntry,
    generators,
    load_benchmark_config,
    parse_benchmark_config,
)
from rfo_toolkit.leaderboard.comparison import VERDICTS
from rfo_toolkit.leaderboard.runs import NO_FINE_TUNING
from toolkit_core.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]
CLASSES = ("sponge", "clamp", "blade", "chain")


def _films(out: Path, n: int, seed: int, size: int = 160, backgrounds: str | None = None) -> Path:
    from synth.physics.generate import PhysicsConfig, generate_dataset

    generate_dataset(out, n=n, seed=seed, config=PhysicsConfig(mode="radiograph", size=size, classes=CLASSES),
                     backgrounds=backgrounds, progress=False)
    return out / "annotations.json"


@pytest.fixture(scope="module")
def start_dir(tmp_path_factory) -> Path:
    """A YOLO trained by a recipe on 160-px films, cut into 64-px tiles, ``chain`` left unseen."""
    root = tmp_path_factory.mktemp("start")
    recipe = {
        "name": "tiny", "model": "yolov8n", "seed": 0, "classes": ["sponge", "blade", "clamp", "chain"],
        "unseen_classes": ["chain"],
        "data": {"train": str(_films(root / "train", 8, 5)), "test": str(_films(root / "test", 4, 6))},
        "recipe": {"base": "cpu-tiny", "epochs": 1, "imgsz": 64, "batch_size": 4, "warmup_iters": 0},
        "tiling": {"tile_size": 64, "tiles_per_object": 1}, "slicing": {"overlap": 0.2}, "bootstrap": 0,
    }
    (root / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(root / "recipe.yaml"), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def bench_data(tmp_path_factory) -> tuple[Path, Path]:
    """Benchmark films of other seeds than the start's, with its classes."""
    root = tmp_path_factory.mktemp("bench_data")
    return _films(root / "train", 6, 21), _films(root / "test", 4, 22)


def _physics_stand_in(calls: list[list[str]]):
    """An ``rfo-synth`` stand-in that renders physics films in-process (the same classes) and records its argv."""

    def fake_main(argv: list[str], log: Path | None = None) -> int:
        calls.append(list(argv))
        args = dict(zip(argv[1::2], argv[2::2], strict=False))
        _films(Path(args["--out"]), int(args["--n"]), int(args["--seed"]), int(args.get("--imgsz", 160)),
               args["--backgrounds"])
        return 0

    return fake_main


def _config(tmp_path: Path, start: Path, train: Path, test: Path, **model) -> Path:
    entry = {"start": str(start), "overrides": {"epochs": 1, "batch_size": 4, "warmup_iters": 0}, **model}
    config = {"name": "start", "out": str(tmp_path / "out"), "seeds": [0], "bootstrap": 10,
              "models": [entry], "arms": ["real", "real+physics"], "data": {"train": str(train), "test": str(test)},
              "generators": {"physics": {"n": 3, "seed": 7}}}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_arms_fine_tune_the_start_on_its_tiles_and_are_evaluated_sliced(
        tmp_path: Path, start_dir: Path, bench_data: tuple[Path, Path], monkeypatch) -> None:
    import rfo_bench.detectors.predict as predict_module

    record = json.loads((start_dir / "detector.json").read_text())
    calls: list[list[str]] = []
    monkeypatch.setattr(generators, "synth_command_available", lambda argv: argv[0] == "physics")
    monkeypatch.setattr(generators, "synth_main", _physics_stand_in(calls))
    predicted_with: list[str] = []
    real_predict = predict_module.predict_dataset

    def spy(detector, dataset, **kwargs):
        predicted_with.append(type(detector).__name__)
        return real_predict(detector, dataset, **kwargs)

    monkeypatch.setattr(predict_module, "predict_dataset", spy)
    import rfo_bench.detectors.api as api_module

    trained_arms: list[str] = []
    real_train = api_module.train_detector

    def train_spy(config, train_sets, out_dir, **kwargs):
        trained_arms.append(Path(out_dir).parent.parent.name)
        return real_train(config, train_sets, out_dir, **kwargs)

    monkeypatch.setattr(api_module, "train_detector", train_spy)
    config = _config(tmp_path, start_dir, *bench_data)
    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 0

    out = tmp_path / "out"
    summary = json.loads((out / "leaderboard.json").read_text())
    # the do-nothing row (the start as it is) once, then the fine-tuned arms; only those were trained
    assert [(r["model"], r["arm"]) for r in summary["rows"]] == [("yolov8n+start", NO_FINE_TUNING),
                                                                ("yolov8n+start", "real"),
                                                                ("yolov8n+start", "real+physics")]
    assert trained_arms == ["real", "real_physics"]
    for arm in ("real", "real_physics"):
        trained = json.loads((out / "runs" / "yolov8n_start" / arm / "seed0" / "model" / "detector.json").read_text())
        # fine-tuned from the start's weights file, on tiles cut with the start's tiling
        assert Path(trained["config"]["weights"]) == start_dir / record["weights"]
        assert trained["config"]["tiling"] == record["config"]["tiling"]
        assert trained["config"]["recipe"]["imgsz"] == 64 and trained["tiles"]["positive"] > 0
        # the unseen class keeps its slot (same class map) but no box of it is trained on
        assert trained["categories"] == record["categories"]
    assert predicted_with == ["SlicedDetector"] * 3  # whole test films, sliced (the start itself too)
    assert all(r["evaluation"] == "sliced" for r in summary["runs"])

    # chain boxes are left out of every row's test ground truth, as in the start's own held-out test
    test = json.loads(bench_data[1].read_text())
    chain_id = next(c["id"] for c in test["categories"] if c["name"] == "chain")
    kept = sum(1 for a in test["annotations"] if a["category_id"] != chain_id)
    assert summary["data"]["unseen_classes"] == ["chain"] and summary["data"]["test_objects"] == kept
    report = json.loads((out / "runs" / "yolov8n_start" / "real" / "seed0" / "eval" / "report.json").read_text())
    assert report["counts"]["objects"] == kept

    # every row states its compute and its start (recipe, weights SHA-256, the start's own compute)
    row = summary["rows"][1]
    assert row["compute"]["train_cpu_seconds"] > 0 and row["compute"]["cpu_seconds"] >= row["compute"][
        "train_cpu_seconds"] * 0.5
    assert row["start"]["weights_sha256"] == record["weights_sha256"]
    assert row["start"]["compute"]["cpu_seconds"] == pytest.approx(record["compute"]["cpu_seconds"])
    assert summary["starts"][0]["recipe"] == "tiny"
    markdown = (out / "leaderboard.md").read_text()
    assert f"tiny @ {record['weights_sha256'][:12]}" in markdown
    assert "| Train CPU-s | Accel-s | Run CPU-s | Start |" in markdown
    assert record["weights_sha256"] in markdown and "never saw chain" in markdown
    assert len(calls) == 1 and "chain" not in str(summary["synthetic"])
    _assert_do_nothing_row(out, summary, record, kept)

    # a second invocation trains and predicts nothing: every cell, the do-nothing row included, is reused
    monkeypatch.setattr(api_module, "train_detector", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("a finished run was trained again")))
    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 0
    assert predicted_with == ["SlicedDetector"] * 3
    again = json.loads((out / "leaderboard.json").read_text())
    assert again["rows"] == summary["rows"] and again["comparisons"] == summary["comparisons"]


def _assert_do_nothing_row(out: Path, summary: dict, record: dict, kept: int) -> None:
    """The start as it is: predicted once (no seed, no spread), not trained, evaluated on the same ground truth
    with the same evaluation seed; compared with every fine-tuned arm, and the arms with the first arm."""
    none_row = summary["rows"][0]
    assert none_row["deterministic"] and none_row["seeds"] == [] and none_row["train_images"] == 0
    assert none_row["AP50"]["std"] is None and len(none_row["AP50"]["per_seed"]) == 1
    assert none_row["compute"]["train_cpu_seconds"] == 0 and none_row["compute"]["cpu_seconds"] > 0
    assert none_row["start"]["weights_sha256"] == record["weights_sha256"]
    run = out / "runs" / "yolov8n_start" / "no_fine_tuning"
    assert not (run / "model").exists() and (run / "predictions" / "predictions.json").is_file()
    report = json.loads((run / "eval" / "report.json").read_text())
    assert report["counts"]["objects"] == kept and report["bootstrap"]["seed"] == summary["evaluation_seed"]
    tuned = json.loads((out / "runs" / "yolov8n_start" / "real" / "seed0" / "eval" / "report.json").read_text())
    assert tuned["bootstrap"]["seed"] == summary["evaluation_seed"]
    assert [(c["arm"], c["reference"]) for c in summary["comparisons"]] == [
        ("real+physics", "real"), ("real", NO_FINE_TUNING), ("real+physics", NO_FINE_TUNING)]
    for comparison in summary["comparisons"]:
        assert comparison["seeds"] == [0] and set(comparison["metrics"]) == set(METRICS)
        assert all(m["verdict"] in VERDICTS for m in comparison["metrics"].values())
    markdown = (out / "leaderboard.md").read_text()
    assert f"| yolov8n+start | {NO_FINE_TUNING} | 0 |" in markdown and " ± n/a " in markdown
    assert f"| yolov8n+start | real vs {NO_FINE_TUNING} | 1 |" in markdown


def test_a_tampered_start_is_refused_before_any_run(tmp_path: Path, start_dir: Path,
                                                     bench_data: tuple[Path, Path], monkeypatch, capsys) -> None:
    copy = tmp_path / "start"
    shutil.copytree(start_dir, copy)
    record = json.loads((copy / "detector.json").read_text())
    weights = copy / record["weights"]
    weights.write_bytes(weights.read_bytes() + b"\0")
    monkeypatch.setattr("rfo_bench.detectors.api.train_detector",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("nothing may train")))
    monkeypatch.setattr(generators, "synth_main",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("nothing may be generated")))
    config = _config(tmp_path, copy, *bench_data)
    assert main(["benchmark", "--config", str(config), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not match its record" in err[0] and "weights_sha256" in err[0]
    assert not (tmp_path / "out").exists()


def test_benchmark_data_with_another_class_map_is_one_line(tmp_path: Path, start_dir: Path, capsys) -> None:
    from tests.rfo_bench.test_detectors_data import write_tiny_coco

    train = write_tiny_coco(tmp_path / "train", n=4, patient_prefix="p")
    test = write_tiny_coco(tmp_path / "test", n=4, patient_prefix="q")
    assert main(["benchmark", "--config", str(_config(tmp_path, start_dir, train, test)), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(train) in err[0] and "categories" in err[0] and "models[0].start" in err[0]


def test_start_entry_fields_are_checked(tmp_path: Path, start_dir: Path) -> None:
    base = {"name": "t", "seeds": [0], "arms": ["real"], "data": {"train": "a.json", "test": "b.json"}}

    def parse(model: dict, **changes):
        return parse_benchmark_config({**base, "models": [model], **changes}, file="b.yaml", base_dir=tmp_path)

    config = parse({"start": str(start_dir), "overrides": {"epochs": 2}})
    (entry,) = config.models
    assert entry.name == "yolov8n" and entry.display == "yolov8n+start"
    assert entry.run_tiling is not None and entry.run_tiling.tile_size == 64 and entry.train_recipe().imgsz == 64
    assert entry.start is not None and entry.start.unseen_classes == ("chain",) and entry.start.slicing.overlap == 0.2
    cases = [
        ({"start": "no/such/dir"}, {}, "models[0].start", "does not exist"),
        ({"start": str(start_dir), "tiling": {"tile_size": 64}}, {}, "models[0].tiling", "takes its tiling"),
        ({"start": str(start_dir), "name": "fcos"}, {}, "models[0].name", "is a yolov8n"),
        ({"start": str(start_dir), "weights": "x.pt"}, {}, "models[0].weights", "remove 'weights'"),
        ({"start": str(start_dir), "overrides": {"imgsz": 96}}, {}, "models[0].imgsz", "tile size"),
        ({"start": str(start_dir)}, {"data": {"build": {}}}, "data.build.pixel_mm", "clinical resolution"),
        ({"start": str(tmp_path)}, {}, "models[0].start", "not a trained detector"),
        ({"name": "yolov8n", "tiling": {"tile_size": 8}}, {}, "models[0].tiling.tile_size", "at least 32"),
        ({"name": "yolov8n", "tiling": {"tile_px": 64}}, {}, "models[0].tiling", "invalid tiling"),
        ({"name": "yolov8n", "tiling": {"tile_size": 64}, "overrides": {"imgsz": 128}}, {}, "models[0].imgsz",
         "tile size"),
    ]
    for model, changes, field, message in cases:
        with pytest.raises(UserInputError, match=message) as info:
            parse(model, **changes)
        assert (info.value.field, info.value.file) == (field, "b.yaml"), model
        assert "\n" not in str(info.value)
    tiled = parse({"name": "yolov8n", "tiling": {"tile_size": 64}}).models[0]
    assert tiled.run_tiling.tile_size == 64 and tiled.train_recipe().imgsz == 64 and tiled.display == "yolov8n"


@pytest.mark.parametrize("value", [0, -0.2, 10, "coarse", True])
def test_pixel_mm_refuses_bad_values_naming_the_field(value) -> None:
    data = {"name": "t", "models": ["yolov8n"], "data": {"build": {"pixel_mm": value}}}
    with pytest.raises(UserInputError, match="native") as info:
        parse_benchmark_config(data, file="b.yaml")
    assert (info.value.field, info.value.file) == ("data.build.pixel_mm", "b.yaml")


def test_film_size_from_pixel_mm_hand_computed() -> None:
    # a 613-px cell less two 32-px guard bands is 549 px; at 0.2 mm per pixel that is 109.8 mm
    assert BuildEntry(tile_px=613, guard_px=32, pixel_mm="native").film_px(0.2) == 549
    assert BuildEntry(tile_px=613, guard_px=32, pixel_mm=0.18).film_px(0.2) == 610  # 109.8 / 0.18
    assert BuildEntry(tile_px=613, guard_px=32, pixel_mm=0.5).film_px(0.2) == 220
    assert BuildEntry(tile_px=613, guard_px=32).film_px(0.2) is None  # the commands state --imgsz


def _build_config(tmp_path: Path, command: str) -> Path:
    config = {"name": "b", "out": str(tmp_path / "out"), "seeds": [0], "bootstrap": 0,
              "models": [{"name": "yolov8n", "tiling": {"tile_size": 64},
                          "overrides": {"epochs": 1, "batch_size": 4, "warmup_iters": 0}}],
              "arms": ["real", "real+physics"],
              "data": {"build": {"n_train": 3, "n_test": 2, "tile_px": 613, "guard_px": 32, "pixel_mm": 0.5}},
              "generators": {"physics": {"n": 2, "seed": 3, "commands": [command]}}}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_build_renders_films_at_the_stated_resolution_on_held_out_cells(tmp_path: Path, monkeypatch) -> None:
    """Every generator command (benchmark splits and the arms') gets the film side; the arms' generator still
    sees the training cells only; a tiled from-scratch row is evaluated sliced."""
    calls: list[list[str]] = []
    monkeypatch.setattr(generators, "synth_command_available", lambda argv: argv[0] == "physics")
    monkeypatch.setattr(generators, "synth_main", _physics_stand_in(calls))
    command = "physics --n {n} --out {out} --seed {seed} --backgrounds {backgrounds} --imgsz {imgsz}"
    assert main(["benchmark", "--config", str(_build_config(tmp_path, command)), "--no-progress"]) == 0
    assert [argv[argv.index("--imgsz") + 1] for argv in calls] == ["220"] * 3
    backgrounds = [Path(argv[argv.index("--backgrounds") + 1]).name for argv in calls]
    assert backgrounds == ["train", "test", "train"]
    summary = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
    assert summary["data"]["film_px"] == 220 and summary["data"]["pixel_mm"] == 0.5
    assert [r["start"] for r in summary["rows"]] == [None, None]
    assert {r["evaluation"] for r in summary["runs"]} == {"sliced"}
    assert "| scratch |" in (tmp_path / "out" / "leaderboard.md").read_text()
    # the slicing its detectors predicted with is part of each cell's key: a finished cell predicted with
    # other slicing (another release's defaults) is run again, not reused
    from rfo_bench.detectors.sliced import SliceConfig
    from rfo_toolkit.leaderboard.runs import RESULT_FILE

    results = sorted((tmp_path / "out" / "runs").glob(f"*/*/seed0/{RESULT_FILE}"))
    assert len(results) == 2
    for result in results:
        assert json.loads(result.read_text())["fingerprint"]["slicing"] == SliceConfig().to_dict()
    # the same benchmark under other slicing (another release's defaults) runs its cells again
    import rfo_bench.detectors.api as api_module
    import rfo_toolkit.leaderboard.benchmark as benchmark_module
    import rfo_toolkit.leaderboard.runs as runs_module

    other = SliceConfig(extent="union")
    monkeypatch.setattr(benchmark_module, "row_slicing", lambda entry: other)
    monkeypatch.setattr(runs_module, "row_slicing", lambda entry: other)
    trained, real_train = [], api_module.train_detector
    monkeypatch.setattr(api_module, "train_detector", lambda *a, **k: trained.append(1) or real_train(*a, **k))
    assert main(["benchmark", "--config", str(tmp_path / "bench.yaml"), "--no-progress"]) == 0
    assert len(trained) == 2
    for result in results:
        assert json.loads(result.read_text())["fingerprint"]["slicing"] == other.to_dict()


def test_build_commands_without_the_film_size_are_refused(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(generators, "synth_main",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("nothing may be generated")))
    command = "physics --n {n} --out {out} --seed {seed} --backgrounds {backgrounds} --imgsz 160"
    assert main(["benchmark", "--config", str(_build_config(tmp_path, command)), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "generators.physics.commands" in err[0] and "{imgsz}" in err[0]


def test_shipped_benchmark_config(tmp_path: Path, start_dir: Path, capsys, monkeypatch) -> None:
    """configs/benchmark_shipped.yaml starts from the bundled detector (``start: shipped``): without one it is
    one line naming the field (exit 2); with one, it parses into from-start and tiled from-scratch rows at
    clinical resolution."""
    import rfo_bench.detectors.bundled as bundled

    path = REPO / "configs" / "benchmark_shipped.yaml"
    monkeypatch.setattr(bundled, "bundle_location", lambda: tmp_path / "no_bundle")
    assert main(["benchmark", "--config", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "models[0].start" in err[0] and "holds no shipped detector" in err[0]
    with pytest.raises(UserInputError):
        load_benchmark_config(path)

    data = yaml.safe_load(path.read_text())
    assert data["models"][0]["start"] == "shipped"
    monkeypatch.setattr(bundled, "bundle_location", lambda: start_dir)
    config = parse_benchmark_config(data, file=str(path))
    assert config.models[0].start is not None and Path(config.models[0].start.run_dir) == start_dir
    assert len(config.seeds) >= 3
    assert {"real", "real+physics", "real+diffusion"} <= set(config.arms)
    starts = [m for m in config.models if m.start is not None]
    scratch = [m for m in config.models if m.start is None]
    assert starts and scratch and all(m.run_tiling is not None for m in config.models)
    assert config.build is not None and config.build.pixel_mm is not None
    assert all(config.generator(g).takes("imgsz") for g in ("physics",))
    assert leaderboard.ARMS[:3] == ("real", "real+physics", "real+diffusion")

"""Benchmark configuration, held-out tiling, patient disjointness and seed aggregation (hand-computed)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rfo_bench.io.records import Category, DetectionDataset, ImageRecord
from rfo_toolkit.leaderboard import (
    GeneratorEntry,
    RunMetrics,
    RunOutcome,
    aggregate,
    check_patient_disjoint,
    heldout_tiles,
    load_benchmark_config,
    metrics_from_report,
    parse_benchmark_config,
    render_markdown,
    summarize_seeds,
)
from toolkit_core.errors import UserInputError

REPO = Path(__file__).resolve().parents[2]


def _config(**changes):
    data = {"name": "t", "seeds": [0, 1], "models": [{"name": "fcos", "backbone": "test_resnet"}, "yolov8n"],
            "arms": ["real", "real+physics"], "data": {"train": "a/train.json", "test": "a/test.json"}}
    data.update(changes)
    return data


def test_valid_config_is_typed_and_paths_resolved(tmp_path: Path) -> None:
    config = parse_benchmark_config(_config(), file="b.yaml", base_dir=tmp_path)
    assert config.seeds == (0, 1) and config.arms == ("real", "real+physics")
    assert [m.display for m in config.models] == ["fcos/test_resnet", "yolov8n"]
    assert config.train == str(tmp_path / "a/train.json") and config.build is None
    assert config.generator("physics").n == 32  # defaults when a generator section is absent
    assert config.bootstrap_unit == "auto"  # patients where every test image has one
    assert parse_benchmark_config(_config(bootstrap_unit="image"), file="b.yaml", base_dir=tmp_path).bootstrap_unit == "image"


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"arms": ["real", "real+gan"]}, "arms", "unknown arm"),
        ({"models": [{"name": "detr"}]}, "models[0].model", "unknown detector"),
        ({"models": [{"name": "fcos", "overrides": {"epochs": 0}}]}, "models[0].epochs", "positive integer"),
        ({"models": ["fcos", "fcos"]}, "models", "share a row label"),
        ({"seeds": [1, 1]}, "seeds", "distinct"),
        ({"data": {"train": "x.json"}}, "data", "both 'train' and 'test'"),
        ({"data": {"train": "x", "test": "y", "build": {}}}, "data", "not both"),
        ({"data": {"build": {"tiles": 3}}}, "data.build", "unknown key"),
        ({"epochs": 3}, "<top level>", "unknown key"),
        ({"generators": {"physics": {"n": "many"}}}, "generators.physics.n", "expected an integer"),
        ({"bootstrap_unit": "cell"}, "bootstrap_unit", "expected one of auto, image, patient"),
    ],
)
def test_config_errors_name_the_field(changes, field: str, message: str) -> None:
    with pytest.raises(UserInputError, match=message) as info:
        parse_benchmark_config(_config(**changes), file="b.yaml")
    assert info.value.field == field and info.value.file == "b.yaml"


def test_generator_templates_fill_placeholders_and_reject_unknown_ones() -> None:
    entry = GeneratorEntry(name="physics", n=5, seed=9, commands=("physics --n {n} --out {out} --seed {seed}",))
    assert entry.argvs(out=Path("/o")) == [["physics", "--n", "5", "--out", "/o", "--seed", "9"]]
    default = GeneratorEntry(name="diffusion", n=2).argvs(out=Path("o"), work=Path("w"), backgrounds=Path("b"),
                                                          train_dir=Path("t"))
    assert [a[:2] for a in default] == [["diffusion", "train"], ["diffusion", "sample"]]
    with pytest.raises(UserInputError, match="placeholder"):
        GeneratorEntry(name="x", commands=("x --size {size}",)).argvs(out=Path("o"))


def test_heldout_tiles_checkerboard_with_guard_band() -> None:
    tiles = heldout_tiles(45, 61, 20, 2)  # 2 x 3 cells; the last partial row/column is not used
    assert tiles[:2] == [("train", 2, 2, 18, 18), ("test", 2, 22, 18, 38)]
    assert [t[0] for t in tiles] == ["train", "test", "train", "test", "train", "test"]
    train = [t for t in tiles if t[0] == "train"]
    test = [t for t in tiles if t[0] == "test"]
    for _, r0, c0, r1, c1 in train:
        for _, s0, d0, s1, d1 in test:
            row_gap = max(s0 - r1, r0 - s1)
            col_gap = max(d0 - c1, c0 - d1)
            assert max(row_gap, col_gap) >= 4  # two guard bands between any train and test pixel
    with pytest.raises(UserInputError, match="tile_px"):
        heldout_tiles(100, 100, 16, 4)


def _dataset(patients: list[str | None]) -> DetectionDataset:
    images = tuple(ImageRecord(f"{i}.png", i + 1, patient_id=p) for i, p in enumerate(patients))
    return DetectionDataset(Path("."), images, (Category(3, "needle", True),), source="d.json")


def test_patient_in_both_splits_is_refused() -> None:
    assert check_patient_disjoint(_dataset(["a", "b"]), _dataset(["c", "c", "d"])) == 2
    with pytest.raises(UserInputError, match="both the training and the test split"):
        check_patient_disjoint(_dataset(["a", "b"]), _dataset(["b", "c"]))
    assert check_patient_disjoint(_dataset([None]), _dataset([None])) == 0


def test_summarize_seeds_hand_computed() -> None:
    mean, std = summarize_seeds([0.2, 0.4])
    assert mean == pytest.approx(0.3) and std == pytest.approx(math.sqrt(0.02))  # sample std, ddof=1
    assert summarize_seeds([0.5]) == (0.5, 0.0)
    assert summarize_seeds([0.1, float("nan"), 0.3]) == (pytest.approx(0.2), pytest.approx(math.sqrt(0.02)))
    assert all(math.isnan(v) for v in summarize_seeds([float("nan")]))


def test_report_mapping_turns_undefined_into_nan() -> None:
    report = {"coco": {"AP50": 0.5, "AP": -1.0}, "froc": {"score": 0.25, "fps_per_image": [0.125, 8],
                                                           "sensitivity": [0.1, None]},
              "auroc": None, "ci95": {"AP50": [0.4, 0.6], "AP": None, "froc": [0.1, 0.3], "auroc": None}}
    metrics = metrics_from_report(report)
    assert metrics.values["AP50"] == 0.5 and math.isnan(metrics.values["AP"]) and math.isnan(metrics.values["AUROC"])
    assert metrics.intervals["FROC"] == (0.1, 0.3) and math.isnan(metrics.intervals["AP"][0])
    assert metrics.froc_fp_per_image == (0.125, 8.0) and math.isnan(metrics.froc_sensitivity[1])


def _outcome(seed: int, ap50: float, arm: str = "real") -> RunOutcome:
    values = {"AP50": ap50, "AP": ap50 / 2, "FROC": 0.5, "AUROC": float("nan")}
    intervals = {k: (v - 0.1, v + 0.1) for k, v in values.items()}
    metrics = RunMetrics(values, intervals, (0.125, 1.0), (0.2 + seed / 10, 0.6))
    return RunOutcome("fcos/r18", arm, seed, f"/runs/{seed}", 10.0 + seed, 12, metrics)


def test_aggregate_and_markdown_rows() -> None:
    rows = aggregate([_outcome(0, 0.2), _outcome(1, 0.4), _outcome(0, 0.9, arm="real+physics")])
    assert [(r["model"], r["arm"], r["seeds"]) for r in rows] == [("fcos/r18", "real", [0, 1]),
                                                                  ("fcos/r18", "real+physics", [0])]
    ap50 = rows[0]["AP50"]
    assert ap50["mean"] == pytest.approx(0.3) and ap50["ci95"] == [pytest.approx(0.2), pytest.approx(0.4)]
    assert rows[0]["train_seconds"]["mean"] == pytest.approx(10.5)
    assert rows[0]["froc_curve"]["sensitivity"] == [pytest.approx(0.25), pytest.approx(0.6)]
    summary = {"name": "t", "seeds": [0, 1], "bootstrap": 50, "rows": rows, "notes": ["arm `x` skipped: why"],
               "plot": "froc.png", "command": "rfo-bench benchmark --config b.yaml",
               "data": {"test_images": 4, "test_positive_images": 2, "test_objects": 2, "test_patients": 2,
                        "train_images": 12}}
    text = render_markdown(summary)
    assert "| fcos/r18 | real | 12 | 0.300 ± 0.141 [0.200, 0.400] |" in text
    assert "| n/a |" in text and "- arm `x` skipped: why" in text and "rfo-bench benchmark --config b.yaml" in text


def test_shipped_cpu_config_is_valid_and_cpu_sized() -> None:
    config = load_benchmark_config(REPO / "configs" / "benchmark_cpu.yaml")
    assert set(config.arms) == {"real", "real+physics", "real+diffusion", "synthetic_only"}
    assert all(m.recipe == "cpu-tiny" for m in config.models) and len(config.seeds) >= 2
    assert config.build is not None and config.build.n_train <= 64


def test_arm_subset_keeps_config_order_and_rejects_unlisted_arms() -> None:
    from rfo_toolkit.leaderboard import with_arms

    config = parse_benchmark_config(_config(arms=["real", "real+physics", "synthetic_only"]), file="b.yaml")
    assert with_arms(config, "synthetic_only, real").arms == ("real", "synthetic_only")
    with pytest.raises(UserInputError, match="subset"):
        with_arms(config, "real+diffusion")


def test_model_subset_by_label_or_name() -> None:
    from rfo_toolkit.leaderboard import with_models

    config = parse_benchmark_config(_config(), file="b.yaml")
    assert [m.display for m in with_models(config, "yolov8n").models] == ["yolov8n"]
    assert [m.display for m in with_models(config, "fcos/test_resnet,yolov8n").models] == ["fcos/test_resnet",
                                                                                            "yolov8n"]
    with pytest.raises(UserInputError, match="rows of the config"):
        with_models(config, "retinanet")


def test_seed_subset() -> None:
    from rfo_toolkit.leaderboard import with_seeds

    config = parse_benchmark_config(_config(seeds=[0, 1, 2]), file="b.yaml")
    assert with_seeds(config, "2,0").seeds == (0, 2)
    with pytest.raises(UserInputError, match="subset"):
        with_seeds(config, "5")
    with pytest.raises(UserInputError, match="integers"):
        with_seeds(config, "one")


def test_shipped_readme_config_is_valid_and_uses_the_sized_recipes() -> None:
    from rfo_bench.detectors.config import recipe_with_overrides

    config = load_benchmark_config(REPO / "configs" / "benchmark_readme.yaml")
    assert list(config.arms) == ["real", "real+physics", "real+diffusion", "synthetic_only"]
    assert list(config.seeds) == [0, 1] and [m.display for m in config.models] == ["yolov8n", "fasterrcnn/resnet10t"]
    yolo, frcnn = (recipe_with_overrides(m.recipe, m.overrides) for m in config.models)
    assert (yolo.imgsz, yolo.optimizer, yolo.mosaic, yolo.epochs) == (160, "adamw", 0.0, 24)
    assert (frcnn.imgsz, frcnn.optimizer, frcnn.epochs) == (160, "sgd", 8)
    assert config.build is not None and (config.build.n_train, config.build.n_test) == (48, 48)


def test_a_table_cell_shows_the_spread_and_interval_only_where_defined() -> None:
    from toolkit_core.table_cells import escape_markdown_cell, mean_std_cell

    assert mean_std_cell(0.3, 0.1414, digits=3, interval=(0.2, 0.4)) == "0.300 ± 0.141 [0.200, 0.400]"
    assert mean_std_cell(0.3, None, digits=2) == "0.30"
    assert mean_std_cell(0.3, float("nan"), digits=2, interval=(0.1, None)) == "0.30"
    assert mean_std_cell(float("nan"), 0.1) == mean_std_cell(None) == "n/a"
    assert mean_std_cell(float("inf"), missing="–") == "–"
    assert escape_markdown_cell("a|b\nc") == "a\\|b c"

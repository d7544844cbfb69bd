"""Tiled training end to end (tiny), the weights-hash check, resuming, and a recipe-file run.

Films are 110 high x 170 wide (non-square) and tiles 64 px; models are the test backbones, one epoch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from rfo_bench.detectors import TrainConfig, recipe_with_overrides
from rfo_bench.detectors.api import load_detector, train_detector
from rfo_bench.detectors.data import load_pixels
from rfo_bench.detectors.loop import train_torchvision
from rfo_bench.detectors.sliced import SlicedDetector
from rfo_bench.detectors.tiling import TileConfig
from rfo_bench.io.coco import read_coco
from rfo_toolkit.cli import rfo_bench_main as main
from tests.rfo_bench.test_detectors_data import write_tiny_coco
from toolkit_core.errors import UserInputError
from toolkit_core.utils import sha256_file

HEIGHT, WIDTH = 110, 170
TILE = 64
TINY = {"epochs": 1, "imgsz": TILE, "batch_size": 2, "warmup_iters": 0}


def tiled_config(model: str = "fcos", **fields) -> TrainConfig:
    tiling = TileConfig(tile_size=TILE, tiles_per_object=1, negative_ratio=0.5)
    return TrainConfig(model=model, recipe=recipe_with_overrides("cpu-tiny", TINY), seed=0, backbone="test_resnet",
                       tiling=tiling, **fields)


def test_tiled_torchvision_run_records_tiles_and_hash_and_predicts_on_whole_films(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))
    result = train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False, command="test")
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["tiles"]["positive"] == 2 and record["tiles"]["whole_film"] == 4  # one per object; every film
    assert record["tiles"]["negative"] == 1  # round(0.5 x 2)
    assert record["weights_sha256"] == sha256_file(tmp_path / "run" / record["weights"])
    assert record["config"]["tiling"]["tile_size"] == TILE and record["command"] == "test"
    assert record["compute"]["cpu_seconds"] > 0 and record["compute"]["accelerator_seconds"] == 0
    assert len(record["data_sha256"]) == 64
    assert not list((tmp_path / "run").glob(".tiles*"))  # the tile folder is removed
    detector = load_detector(result.run_dir)
    assert isinstance(detector, SlicedDetector)
    found = detector.predict(load_pixels(dataset, dataset.images[0]))
    assert len(found) > 0  # score threshold 0.001 keeps the tail
    assert found.boxes_xyxy[:, [0, 2]].max() <= WIDTH + 1e-3 and found.boxes_xyxy[:, [1, 3]].max() <= HEIGHT + 1e-3
    assert found.boxes_xyxy[:, [0, 2]].max() > HEIGHT  # film x beyond its height: width and height not swapped


def test_a_tiled_detector_predicts_with_its_records_slicing_unless_told_otherwise(tmp_path: Path, monkeypatch,
                                                                                    capsys) -> None:
    from rfo_bench.detectors import api
    from rfo_bench.detectors.sliced import SliceConfig

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2, height=HEIGHT, width=WIDTH))
    train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    record_file = tmp_path / "run" / "detector.json"
    record = json.loads(record_file.read_text())
    assert load_detector(tmp_path / "run").config == SliceConfig()  # a record that states none: the defaults
    record["slicing"] = {"merge": "greedy_nmm", "union_score_ratio": 0.3, "extent": "whole"}  # how it was evaluated
    record_file.write_text(json.dumps(record))
    assert load_detector(tmp_path / "run").config == SliceConfig(merge="greedy_nmm", union_score_ratio=0.3)
    # a record from before merged boxes could span only the whole views was evaluated with the plain union
    record["slicing"] = {"merge": "greedy_nmm", "union_score_ratio": 0.3}
    record_file.write_text(json.dumps(record))
    assert load_detector(tmp_path / "run").config == SliceConfig(merge="greedy_nmm", union_score_ratio=0.3,
                                                                 extent="union")
    # rfo-bench predict starts from the record's slicing and changes only what its flags say
    used = []
    real = api.load_detector
    monkeypatch.setattr(api, "load_detector", lambda *a, **k: used.append(k["slicing"]) or real(*a, **k))
    assert main(["predict", "--model-dir", str(tmp_path / "run"), "--data", str(dataset.source), "--out",
                 str(tmp_path / "p"), "--union-score-ratio", "0", "--no-progress"]) == 0
    assert used == [SliceConfig(merge="greedy_nmm", union_score_ratio=0.0, extent="union")]
    assert main(["predict", "--model-dir", str(tmp_path / "run"), "--data", str(dataset.source), "--out",
                 str(tmp_path / "p2"), "--extent", "whole", "--no-progress"]) == 0
    assert used[-1] == SliceConfig(merge="greedy_nmm", union_score_ratio=0.3, extent="whole")
    # a slicing entry that is not a valid one is one line naming the record and the field
    for bad, field in (({"overlap": 2}, "slicing.overlap"), ({"tiles": 3}, "slicing.tiles"),
                       ({"overlap": "wide"}, "slicing")):
        record["slicing"] = bad
        record_file.write_text(json.dumps(record))
        capsys.readouterr()
        assert main(["predict", "--model-dir", str(tmp_path / "run"), "--data", str(dataset.source), "--out",
                     str(tmp_path / "q"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "detector.json" in err[0] and field in err[0]


def test_weights_that_do_not_match_their_record_are_refused(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2, height=HEIGHT, width=WIDTH))
    train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    weights = tmp_path / "run" / "model.pt"
    state = torch.load(weights, weights_only=True)
    first = next(iter(state))
    state[first] = state[first] + 1  # same keys and shapes: only the hash can tell
    torch.save(state, weights)
    with pytest.raises(UserInputError, match="does not match its record"):
        load_detector(tmp_path / "run")
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    del record["weights_sha256"]
    (tmp_path / "run" / "detector.json").write_text(json.dumps(record))
    with pytest.raises(UserInputError, match="weights_sha256"):
        load_detector(tmp_path / "run", require_hash=True)


class TinyLossModel(nn.Module):
    """``model(images, targets) -> {"loss": ...}`` that fails on its ``fail_at``-th call (a killed run)."""

    def __init__(self, fail_at: int | None = None) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.calls, self.fail_at = 0, fail_at

    def forward(self, images, targets):
        self.calls += 1
        if self.fail_at is not None and self.calls == self.fail_at:
            raise KeyboardInterrupt
        return {"loss": (self.weight * torch.stack([im.mean() for im in images])).sum() ** 2}


class Samples(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 7  # 4 batches of 2 per epoch, the last one short

    def __getitem__(self, index: int):
        return torch.full((1, 11, 17), float(index + 1) / 7), {"boxes": torch.zeros((0, 4)), "labels": torch.zeros(0)}


def test_an_interrupted_run_resumes_to_the_same_number_of_steps(tmp_path: Path) -> None:
    recipe = recipe_with_overrides("cpu-tiny", {"epochs": 3, "batch_size": 2, "warmup_iters": 0, "lr": 0.001})
    whole = train_torchvision(TinyLossModel(), Samples(), recipe, seed=0, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(KeyboardInterrupt):  # killed in epoch 2, after 6 steps (checkpoint at step 6)
        train_torchvision(TinyLossModel(fail_at=7), Samples(), recipe, seed=0, progress=False,
                          checkpoint=checkpoint, checkpoint_every=3, fingerprint="a")
    resumed_model = TinyLossModel()
    resumed = train_torchvision(resumed_model, Samples(), recipe, seed=0, progress=False, checkpoint=checkpoint,
                                checkpoint_every=3, resume=True, fingerprint="a")
    assert [h["steps"] for h in resumed] == [h["steps"] for h in whole] == [4, 8, 12]
    assert resumed_model.calls == 12 - 6  # only the remaining steps ran
    # the data order is the same, so the losses agree (different code path: a tolerance, not equality)
    np.testing.assert_allclose([h["loss"] for h in resumed], [h["loss"] for h in whole], rtol=1e-5)
    with pytest.raises(UserInputError, match="another training configuration"):
        train_torchvision(TinyLossModel(), Samples(), recipe, seed=0, progress=False, checkpoint=checkpoint,
                          resume=True, fingerprint="b")


def test_recipe_file_trains_evaluates_and_records_provenance(tmp_path: Path, capsys) -> None:
    train = write_tiny_coco(tmp_path / "train", n=4, height=HEIGHT, width=WIDTH, seed=1)
    test = write_tiny_coco(tmp_path / "test", n=2, height=HEIGHT, width=WIDTH, seed=2)
    recipe = {
        "name": "tiny", "model": "fcos", "backbone": "test_resnet", "seed": 0, "classes": ["needle"],
        "data": {"train": str(train), "test": str(test), "commands": ["write_tiny_coco seed 1", "write_tiny_coco seed 2"],
                 "seeds": {"train": 1, "test": 2}, "held_out": "other films"},
        "recipe": {"base": "cpu-tiny", "epochs": 1, "imgsz": TILE, "batch_size": 2, "warmup_iters": 0},
        "tiling": {"tile_size": TILE, "tiles_per_object": 1}, "checkpoint_every": 1, "bootstrap": 0,
    }
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(file), "--out", str(tmp_path / "run"), "--device", "auto",
                 "--no-progress"]) == 0
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    assert record["recipe_sha256"] == sha256_file(file) and record["data_seeds"] == {"train": 1, "test": 2}
    assert record["held_out_metrics"]["images"] == 2 and "AP50" in record["held_out_metrics"]
    assert record["command"].startswith("rfo-bench ") or record["command"]
    assert record["weights_sha256"] == sha256_file(tmp_path / "run" / record["weights"])
    assert (tmp_path / "run" / "checkpoint.pt").is_file()  # kept: a --resume of a finished run has nothing to redo
    from rfo_bench.detectors.shipped import load_shipped_detector

    assert isinstance(load_shipped_detector(tmp_path / "run"), SlicedDetector)
    # the recipe's classes must be the data's
    recipe["classes"] = ["blade"]
    file.write_text(yaml.safe_dump(recipe))
    capsys.readouterr()
    assert main(["train", "--config", str(file), "--out", str(tmp_path / "other"), "--no-progress"]) == 2
    assert "classes" in capsys.readouterr().err


def test_train_flags_build_the_tiling_and_refuse_a_mismatched_size(tmp_path: Path, capsys) -> None:
    data = write_tiny_coco(tmp_path / "d", n=2, height=HEIGHT, width=WIDTH)
    code = main(["train", "--model", "fcos", "--backbone", "test_resnet", "--data", str(data), "--out",
                 str(tmp_path / "r"), "--tile-size", "64", "--imgsz", "96", "--no-progress"])
    assert code == 2 and "tile size" in capsys.readouterr().err
    assert main(["train", "--model", "fcos", "--data", str(data), "--out", str(tmp_path / "r"),
                 "--device", "cuda:7", "--no-progress"]) == 2 or torch.cuda.device_count() > 7


def test_tiled_yolo_trains_on_8bit_windowed_tiles_and_predicts_sliced(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))
    result = train_detector(tiled_config("yolov8n"), [dataset], tmp_path / "run", progress=False)
    assert result.record["tiles"]["positive"] == 2
    assert result.record["weights_sha256"] == sha256_file(tmp_path / "run" / result.record["weights"])
    detector = load_detector(result.run_dir)  # through check_yolo_checkpoint: the restricted loader
    assert isinstance(detector, SlicedDetector)
    found = detector.predict(load_pixels(dataset, dataset.images[0]))
    assert found.boxes_xyxy.shape[1] == 4 and set(found.category_ids.tolist()) <= {3}
    assert not list((tmp_path / "run").glob(".tiles*")) and not list((tmp_path / "run").glob(".yolo_data*"))


def test_the_shipped_recipe_parses_and_a_bad_recipe_is_one_line(tmp_path: Path, capsys) -> None:
    from rfo_bench.detectors.shipped import load_training_recipe

    shipped = load_training_recipe(Path(__file__).parents[2] / "configs" / "shipped_detector.yaml")
    config = shipped.train_config("cpu")
    assert config.tiling is not None and config.recipe.imgsz == config.tiling.tile_size
    assert len(shipped.classes) == 10 and shipped.data_seeds["train"] != shipped.data_seeds["test"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "yolov8n", "classes": ["a"], "data": {"train": "x"},
                                   "recipe": {"epochs": 1}, "tiling": {"tile_size": 64, "tiles": 3}}))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tiling" in err and "tiles" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("flags", [["--seed", "0"], ["--lr", "0.02"], ["--recipe", "paper"], ["--no-whole-films"],
                                   ["--min-visible-fraction", "0.3"], ["--weights", "w.pt"], ["--val", "v.json"]])
def test_a_recipe_file_refuses_the_flags_it_states_itself(tmp_path: Path, capsys, flags: list[str]) -> None:
    """Silently training with the recipe's value while the record's command shows the flag would be a lie."""
    shipped = str(Path(__file__).parents[2] / "configs" / "shipped_detector.yaml")
    assert main(["train", "--config", shipped, "--out", str(tmp_path / "r"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{flags[0]}: a recipe file states this itself" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(("entry", "field", "message"), [
    ({"seed": "zero"}, "seed", "expected an integer"), ({"seed": 1.7}, "seed", "expected an integer"),
    ({"seed": True}, "seed", "expected an integer"),
    ({"checkpoint_every": -5}, "checkpoint_every", "expected an integer >= 0"),
    ({"bootstrap": -1}, "bootstrap", "expected an integer >= 0"),
    ({"weights": 3}, "weights", "expected a string"), ({"model": ["yolov8n"]}, "model", "expected a string"),
    ({"data": {"train": "x", "test": 7}}, "data.test", "expected a string"),
    ({"data": {"train": "x", "commands": "render"}}, "data.commands", "expected a list of commands"),
    ({"data": {"train": "x", "seeds": {"train": -1}}}, "data.seeds.train", "expected a seed >= 0"),
    ({"data": {"train": "x", "seeds": [1701]}}, "data.seeds", "expected a mapping"),
])
def test_a_recipe_entry_of_the_wrong_type_is_refused_naming_it(tmp_path: Path, entry: dict, field: str,
                                                                 message: str) -> None:
    """A recipe is a user's file: 1.7 is not silently seed 1, a number is not a path."""
    from rfo_bench.detectors.shipped import load_training_recipe

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "yolov8n", "classes": ["a"], "data": {"train": "x"},
                                   "recipe": {"epochs": 1}, "tiling": {"tile_size": 64}, **entry}))
    with pytest.raises(UserInputError) as info:
        load_training_recipe(bad)
    assert str(info.value).startswith(f"{bad}: {field}: {message}")


def test_unseen_classes_lose_their_boxes_but_keep_their_slot(tmp_path: Path, capsys) -> None:
    from rfo_bench.detectors.shipped import load_training_recipe, without_classes

    shipped = load_training_recipe(Path(__file__).parents[2] / "configs" / "shipped_detector.yaml")
    assert shipped.unseen_classes == ("chain",) and "chain" in shipped.classes
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))
    name = dataset.categories[0].name
    kept = without_classes(dataset, (name,))
    assert sum(len(r.objects) for r in dataset.images) > 0 and sum(len(r.objects) for r in kept.images) == 0
    assert kept.categories == dataset.categories and len(kept) == len(dataset)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"model": "yolov8n", "classes": ["a"], "unseen_classes": ["b"],
                                   "data": {"train": "x"}, "recipe": {"epochs": 1}, "tiling": {"tile_size": 64}}))
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "unseen_classes" in err and len(err.splitlines()) == 1


def test_a_detection_of_a_class_the_films_lack_is_a_false_positive_not_left_out(tmp_path: Path) -> None:
    """Films that hold fewer classes than the detector (the demo's four of ten): its detections of the others
    count against FROC; AP50, scored per class the films hold, does not change."""
    from rfo_bench.detectors.data import CategoryMap
    from rfo_bench.detectors.detections import Detections
    from rfo_bench.detectors.shipped import predict_and_evaluate, with_detector_classes
    from rfo_bench.eval_config import EvalConfig
    from rfo_bench.io.records import Category

    test = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))  # needle (3) only
    needle = test.categories[0]
    categories = CategoryMap((needle, Category(5, "clamp", True)))
    truth = {r.image_id: r.objects[0].bbox_xyxy for r in test.images if r.objects}

    class Detector:  # the needle exactly (0.9); clamps where the films hold nothing, confident on three films
        def __init__(self) -> None:
            self.categories, self.calls = categories, 0

        def predict(self, pixels) -> Detections:
            self.calls += 1
            record = test.images[self.calls - 1]
            boxes, scores = [[120.0, 60.0, 160.0, 100.0]], [0.5]
            if self.calls <= 3:
                boxes, scores = [*boxes, [2.0, 2.0, 30.0, 30.0]], [*scores, 0.95]
            ids = [5] * len(boxes)
            if record.image_id in truth:
                boxes, scores, ids = [*boxes, list(truth[record.image_id])], [*scores, 0.9], [*ids, 3]
            return Detections(np.array(boxes, np.float32), np.array(scores, np.float32), np.array(ids, np.int64))

    assert with_detector_classes(test, categories).categories == (needle, Category(5, "clamp", True))
    report = predict_and_evaluate(Detector(), test, tmp_path / "p", EvalConfig(bootstrap=0), progress=False)[0].report
    # every needle is found, after 0.75 false positives per film (the confident clamps; the 0.5 ones come after):
    # none found at 0.125, 0.25 and 0.5 FP per film, all from 1 on (4 of the 7 points). Left out, the clamps would
    # give 1.0. AP50 is scored per class the films hold: the needles alone, found exactly.
    assert report["coco"]["AP50"] == pytest.approx(1.0, abs=1e-6)
    assert report["froc"]["score"] == pytest.approx(4 / 7, abs=1e-6)
    clash = CategoryMap((Category(3, "blade", True),))
    with pytest.raises(UserInputError, match="category id 3"):
        with_detector_classes(test, clash)


def test_an_interrupted_run_keeps_its_tiles_and_the_resumed_run_does_not_cut_them_again(tmp_path: Path,
                                                                                       monkeypatch) -> None:
    import rfo_bench.detectors.api as api
    import rfo_bench.detectors.tiling as tiling

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))
    real_train = api._train_torchvision

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "_train_torchvision", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    kept = tmp_path / "run" / ".tiles"
    assert (kept / "tiles.json").is_file() and len(list((kept / "train").glob("*.png"))) == 7  # 2 + 1 + 4 films
    assert not list((tmp_path / "run").glob(".tiles.tmp-*"))

    cut = tiling.write_tile_dataset
    monkeypatch.setattr(api, "_train_torchvision", real_train)
    monkeypatch.setattr(tiling, "write_tile_dataset", lambda *a, **k: pytest.fail("tiles cut again"))
    result = train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False, resume=True)
    assert result.record["tiles"]["positive"] == 2 and result.record["tiles"]["whole_film"] == 4
    assert not kept.exists()  # removed once training finished

    # another seed is another set of tiles: a stale folder of this toolkit is replaced, not reused
    monkeypatch.setattr(tiling, "write_tile_dataset", cut)
    monkeypatch.setattr(api, "_train_torchvision", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_detector(tiled_config(), [dataset], tmp_path / "run2", progress=False)
    first_key = json.loads((tmp_path / "run2" / ".tiles" / "tiles.json").read_text())["key"]
    other = TrainConfig(**{**tiled_config().__dict__, "seed": 1})
    with pytest.raises(KeyboardInterrupt):
        train_detector(other, [dataset], tmp_path / "run2", progress=False)
    assert json.loads((tmp_path / "run2" / ".tiles" / "tiles.json").read_text())["key"] != first_key


def test_a_tile_folder_the_toolkit_did_not_write_is_never_replaced(tmp_path: Path) -> None:
    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2, height=HEIGHT, width=WIDTH))
    foreign = tmp_path / "run" / ".tiles"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserInputError, match="did not write"):
        train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_a_cut_stopped_part_way_goes_on_where_it_stopped(tmp_path: Path, monkeypatch) -> None:
    import rfo_bench.detectors.api as api
    import rfo_bench.detectors.tiling as tiling

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))
    whole, _ = tiling.write_tile_dataset([dataset], tiled_config().tiling, tmp_path / "whole", seed=0)
    real_cut, calls = tiling.cut_tile, []

    def stopping_cut(film, plan):
        calls.append(1)
        if len(calls) == 4:  # part-way through the films
            raise KeyboardInterrupt
        return real_cut(film, plan)

    monkeypatch.setattr(tiling, "cut_tile", stopping_cut)
    with pytest.raises(KeyboardInterrupt):
        train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    partial = tmp_path / "run" / ".tiles.partial"
    kept = sorted(p.name for p in (partial / "train").glob("*.png"))
    assert 0 < len(kept) < len(whole)

    films_read = []
    real_read = tiling.window_film
    monkeypatch.setattr(tiling, "cut_tile", real_cut)
    monkeypatch.setattr(tiling, "window_film", lambda pixels, window: films_read.append(1) or real_read(pixels, window))
    seen = {}

    def capture(builder, config, fit_sets, *args, **kwargs):
        seen["tiles"] = fit_sets[0]
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "_train_torchvision", capture)
    with pytest.raises(KeyboardInterrupt):
        train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    assert len(films_read) < 4  # the films whose tiles were all written are not read again
    tiles = seen["tiles"]
    assert [(r.file_name.split("/")[-1], r.width, r.height, [o.bbox_xyxy for o in r.objects]) for r in tiles.images] \
        == [(r.file_name, r.width, r.height, [o.bbox_xyxy for o in r.objects]) for r in whole.images]
    assert not partial.exists() and (tmp_path / "run" / ".tiles" / "tiles.json").is_file()


def test_resuming_a_finished_run_cuts_and_trains_nothing(tmp_path: Path, monkeypatch) -> None:
    import rfo_bench.detectors.api as api
    import rfo_bench.detectors.tiling as tiling

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2, height=HEIGHT, width=WIDTH))
    first = train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    monkeypatch.setattr(tiling, "write_tile_dataset", lambda *a, **k: pytest.fail("tiles cut again"))
    monkeypatch.setattr(api, "_train_torchvision", lambda *a, **k: pytest.fail("trained again"))
    again = train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False, resume=True)
    assert again.record["weights_sha256"] == first.record["weights_sha256"]
    # another configuration in the same folder is not "finished", nor a run to resume: refused, untouched
    with pytest.raises(UserInputError, match="seed: the run was started with seed=0"):
        train_detector(TrainConfig(**{**tiled_config().__dict__, "seed": 3}), [dataset], tmp_path / "run",
                       progress=False, resume=True)


def test_tiles_cut_by_worker_processes_are_the_tiles_cut_in_one(tmp_path: Path) -> None:
    import rfo_bench.detectors.tiling as tiling

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=4, height=HEIGHT, width=WIDTH))
    config = tiled_config().tiling
    one, counts_one = tiling.write_tile_dataset([dataset], config, tmp_path / "one", seed=0, bit_depth=8)
    two, counts_two = tiling.write_tile_dataset([dataset], config, tmp_path / "two", seed=0, bit_depth=8, workers=2)
    assert counts_one == counts_two and one.images == two.images  # records: names, sizes, boxes, in film order
    for record in one.images:
        assert sha256_file(tmp_path / "one" / record.file_name) == sha256_file(tmp_path / "two" / record.file_name)
    with pytest.raises(UserInputError, match="non-negative"):
        TrainConfig(**{**tiled_config().__dict__, "workers": -1})


def test_a_tile_folder_holding_a_users_file_is_not_replaced(tmp_path: Path, monkeypatch) -> None:
    import rfo_bench.detectors.api as api

    dataset = read_coco(write_tiny_coco(tmp_path / "d", n=2, height=HEIGHT, width=WIDTH))

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(api, "_train_torchvision", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_detector(tiled_config(), [dataset], tmp_path / "run", progress=False)
    (tmp_path / "run" / ".tiles" / "notes.txt").write_text("mine")
    other = TrainConfig(**{**tiled_config().__dict__, "seed": 1})  # other tiles: .tiles would be replaced
    with pytest.raises(UserInputError, match="notes.txt"):
        train_detector(other, [dataset], tmp_path / "run", progress=False)
    assert (tmp_path / "run" / ".tiles" / "notes.txt").read_text() == "mine"


def test_a_running_recipes_checkpoint_is_evaluated_as_its_record_will_be(tmp_path: Path, monkeypatch, capsys) -> None:
    import runpy
    import shutil

    from rfo_bench.detectors.shipped import evaluate_checkpoint

    train = write_tiny_coco(tmp_path / "train", n=4, height=HEIGHT, width=WIDTH, seed=1)
    test = write_tiny_coco(tmp_path / "test", n=3, height=HEIGHT, width=WIDTH, seed=2)
    recipe = {
        "name": "tiny", "model": "yolov8n", "seed": 0, "classes": ["needle"],
        "data": {"train": str(train), "test": str(test), "commands": ["write_tiny_coco seed 1", "write_tiny_coco seed 2"],
                 "seeds": {"train": 1, "test": 2}, "held_out": "other films"},
        "recipe": {"base": "cpu-tiny", "epochs": 1, "imgsz": TILE, "batch_size": 2, "warmup_iters": 0},
        "tiling": {"tile_size": TILE, "tiles_per_object": 1}, "bootstrap": 0,
    }
    file = tmp_path / "recipe.yaml"
    file.write_text(yaml.safe_dump(recipe))
    assert main(["train", "--config", str(file), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    record = json.loads((tmp_path / "run" / "detector.json").read_text())
    checkpoint = tmp_path / "run" / record["weights"]
    with pytest.raises(UserInputError, match="held-out test"):
        evaluate_checkpoint(file, checkpoint, test, tmp_path / "probe", progress=False)
    same_films = Path(shutil.copytree(test.parent, tmp_path / "films")) / test.name  # the test's films, elsewhere
    with pytest.raises(UserInputError, match="3 of its films are the recipe's held-out test films"):
        evaluate_checkpoint(file, checkpoint, same_films, tmp_path / "probe", progress=False)
    # the same recipe naming other test films evaluates these as the record's held-out evaluation did
    other = write_tiny_coco(tmp_path / "other", n=2, height=HEIGHT, width=WIDTH, seed=3)
    file = tmp_path / "recipe_other_test.yaml"
    file.write_text(yaml.safe_dump({**recipe, "data": {**recipe["data"], "test": str(other)}}))
    probe = evaluate_checkpoint(file, checkpoint, same_films, tmp_path / "probe", progress=False)
    held_out = record["held_out_metrics"]
    assert probe["epoch"] is None and probe["images"] == held_out["images"] == 3  # finished weights
    for key in ("AP50", "FROC"):  # the same weights, films and evaluation: the same figures
        assert probe[key] == pytest.approx(held_out[key], abs=1e-9)
    script = Path(__file__).parents[2] / "benchmarks" / "probe_checkpoint.py"
    argv = [str(script), "--config", str(file), "--checkpoint", str(checkpoint), "--data", str(same_films),
            "--out", str(tmp_path / "probe_cli")]
    monkeypatch.setattr("sys.argv", argv)
    runpy.run_path(str(script), run_name="__main__")
    assert json.loads((tmp_path / "probe_cli" / "probe.json").read_text())["AP50"] == pytest.approx(probe["AP50"])
    assert "finished run: AP50" in capsys.readouterr().out
    monkeypatch.setattr("sys.argv", [str(script), "--config", str(file), "--checkpoint", str(checkpoint),
                                     "--data", str(other), "--out", str(tmp_path / "probe_test")])
    with pytest.raises(SystemExit) as stop:
        runpy.run_path(str(script), run_name="__main__")
    assert stop.value.code == 2 and "held-out test" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value"), [("tiles_per_object", 0), ("min_visible_fraction", 0.0)])
def test_a_zero_tile_flag_is_refused_not_replaced_by_the_default(flag: str, value: float) -> None:
    import argparse

    from rfo_bench.detectors.commands import tile_config_from_args

    args = argparse.Namespace(tile_size=64, tiles_per_object=None, negative_ratio=None, min_visible_fraction=None,
                              cut_policy=None, no_whole_films=False)
    setattr(args, flag, value)
    with pytest.raises(UserInputError, match=flag):
        tile_config_from_args(args)

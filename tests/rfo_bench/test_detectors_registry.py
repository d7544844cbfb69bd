"""Detector registry, recipes and the learning-rate schedule."""

from __future__ import annotations

import json
import math

import pytest

from rfo_bench.detectors import RECIPES, TrainConfig, get_detector, list_detectors, recipe_with_overrides
from rfo_bench.detectors.config import Recipe
from rfo_bench.detectors.loop import lr_factor
from rfo_bench.detectors.registry import register_detector
from rfo_bench.detectors.tiling import TileConfig
from toolkit_core.errors import UserInputError


def test_every_baseline_is_registered_with_its_family() -> None:
    assert list_detectors("torchvision") == ["fasterrcnn", "fcos", "retinanet"]
    assert list_detectors("ultralytics") == ["yolo11n", "yolo11s", "yolov8n", "yolov8s"]
    assert get_detector("yolo11s").builder() == "yolo11s.yaml"


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(UserInputError, match="fasterrcnn") as info:
        get_detector("detr")
    assert info.value.field == "model" and info.value.value == "detr"


def test_duplicate_registration_raises() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_detector("fcos", family="torchvision", description="again")(lambda n, c: None)
    with pytest.raises(ValueError, match="family"):
        register_detector("x", family="mmdet", description="")


def test_paper_recipe_is_the_published_optimiser() -> None:
    paper = RECIPES["paper"]
    assert (paper.lr, paper.momentum, paper.weight_decay, paper.lr_gamma) == (0.005, 0.9, 5e-4, 0.1)
    assert RECIPES["cpu-tiny"].imgsz <= 256 and RECIPES["cpu-tiny"].epochs <= 10


def test_overrides_replace_fields_and_reject_unknown_or_invalid() -> None:
    recipe = recipe_with_overrides("paper", {"epochs": 2, "imgsz": None, "lr": 1})
    assert recipe.epochs == 2 and recipe.imgsz == RECIPES["paper"].imgsz and recipe.name == "paper"
    assert isinstance(recipe.lr, float) and recipe.lr == 1.0
    with pytest.raises(UserInputError, match="unknown recipe field"):
        recipe_with_overrides("paper", {"epoch": 2})
    with pytest.raises(UserInputError, match="positive integer"):
        recipe_with_overrides("paper", {"epochs": 0})
    with pytest.raises(UserInputError, match="unknown recipe"):
        recipe_with_overrides("fast", {})
    with pytest.raises(UserInputError, match="seed"):
        TrainConfig(model="fcos", recipe=RECIPES["paper"], seed=-1)


def test_train_config_round_trips_through_json_dict() -> None:
    config = TrainConfig(model="fcos", recipe=recipe_with_overrides("cpu-tiny", {"epochs": 3}), seed=7,
                         backbone="test_resnet")
    assert TrainConfig.from_dict(config.to_dict()) == config
    tiled = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", {"imgsz": 64}),
                        tiling=TileConfig(tile_size=64), threads=3)
    assert TrainConfig.from_dict(json.loads(json.dumps(tiled.to_dict()))) == tiled  # lists come back as tuples


@pytest.mark.parametrize(("change", "field"), [
    ({"recipe": {"epochs": 1, "momentum_typo": 0.9}}, "config.recipe.momentum_typo"),  # a newer release's key
    ({"recipe": None}, "config.recipe"),
    ({"recipe": "paper"}, "config.recipe"),
    ({"tiling": {"tile_size": "big"}}, "config.tiling"),
    ({"seed": -3}, "config.seed"),
    ({"threads": 0}, "config.threads"),
    ({"colour": "red"}, "config.colour"),
])
def test_a_damaged_record_config_fails_in_one_line_naming_its_field(change: dict, field: str) -> None:
    data = TrainConfig(model="yolov8n", recipe=recipe_with_overrides("cpu-tiny", {"imgsz": 64}),
                       tiling=TileConfig(tile_size=64)).to_dict()
    if isinstance(change.get("recipe"), dict):
        change = {"recipe": {**data["recipe"], **change["recipe"]}}
    with pytest.raises(UserInputError) as info:
        TrainConfig.from_dict({**data, **change}, file="run/detector.json")
    assert str(info.value).startswith(f"run/detector.json: {field}") and "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("iteration", "expected"),
    [
        (0, 1 / 4),      # warm-up: (0 + 1) / 4
        (2, 3 / 4),
        (3, 1.0),        # warm-up done, epoch 0
        (9, 1.0),        # epoch 1 (10 iterations per epoch): before the first step
        (20, 0.1),       # epoch 2 = lr_step_epochs -> x0.1
        (45, 0.01),      # epoch 4 -> x0.01
    ],
)
def test_lr_factor_hand_computed(iteration: int, expected: float) -> None:
    recipe = Recipe(name="t", epochs=6, imgsz=64, batch_size=2, lr_step_epochs=2, lr_gamma=0.1, warmup_iters=4)
    assert math.isclose(lr_factor(iteration, iters_per_epoch=10, recipe=recipe), expected, rel_tol=1e-12)


def test_optimizer_is_a_recipe_field_with_known_choices() -> None:
    assert RECIPES["paper"].optimizer == "sgd"
    assert recipe_with_overrides("cpu-tiny", {"optimizer": "adamw"}).optimizer == "adamw"
    with pytest.raises(UserInputError, match="unknown optimizer") as info:
        recipe_with_overrides("cpu-tiny", {"optimizer": "lion"})
    assert info.value.field == "optimizer"
    with pytest.raises(UserInputError, match=r"\[0, 1\]"):
        recipe_with_overrides("cpu-tiny", {"mosaic": 1.5})
    with pytest.raises(UserInputError, match="non-negative integer") as info:
        recipe_with_overrides("cpu-tiny", {"close_mosaic": 1.5})
    assert info.value.field == "close_mosaic"

"""The detection comparison's pure parts: paired intervals, the verdict, arm sets, cache keys, the page."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.records import Category, DetectionDataset, ImageRecord
from rfo_toolkit.diffusion_comparison import (
    ComparisonConfig,
    arm_training_sets,
    compare_arms,
    paired_bootstrap_interval,
    seed_cell_key,
    verdict,
)
from rfo_toolkit.diffusion_comparison_page import comparison_markdown, headline


def test_paired_bootstrap_interval_is_the_percentile_interval_of_the_seed_mean_difference():
    # two seeds, five replicates: the seed-mean differences are 0.0, 0.1, 0.2, 0.3, 0.4 (hand computed)
    reference = np.array([[0.5, 0.5, 0.5, 0.5, 0.5], [0.2, 0.3, 0.4, 0.5, 0.6]])
    treatment = reference + np.array([[0.0, 0.1, 0.2, 0.3, 0.4], [0.0, 0.1, 0.2, 0.3, 0.4]])
    found = paired_bootstrap_interval(treatment, reference, level=0.5)
    assert found["replicates_used"] == 5
    assert found["low"] == pytest.approx(0.1) and found["high"] == pytest.approx(0.3)


def test_pairing_removes_the_shared_test_set_variation():
    # replicates that move both arms together (a hard or easy resample of the test films) cancel out
    rng = np.random.default_rng(0)
    shared = rng.normal(0.3, 0.1, size=(3, 2000))
    treatment, reference = shared + 0.02, shared
    paired = paired_bootstrap_interval(treatment, reference)
    assert paired["low"] == pytest.approx(0.02) and paired["high"] == pytest.approx(0.02)
    unpaired = paired_bootstrap_interval(treatment, reference[:, ::-1])
    assert unpaired["high"] - unpaired["low"] > 0.1  # the same data unpaired: an interval 0.2 wide around 0.02


def test_undefined_replicates_are_left_out_and_counted():
    reference = np.array([[0.1, np.nan, 0.1, 0.1]])
    found = paired_bootstrap_interval(reference + 0.05, reference)
    assert found["replicates_used"] == 3 and found["low"] == pytest.approx(0.05)
    assert paired_bootstrap_interval(np.full((1, 2), np.nan), np.zeros((1, 2)))["replicates_used"] == 0


def test_paired_bootstrap_interval_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="one shape"):
        paired_bootstrap_interval(np.zeros((2, 5)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_interval(np.zeros((2, 5)), np.zeros((2, 5)), level=1.0)


@pytest.mark.parametrize(("seeds", "images", "expected"), [
    ((0.01, 0.05), (0.02, 0.04), "better"),
    ((-0.05, -0.01), (-0.04, -0.02), "worse"),
    ((-0.01, 0.05), (0.02, 0.04), "no difference shown"),  # one interval holds 0: no call
    ((0.01, 0.05), (-0.04, -0.02), "no difference shown"),  # the two disagree
    ((math.nan, math.nan), (0.02, 0.04), "no difference shown"),
])
def test_an_arm_is_called_better_only_where_both_intervals_exclude_zero(seeds, images, expected):
    assert verdict({"low": seeds[0], "high": seeds[1]}, {"low": images[0], "high": images[1]}) == expected


def _cells(values: dict[tuple[str, int], float]) -> list[dict]:
    return [{"arm": arm, "seed": seed, "values": {"AP50": v, "FROC": v}} for (arm, seed), v in values.items()]


def test_compare_arms_pairs_by_seed():
    values = {("physics", 0): 0.20, ("physics", 1): 0.30, ("physics", 2): 0.25,
              ("physics+diffusion", 2): 0.265, ("physics+diffusion", 0): 0.22, ("physics+diffusion", 1): 0.325}
    reps = {key: {"AP50": np.full(10, v), "FROC": np.full(10, v)} for key, v in values.items()}
    found = compare_arms(_cells(values), reps, "physics+diffusion", "physics")["AP50"]
    assert found["seeds"] == [0, 1, 2]
    assert found["per_seed"] == pytest.approx([0.02, 0.025, 0.015])
    assert found["mean"] == pytest.approx(0.02)
    # Student t with 2 degrees of freedom: 4.303 * std 0.005 / sqrt(3)
    assert found["over_seeds"]["high"] - found["mean"] == pytest.approx(4.3027 * 0.005 / math.sqrt(3), rel=1e-3)
    assert found["over_images"]["low"] == pytest.approx(0.02) and found["verdict"] == "better"


def test_compare_arms_without_replicates_gives_no_image_interval():
    values = {("physics", 0): 0.2, ("physics+diffusion", 0): 0.1}
    found = compare_arms(_cells(values), {}, "physics+diffusion", "physics")["AP50"]
    assert found["over_images"]["replicates_used"] == 0 and found["verdict"] == "no difference shown"


def _dataset(n: int, name: str) -> DetectionDataset:
    images = tuple(ImageRecord(image_id=i + 1, file_name=f"{name}{i}.png", width=17, height=11, objects=())
                   for i in range(n))
    return DetectionDataset(Path("."), images, (Category(id=1, name="sponge"),), name)


def test_the_compared_arms_have_equal_image_counts_and_share_the_physics_half():
    physics, diffusion = _dataset(10, "p"), _dataset(5, "d")
    full = arm_training_sets("physics", physics, diffusion, 10)
    mixed = arm_training_sets("physics+diffusion", physics, diffusion, 10)
    half = arm_training_sets("physics_half", physics, diffusion, 10)
    assert sum(map(len, full)) == sum(map(len, mixed)) == 10 and sum(map(len, half)) == 5
    assert mixed[0].images == full[0].images[:5] == half[0].images
    assert [r.file_name for r in mixed[1].images] == [f"d{i}" + ".png" for i in range(5)]
    with pytest.raises(ValueError, match="unknown arm"):
        arm_training_sets("real", physics, diffusion, 10)


def test_cache_keys_ignore_what_cannot_change_a_cell():
    base = ComparisonConfig()
    other_generator = ComparisonConfig(generator_steps=base.generator_steps + 1)
    assert seed_cell_key(base, "physics", 0) == seed_cell_key(other_generator, "physics", 0)
    assert seed_cell_key(base, "physics+diffusion", 0) != seed_cell_key(other_generator, "physics+diffusion", 0)
    assert seed_cell_key(base, "physics", 0) == seed_cell_key(ComparisonConfig(half_arm=True), "physics", 0)
    assert seed_cell_key(base, "physics", 0) != seed_cell_key(base, "physics", 1)
    assert seed_cell_key(base, "physics", 0) != seed_cell_key(ComparisonConfig(epochs=5), "physics", 0)
    # a field added later is left out of the key at the value earlier cells were made with
    assert seed_cell_key(base, "physics+diffusion", 0) != seed_cell_key(
        ComparisonConfig(scale_groups="fit"), "physics+diffusion", 0)
    with pytest.raises(ValueError, match="even"):
        ComparisonConfig(n_train=301)


def test_the_page_states_counts_intervals_and_the_verdict():
    from dataclasses import asdict

    values = {("physics", 0): 0.20, ("physics", 1): 0.30, ("physics+diffusion", 0): 0.10,
              ("physics+diffusion", 1): 0.12}
    cells = []
    for cell in _cells(values):
        cell.update(ci95={"AP50": [0.1, 0.3], "FROC": [None, None]}, per_class_AP50={"sponge": 0.5, "chain": None},
                    train_images=300, train_objects=400, train_cpu_seconds=240.0)
        cells.append(cell)
    reps = {key: {"AP50": np.full(4, v), "FROC": np.full(4, v)} for key, v in values.items()}
    result = {"config": asdict(ComparisonConfig(classes=("sponge", "chain"))), "seeds": [0, 1], "cells": cells,
              "comparisons": {"physics+diffusion - physics": compare_arms(cells, reps, "physics+diffusion", "physics")},
              "sets": {"test": {"images": 150, "objects": 206}, "generator_train": {"images": 400, "objects": 591}},
              "commands": ["rfo-synth physics --n 150"], "compute": {"train diffusion generator": {"wall_s": 60.0,
                                                                                                "cpu_s": 60.0}}}
    page = comparison_markdown(result, "bench --detection-seeds 0,1")
    assert "| physics | 0 | 300 (400) | 0.200 [0.100, 0.300] | 0.200 n/a | 0.500 | n/a | 4.0 |" in page
    assert "150 physics films (206 objects)" in page and "| detector training, 4 cells | 0.0 | 16.0 |" in page
    line = headline(result)
    assert "AP50 0.110 vs 0.250" in line and "difference -0.140" in line
    assert "[-0.140, -0.140] over test images" in line and "not distinguishable" in line
    assert "| physics+diffusion | 2 | 0.110 ± 0.014 |" in page and "| n/a |" in page

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


def test_the_refined_arm_uses_the_same_films_with_its_second_half_refined():
    physics = _dataset(6, "physics")
    refined = _dataset(3, "refined")
    sets = arm_training_sets("physics+refined", physics, None, 6, refined)
    assert [len(d) for d in sets] == [3, 3] and sets[1] is not physics
    assert [r.file_name for r in sets[0].images] == ["physics0.png", "physics1.png", "physics2.png"]
    assert [r.file_name for r in sets[1].images] == ["refined0.png", "refined1.png", "refined2.png"]
    with pytest.raises(ValueError, match="refined"):
        arm_training_sets("physics+refined", physics, None, 6)
    assert ComparisonConfig().arms == ("physics", "physics+diffusion", "physics+refined")
    assert ComparisonConfig(refine_arm=False, half_arm=True).arms == ("physics", "physics+diffusion", "physics_half")


def test_refine_fields_change_only_the_refined_cells():
    base, other = ComparisonConfig(), ComparisonConfig(refine_train_steps=7, refine_t0_grid=(0.1,))
    for arm in ("physics", "physics+diffusion"):
        assert seed_cell_key(base, arm, 0) == seed_cell_key(other, arm, 0)
    assert seed_cell_key(base, "physics+refined", 0) != seed_cell_key(other, "physics+refined", 0)
    # the refined arm does not depend on the diffusion generator
    assert seed_cell_key(base, "physics+refined", 0) == seed_cell_key(
        ComparisonConfig(generator_steps=1), "physics+refined", 0)


def test_the_page_states_the_refined_arm_and_its_t0_choice():
    from dataclasses import asdict

    values = {("physics", 0): 0.20, ("physics", 1): 0.30, ("physics+diffusion", 0): 0.10,
              ("physics+diffusion", 1): 0.12, ("physics+refined", 0): 0.21, ("physics+refined", 1): 0.33}
    cells = []
    for cell in _cells(values):
        cell.update(ci95={"AP50": [0.1, 0.3], "FROC": [0.1, 0.3]}, per_class_AP50={"sponge": 0.5},
                    train_images=300, train_objects=400, train_cpu_seconds=240.0)
        cells.append(cell)
    reps = {key: {"AP50": np.full(4, v), "FROC": np.full(4, v)} for key, v in values.items()}
    refiner = {"config": {"batch_size": 16, "patch_px": 64, "size_px": 256, "gain_range": [0.8, 1.25],
                          "offset_range": [-0.1, 0.1]}, "film": {"name": "RG1_UNCR.dcm", "sha256": "ab" * 32},
               "crop_windows": 100, "step": 600, "loss_first_50": 0.5, "loss_last_50": 0.1, "parameters": 636465,
               "t0": 0.15, "t0_selection": {"grid": [0.1, 0.15, 0.2], "validation_images": 40,
                                             "validation_objects": 32,
                                             "rule": {"keep": 0.85, "coverage": 0.9, "min_contrast": 0.01},
                                             "table": [{"t0": 0.1, "kept_fraction": 1.0, "objects_counted": 30,
                                                        "median_ratio": 0.99},
                                                       {"t0": 0.15, "kept_fraction": 0.93, "objects_counted": 30,
                                                        "median_ratio": 0.95},
                                                       {"t0": 0.2, "kept_fraction": 0.8, "objects_counted": 30,
                                                        "median_ratio": 0.9}]}}
    config = ComparisonConfig(classes=("sponge",))
    result = {"config": asdict(config), "arms": list(config.arms), "seeds": [0, 1], "cells": cells,
              "comparisons": {f"{arm} - physics": compare_arms(cells, reps, arm, "physics")
                              for arm in ("physics+diffusion", "physics+refined")},
              "sets": {"test": {"images": 150, "objects": 206}, "generator_train": {"images": 400, "objects": 591}},
              "commands": [], "compute": {"fit refiner": {"wall_s": 120.0, "cpu_s": 60.0}}, "refiner": refiner}
    page = comparison_markdown(result, "bench")
    assert "physics+diffusion and physics+refined" in page
    assert "**Result (physics+refined):** physics+refined is not distinguishable from physics-only" in page
    assert "**t0 = 0.15, the rule's choice**" in page and "t0 0.2: 0.80 of 30 (median ratio 0.90)" in page
    assert "| physics+refined - physics | AP50 | 0.010, 0.030 |" in page
    assert "| refiner training (600 steps) and t0 choice | 2.0 | 1.0 |" in page
    assert headline(result, "physics+refined").startswith("physics+refined is")
    refiner.update(t0=0.0, arm_t0=[0.05, False])
    assert "the arm refines at the fallback **t0 = 0.05**" in comparison_markdown(result, "bench")

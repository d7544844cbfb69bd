"""SDEdit refinement of physics renders (:mod:`synth.diffusion.refine`): labels stay exact, ``t0 = 0`` is the
identity, the t0 rule, and the ``refine`` command's user errors."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.images import read_image
from rfo_toolkit.cli import rfo_synth_main as synth_main
from synth.diffusion.patches import annotation_mask
from synth.diffusion.refine import (
    RefineConfig,
    T0Rule,
    kept_fraction,
    object_contrast,
    refine_dataset,
    refine_image,
    region_window,
    sdedit_timesteps,
    select_t0,
)
from synth.diffusion.refiner import (
    TINY_REFINER,
    build_refiner_scheduler,
    build_refiner_unet,
    crop_centres,
    load_refiner,
    write_refiner,
)


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_refiner(tmp_path: Path, one_thread) -> Path:
    """A randomly initialised tiny refiner folder (its weights do not matter to the label guarantees)."""
    import torch

    torch.manual_seed(0)
    record = {"config": asdict(TINY_REFINER), "film": {"name": "synthetic"}, "step": 0, "t0": None}
    return write_refiner(tmp_path / "refiner", build_refiner_unet(TINY_REFINER), build_refiner_scheduler(TINY_REFINER),
                         record)


def _generator(seed: int = 0):
    import torch

    return torch.Generator().manual_seed(seed)


def test_refinement_changes_only_the_region_and_copies_every_label(tiny_refiner, tiny_coco, tmp_path):
    out = tmp_path / "refined"
    manifest = refine_dataset(tiny_refiner, tiny_coco, out, config=RefineConfig(t0=0.6, steps=5, margin_px=2),
                              seed=1, progress=False)
    before = json.loads((tiny_coco / "annotations.json").read_text())
    after = json.loads((out / "annotations.json").read_text())
    assert after["annotations"] == before["annotations"]  # boxes, masks, ids: copied
    assert [e["id"] for e in after["images"]] == [e["id"] for e in before["images"]]
    assert manifest["images"] == 4 and manifest["objects"] == 8
    changed_inside = 0
    for entry in before["images"]:
        source = read_image(tiny_coco / entry["file_name"]).pixels
        refined = read_image(out / entry["file_name"]).pixels
        masks = [annotation_mask(a, *source.shape) for a in before["annotations"] if a["image_id"] == entry["id"]]
        from synth.diffusion.patches import inpaint_region

        region = np.zeros(source.shape, dtype=bool)
        for mask in masks:
            region |= inpaint_region(mask, 2)
        np.testing.assert_array_equal(refined[~region], source[~region])  # bit for bit, through the PNG
        changed_inside += int((refined[region] != source[region]).sum())
    assert changed_inside > 0  # a test that could not fail would prove nothing


def test_t0_zero_and_below_one_ddim_interval_are_the_identity(tiny_refiner):
    unet, scheduler, _ = load_refiner(tiny_refiner)
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 0.8, (40, 52)).astype(np.float32)  # non-square
    mask = np.zeros(image.shape, dtype=bool)
    mask[10:20, 15:30] = True
    steps = 5  # the tiny schedule has 100 steps: one DDIM interval is 20
    assert sdedit_timesteps(100, 0.0, steps) == [] and sdedit_timesteps(100, 0.19, steps) == []
    assert sdedit_timesteps(100, 0.2, steps) == [20, 0] and sdedit_timesteps(100, 1.0, steps) == [80, 60, 40, 20, 0]
    for t0 in (0.0, 0.19):
        out, region = refine_image(unet, scheduler, image, [mask], RefineConfig(t0=t0, steps=steps), _generator())
        assert np.max(np.abs(out - image)) <= 1e-7  # stated tolerance: the identity (a copy)
        assert region.sum() > mask.sum()
    out, _ = refine_image(unet, scheduler, image, [mask], RefineConfig(t0=0.6, steps=steps), _generator())
    assert np.max(np.abs(out - image)) > 1e-3


def test_object_contrast_and_kept_fraction_by_hand():
    image = np.full((9, 11), 0.2, dtype=np.float32)
    mask = np.zeros_like(image, dtype=bool)
    mask[3:6, 4:7] = True
    image[mask] = 0.5
    assert object_contrast(image, mask, 1) == pytest.approx(0.3, abs=1e-6)
    from synth.diffusion.patches import inpaint_region

    image[inpaint_region(mask, 1) & ~mask] = 0.4  # a blurred edge within 1 px of the object: not in a ring from 1 px
    assert object_contrast(image, mask, 1) == pytest.approx(0.3, abs=1e-6)
    assert object_contrast(image, mask, 0, 1) == pytest.approx(0.1, abs=1e-6)
    rule = T0Rule(keep=0.85, coverage=0.9, min_contrast=0.01)
    # ratios 0.9, 0.8, -1.0 (sign flipped keeps nothing), and one object too faint to count
    fraction, counted = kept_fraction([0.1, 0.1, 0.1, 0.005], [0.09, 0.08, -0.1, 0.0], rule)
    assert counted == 3 and fraction == pytest.approx(1 / 3)
    assert math.isnan(kept_fraction([0.001], [0.001], rule)[0])


def test_t0_rule_takes_the_largest_value_before_the_first_failure():
    rule = T0Rule(keep=0.85, coverage=0.9)
    table = [{"t0": 0.3, "kept_fraction": 0.95},  # passes, but after a failure: not reachable
             {"t0": 0.1, "kept_fraction": 1.0}, {"t0": 0.05, "kept_fraction": 0.97},
             {"t0": 0.2, "kept_fraction": 0.85}]
    assert select_t0(table, rule) == 0.1
    assert select_t0([{"t0": 0.05, "kept_fraction": 0.5}], rule) == 0.0  # no refinement at all
    assert select_t0([{"t0": 0.05, "kept_fraction": 0.95}, {"t0": 0.1, "kept_fraction": math.nan}], rule) == 0.05
    assert select_t0([{"t0": 0.05, "kept_fraction": 0.9}, {"t0": 0.4, "kept_fraction": 0.91}], rule) == 0.4


def test_t0_is_chosen_on_validation_renders_by_the_rule(tiny_refiner, tiny_coco):
    from synth.diffusion.refine import choose_t0
    from synth.diffusion.refiner import read_refiner_record

    selection = choose_t0(tiny_refiner, tiny_coco, grid=(0.0, 0.6), config=RefineConfig(steps=5, margin_px=2),
                          rule=T0Rule(keep=0.85, coverage=0.5), progress=False)
    rows = {row["t0"]: row for row in selection["table"]}
    assert rows[0.0]["kept_fraction"] == 1.0 and rows[0.0]["objects_counted"] == 8  # the identity keeps all
    assert selection["t0"] == select_t0(selection["table"], T0Rule(keep=0.85, coverage=0.5))
    assert read_refiner_record(tiny_refiner)["t0"] == selection["t0"]  # recorded for `refine`


def test_the_refined_window_holds_the_region_and_fits_the_image():
    region = np.zeros((37, 50), dtype=bool)
    region[30:36, 44:49] = True
    r0, c0, hh, ww = region_window(region, context_px=4, divisor=8)
    assert hh % 8 == 0 and ww % 8 == 0 and r0 + hh <= 37 and c0 + ww <= 50 and r0 >= 0 and c0 >= 0
    assert r0 <= 30 and r0 + hh >= 36 and c0 <= 44 and c0 + ww >= 49


def test_training_crops_are_centred_in_the_body_mask():
    body = np.zeros((48, 40), dtype=bool)
    body[20:30, 5:35] = True
    corners = crop_centres(body, 16)
    centres = corners + 8
    assert body[centres[:, 0], centres[:, 1]].all()
    assert corners.min() >= 0 and (corners[:, 0] + 16).max() <= 48 and (corners[:, 1] + 16).max() <= 40


@pytest.mark.parametrize("extra, message", [
    (["--t0", "1.5"], "t0 must lie in [0, 1]"),
    (["--t0", "0.2", "--images", "x:y"], "expected START:STOP"),
    ([], "records no chosen t0"),
])
def test_refine_user_errors_are_one_line_with_exit_2(tiny_refiner, tiny_coco, tmp_path, capsys, extra, message):
    code = synth_main(["diffusion", "refine", "--refiner", str(tiny_refiner), "--data", str(tiny_coco), "--out",
                       str(tmp_path / "out"), "--no-progress", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_refine_cli_writes_once_and_refuses_what_it_did_not_write(tiny_refiner, tiny_coco, tmp_path, capsys):
    code = synth_main(["diffusion", "refine", "--refiner", str(tmp_path / "missing"), "--data", str(tiny_coco),
                       "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "refiner folder does not exist" in err and len(err.splitlines()) == 1
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    args = ["diffusion", "refine", "--refiner", str(tiny_refiner), "--data", str(tiny_coco), "--t0", "0.4",
            "--steps", "5", "--images", "1:3", "--no-progress"]
    code = synth_main([*args, "--out", str(foreign), "--overwrite"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "refusing to replace" in err and len(err.splitlines()) == 1
    assert (foreign / "notes.txt").read_text() == "mine"
    assert synth_main([*args, "--out", str(tmp_path / "out")]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["images"] == 2 and manifest["refine"]["t0"] == 0.4
    assert synth_main([*args, "--out", str(tmp_path / "out")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert synth_main([*args, "--out", str(tmp_path / "out"), "--overwrite"]) == 0  # its own output: replaced

"""Objects keep their mm size: scale groups, the physical patch geometry, generation, checkpoints.

Sizes are hand-chosen in mm; films at several spacings carry them in different pixel counts. The
default groups (0.75, 2, 5) mm per patch pixel with 64-px patches and context 1.6 give windows of 48,
128 and 320 mm, holding objects up to 30, 80 and 200 mm with full context.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from rfo_bench.categories import coco_categories
from rfo_bench.io.images import read_image, write_png16
from synth.diffusion.model import NUM_CLASS_EMBEDS, TINY_MODEL, load_unet, read_checkpoint_info
from synth.diffusion.patches import (
    DEFAULT_SCALE_GROUPS_MM_PX,
    PatchSpec,
    Window,
    crop_window,
    load_coco_patches,
    mask_bbox_xywh,
    scale_group,
)
from synth.diffusion.sample import SamplerConfig, sample_dataset
from synth.diffusion.train import TrainConfig, train
from toolkit_core.errors import UserInputError

SPEC64 = PatchSpec(size_px=64)
NEEDLE, CLAMP = 3, 5
FAST = TrainConfig(steps=2, batch_size=2, save_every=2, warmup_steps=1)


def _rect(hw: tuple[int, int], top: int, left: int, h: int, w: int) -> np.ndarray:
    mask = np.zeros(hw, dtype=bool)
    mask[top:top + h, left:left + w] = True
    return mask


def _write_films(root: Path, films: list[tuple[float, tuple[int, int], list[tuple[int, float, float]]]]) -> Path:
    """COCO dataset of flat films with bright rectangles.

    Args:
        films: per film ``(spacing_mm, (height, width), [(category, length_mm, width_mm), ...])``; objects
            are laid out left to right, 10 px apart, starting 10 px from the top-left corner.
    """
    images, annotations = [], []
    for i, (spacing, hw, objects) in enumerate(films):
        pixels = np.full(hw, 0.3, dtype=np.float32)
        left = 10
        for cid, length_mm, width_mm in objects:
            h, w = max(1, round(width_mm / spacing)), round(length_mm / spacing)
            mask = _rect(hw, 10, left, h, w)
            pixels[mask] = 0.8
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cid, "iscrowd": 0,
                                "bbox": [float(left), 10.0, float(w), float(h)], "area": float(w * h)})
            left += w + 10
        name = f"images/{i:06d}.png"
        write_png16(root / name, pixels)
        images.append({"id": i + 1, "file_name": name, "height": hw[0], "width": hw[1],
                       "pixel_spacing_mm": [spacing, spacing]})
    (root / "annotations.json").write_text(json.dumps({"images": images, "annotations": annotations,
                                                       "categories": coco_categories()}))
    return root


# ------------------------------------------------------------------------------- (3) the group rule


def test_the_finest_group_whose_window_holds_the_object_with_its_context():
    assert DEFAULT_SCALE_GROUPS_MM_PX == (0.75, 2.0, 5.0)
    # windows 48, 128, 320 mm; context 1.6
    assert scale_group(5.0, SPEC64) == 0
    assert scale_group(30.0, SPEC64) == 0  # 1.6 x 30 = 48: exactly the finest window
    assert scale_group(30.1, SPEC64) == 1
    assert scale_group(80.0, SPEC64) == 1 and scale_group(80.1, SPEC64) == 2
    assert scale_group(200.0, SPEC64) == 2
    assert scale_group(250.0, SPEC64) == 2  # no window holds 1.6 x 250 mm: the coarsest, which holds the object
    with pytest.raises(UserInputError, match="coarsest scale group"):
        scale_group(321.0, SPEC64)
    # the same objects with 32-px patches: windows 24, 64, 160 mm
    assert [scale_group(v, PatchSpec(size_px=32)) for v in (15.0, 15.1, 40.0, 100.0, 160.0)] == [0, 1, 1, 2, 2]
    with pytest.raises(ValueError):
        scale_group(10.0, PatchSpec(scale_groups_mm_px=None))


def test_crop_window_side_is_the_group_window_in_film_pixels():
    # a 20 x 10 px box at 0.5 mm = 10 mm -> group 0; side = 64 x 0.75 / 0.5 = 96 px, centred on (60, 65)
    assert crop_window((50, 60, 20, 10), (300, 200), SPEC64, 0.5) == Window(y0=17, x0=12, side=96, group=0)
    # the same 10 mm object on a 0.2 mm film (50 px): the same group, 240 px
    assert crop_window((50, 60, 50, 20), (300, 280), SPEC64, 0.2) == Window(y0=0, x0=0, side=240, group=0)
    # 60 mm at 0.35 mm/px (171 px) -> group 1: round(64 x 2 / 0.35) = 366 px, centred on a smaller film
    window = crop_window((10, 10, 171, 43), (250, 260), SPEC64, 0.35)
    assert (window.side, window.group) == (366, 1) and (window.y0, window.x0) == ((250 - 366) // 2, (260 - 366) // 2)
    with pytest.raises(ValueError, match="spacing"):
        crop_window((10, 10, 5, 5), (100, 100), SPEC64)


def test_patch_spec_scale_groups_validation_and_json_round_trip():
    assert PatchSpec(scale_groups_mm_px=[1, 3]).scale_groups_mm_px == (1.0, 3.0)
    for bad in ((), (2.0, 1.0), (1.0, 1.0), (0.0, 1.0), (-1.0,), ("a",), tuple(range(1, 11))):
        with pytest.raises(UserInputError, match="scale groups"):
            PatchSpec(scale_groups_mm_px=bad)
    spec = PatchSpec(size_px=32, scale_groups_mm_px=(0.5, 1.5))
    assert PatchSpec.from_dict(json.loads(json.dumps(spec.__dict__))) == spec
    # a record written before scale groups reads as the fit-to-patch geometry it was trained with
    assert PatchSpec.from_dict({"size_px": 64, "context": 1.6, "mask_margin_px": 3}).scale_groups_mm_px is None


# ------------------------------------------------------------ (2) one group, one mm per pixel


def test_a_needle_and_a_clamp_of_one_group_are_cut_at_the_same_mm_per_pixel(tmp_path):
    # 40 mm needle and 75 mm clamp: 1.6 x L = 64 and 120 mm both fit the 128-mm window of group 1 (2 mm/px)
    objects = [(NEEDLE, 40.0, 1.0), (CLAMP, 75.0, 15.0)]
    data = _write_films(tmp_path / "d", [(0.5, (260, 300), objects), (0.3, (330, 430), objects)])
    patches = load_coco_patches(data, SPEC64).patches
    assert len(patches) == 4 and {p.scale_group for p in patches} == {1}
    for p in patches:
        spacing = 0.5 if p.image_id == 1 else 0.3
        assert abs(p.mm_per_px - 2.0) <= 2.0 * 0.5 / (64 * 2.0 / spacing)  # only the rounding of the window side
        length_mm = 40.0 if p.category_id == NEEDLE else 75.0
        extent_px = max(mask_bbox_xywh(p.object_mask)[2:])
        # each end of the resampled mask lies within half a patch pixel; the film mask within one film pixel
        assert abs(extent_px * p.mm_per_px - length_mm) <= p.mm_per_px + spacing
    # the clamp is 75 / 40 times the needle's length on both films: about 37.5 and 20 patch pixels, each
    # within one pixel, bound the ratio within (38.5 / 19 - 75 / 40) = 0.151
    for image_id in (1, 2):
        needle, clamp = (max(mask_bbox_xywh(p.object_mask)[2:]) for p in patches if p.image_id == image_id)
        assert abs(clamp / needle - 75 / 40) < 0.16
    # the fit-to-patch geometry, for contrast, cuts each object at its own scale
    legacy = load_coco_patches(data, PatchSpec(size_px=64, scale_groups_mm_px=None)).patches
    needle_mm, clamp_mm = (p.mm_per_px for p in legacy if p.image_id == 1)
    assert clamp_mm > 1.5 * needle_mm and {p.scale_group for p in legacy} == {None}


# ------------------------------------------- (1) the mm size through training and generation


class _Oracle(torch.nn.Module):
    """A stand-in UNet whose prediction makes the sampler's clean layer exactly ``amplitude`` on the
    object channel and 0 elsewhere (v-prediction: ``v = (sqrt(abar) x_t - x0) / sqrt(1 - abar)``).
    It records the object channel and the class-table labels it is given."""

    def __init__(self, alphas_cumprod: torch.Tensor, amplitude: float = 1.0) -> None:
        super().__init__()
        self.config = SimpleNamespace(in_channels=4)
        self.alphas_cumprod = alphas_cumprod
        self.amplitude = amplitude
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, sample, t, class_labels=None):
        abar = float(self.alphas_cumprod[int(t)])
        x_t, obj = sample[:, :1], sample[:, 3:4]
        self.calls.append((obj.clone(), class_labels.clone()))
        v = (math.sqrt(abar) * x_t - self.amplitude * obj) / math.sqrt(1.0 - abar)
        return SimpleNamespace(sample=v)


def _drawn_length_px(change: np.ndarray) -> int:
    """Length of a drawn bar along its long axis, at half its drawn amplitude (full width at half maximum).

    The profile along the axis is the largest change across it; its plateau (the median where it
    exceeds a tenth of its peak) is the drawn amplitude, which a bar thinner than a patch pixel keeps
    below the peak of a wide one.
    """
    rows, cols = np.nonzero(change > 0.1 * change.max())
    along_x = np.ptp(cols) >= np.ptp(rows)
    profile = change.max(axis=0 if along_x else 1)
    plateau = np.median(profile[profile > 0.1 * profile.max()])
    inside = np.flatnonzero(profile > 0.5 * plateau)
    return int(inside[-1] - inside[0] + 1)


LENGTH_MM = {NEEDLE: 12.0, CLAMP: 60.0}
GROUP = {NEEDLE: 0, CLAMP: 1}  # 1.6 x 12 = 19 mm <= 48; 1.6 x 60 = 96 mm <= 128


@pytest.fixture(scope="module")
def mm_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny 64-px model trained on films at 0.5 and 0.3 mm holding a 12 mm needle and a 60 x 15 mm clamp."""
    root = tmp_path_factory.mktemp("mm")
    objects = [(NEEDLE, 12.0, 1.0), (CLAMP, 60.0, 15.0)]
    data = _write_films(root / "data", [(0.5, (180, 240), objects), (0.3, (220, 300), objects)])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(data, root / "ckpt", FAST, TINY_MODEL, SPEC64, progress=False)
    finally:
        torch.set_num_threads(before)
    return data, root / "ckpt"


def test_training_patches_hold_each_object_at_its_mm_size(mm_run):
    data, ckpt = mm_run
    patch_set = load_coco_patches(data, SPEC64)
    assert len(patch_set.patches) == 4
    for p in patch_set.patches:
        assert p.scale_group == GROUP[p.category_id]
        extent_px = max(mask_bbox_xywh(p.object_mask)[2:])
        spacing = 0.5 if p.image_id == 1 else 0.3
        assert abs(extent_px * p.mm_per_px - LENGTH_MM[p.category_id]) <= p.mm_per_px + spacing
    # the mask bank is at the median spacing (0.4 mm): both films' needles are 12 mm = 30 px there
    assert patch_set.spacing_mm == pytest.approx(0.4)
    assert [max(m.shape) for m in patch_set.object_masks[NEEDLE]] == [30, 30]
    info = read_checkpoint_info(ckpt)
    assert info.train["patches_per_scale_group"] == [2, 2, 0]


@pytest.mark.parametrize("cid", [NEEDLE, CLAMP])
def test_generated_objects_keep_their_mm_size_at_two_film_spacings(mm_run, tmp_path, monkeypatch, cid):
    """The label and the drawn object both measure the requested length on films at 0.35 and 0.9 mm.

    Tolerances: the label (a mask-bank shape rescaled by the spacing ratio) within 1 film pixel; the
    drawn object within 1 film pixel plus 1 patch pixel of its group (the model draws at the group's
    mm per pixel, so its edges are no sharper than that: 0.75 mm for the needle, 2 mm for the clamp).
    """
    import synth.diffusion.inpaint as inpaint_module
    from synth.diffusion.model import load_train_scheduler

    _, ckpt = mm_run
    oracle = _Oracle(load_train_scheduler(ckpt).alphas_cumprod)
    monkeypatch.setattr(inpaint_module, "load_unet", lambda *args, **kwargs: oracle)
    spacings = [0.35, 0.9]
    backgrounds = _write_films(tmp_path / "bg", [(s, (250, 262), []) for s in spacings])
    out = tmp_path / "out"
    class_name = {NEEDLE: "needle", CLAMP: "clamp"}[cid]
    manifest = sample_dataset(ckpt, backgrounds / "images", out, n=2, seed=0, config=SamplerConfig(steps=4),
                              classes=[class_name], progress=False)
    assert manifest["objects"] == 2 and manifest["scale_groups_mm_px"] == [0.75, 2.0, 5.0]
    coco = json.loads((out / "annotations.json").read_text())
    length_mm, group_mm = LENGTH_MM[cid], DEFAULT_SCALE_GROUPS_MM_PX[GROUP[cid]]
    for entry, ann in zip(coco["images"], coco["annotations"]):
        spacing = entry["pixel_spacing_mm"][0]
        assert spacing == spacings[entry["id"] - 1]
        assert abs(max(ann["bbox"][2:]) * spacing - length_mm) <= spacing  # the label
        written = read_image(out / entry["file_name"]).pixels
        background = read_image(backgrounds / "images" / entry["background"]).pixels
        change = np.abs(written - background)
        assert change.max() > 0.05
        assert abs(_drawn_length_px(change) * spacing - length_mm) <= spacing + group_mm  # the drawing
    # each request was drawn at its group's mm per pixel, whatever the film's spacing
    assert len(oracle.calls) == 4  # one batch of both requests, four steps
    objects, labels = oracle.calls[-1]
    assert labels.tolist() == [GROUP[cid] * NUM_CLASS_EMBEDS + cid] * 2
    for obj in objects[:, 0]:
        extent_px = max(mask_bbox_xywh(obj.numpy() > 0.5)[2:])
        assert abs(extent_px * group_mm - length_mm) <= group_mm


# ------------------------------------------------------------------- (4) checkpoints and legacy


def test_checkpoint_scale_groups_round_trip(tiny_run, tmp_path):
    data, ckpt = tiny_run
    meta = json.loads((ckpt / "rfo_diffusion.json").read_text())
    assert meta["patch"]["scale_groups_mm_px"] == [0.75, 2.0, 5.0] and meta["format_version"] == 3
    info = read_checkpoint_info(ckpt)
    assert info.scale_groups_mm_px == DEFAULT_SCALE_GROUPS_MM_PX and info.patch.physical
    assert load_unet(ckpt).config.num_class_embeds == 3 * NUM_CLASS_EMBEDS
    spec = PatchSpec(size_px=32, scale_groups_mm_px=(1.0, 3.0))
    train(data, tmp_path / "two", FAST, TINY_MODEL, spec, progress=False)
    assert read_checkpoint_info(tmp_path / "two").patch == spec
    assert load_unet(tmp_path / "two").config.num_class_embeds == 2 * NUM_CLASS_EMBEDS
    # groups that do not match the UNet's class table are refused, naming the file
    meta = json.loads((tmp_path / "two" / "rfo_diffusion.json").read_text())
    meta["patch"]["scale_groups_mm_px"] = [1.0]
    (tmp_path / "two" / "rfo_diffusion.json").write_text(json.dumps(meta))
    with pytest.raises(UserInputError, match="class table has 22 rows"):
        load_unet(tmp_path / "two")


def test_a_checkpoint_without_scale_groups_samples_in_the_fit_geometry_with_one_warning(tiny_run, tmp_path, caplog):
    data, _ = tiny_run
    ckpt = tmp_path / "old"
    train(data, ckpt, FAST, TINY_MODEL, PatchSpec(size_px=32, scale_groups_mm_px=None), progress=False)
    meta = json.loads((ckpt / "rfo_diffusion.json").read_text())
    del meta["patch"]["scale_groups_mm_px"]  # as written before scale groups
    meta["format_version"] = 2
    (ckpt / "rfo_diffusion.json").write_text(json.dumps(meta))
    info = read_checkpoint_info(ckpt)
    assert info.scale_groups_mm_px is None and info.patch.num_scale_groups == 1
    with caplog.at_level(logging.WARNING, logger="synth.diffusion"):
        manifest = sample_dataset(ckpt, data / "images", tmp_path / "out", n=3, seed=0, config=SamplerConfig(steps=2),
                                  progress=False)
    assert manifest["objects"] == 3 and manifest["scale_groups_mm_px"] is None
    notes = [r.getMessage() for r in caplog.records if "scale groups" in r.getMessage()]
    assert len(notes) == 1 and "not physical" in notes[0] and "\n" not in notes[0]
    # resuming it with today's default geometry is refused, saying how to resume it
    with pytest.raises(UserInputError, match="--scale-groups fit"):
        train(data, ckpt, TrainConfig(steps=3, batch_size=2, warmup_steps=1), TINY_MODEL, PatchSpec(size_px=32),
              progress=False)


def test_scale_groups_flag(tiny_coco, tmp_path, capsys):
    from rfo_toolkit.cli import rfo_synth_main as synth_main
    from synth.diffusion.commands import parse_scale_groups

    assert parse_scale_groups("0.5,1.5") == (0.5, 1.5) and parse_scale_groups("fit") is None
    code = synth_main(["diffusion", "train", "--data", str(tiny_coco), "--out", str(tmp_path / "c"), "--preset", "tiny",
                       "--patch-size", "32", "--steps", "1", "--batch", "2", "--scale-groups", "1,4", "--no-progress"])
    assert code == 0 and read_checkpoint_info(tmp_path / "c").scale_groups_mm_px == (1.0, 4.0)
    capsys.readouterr()
    for bad in ("1,x", "4,1"):
        code = synth_main(["diffusion", "train", "--data", str(tiny_coco), "--out", str(tmp_path / "d"),
                           "--preset", "tiny", "--steps", "1", "--scale-groups", bad])
        err = capsys.readouterr().err
        assert code == 2 and "scale" in err and "Traceback" not in err


def test_thin_objects_keep_their_pixels_when_the_patch_is_coarser_than_the_film():
    from synth.diffusion.patches import object_coverage_mask

    thin = np.zeros((5, 7), dtype=np.float32)
    thin[2, 1:6] = 0.25  # a wire a quarter of a patch pixel wide
    thin[2, 6] = 0.1  # its tip, covering under half of what its neighbour does
    np.testing.assert_array_equal(object_coverage_mask(thin), thin >= 0.25)
    straddling = np.zeros((5, 7), dtype=np.float32)
    straddling[1:3, 2:5] = 0.125  # the same wire across a pixel boundary: both rows
    np.testing.assert_array_equal(object_coverage_mask(straddling), straddling > 0)
    wide = np.zeros((6, 6), dtype=np.float32)
    wide[1:5, 1:5] = 1.0
    wide[1:5, 5] = 0.4  # a wide object's partly covered edge: kept only above one half, as before
    wide[0, 1:5] = 0.6
    np.testing.assert_array_equal(object_coverage_mask(wide), wide > 0.5)


def test_backgrounds_without_a_recorded_spacing_are_named_once_and_counted(tiny_run, tmp_path, caplog):
    import shutil

    data, ckpt = tiny_run
    loose = tmp_path / "loose"  # PNG files with no COCO file beside them: the reader's default spacing
    loose.mkdir()
    for name in ("000000.png", "000001.png"):
        shutil.copy(data / "images" / name, loose / name)
    with caplog.at_level(logging.WARNING, logger="synth.diffusion"):
        manifest = sample_dataset(ckpt, loose, tmp_path / "out", n=3, seed=0, config=SamplerConfig(steps=2),
                                  progress=False)
    notes = [r.getMessage() for r in caplog.records if "states no pixel spacing" in r.getMessage()]
    assert len(notes) == 1 and "0.200 mm is assumed" in notes[0]
    assert manifest["images_on_backgrounds_without_spacing"] == 3
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert all(entry["pixel_spacing_mm"] == [0.2, 0.2] for entry in coco["images"])


def test_objects_larger_than_the_coarsest_window_are_left_out_of_training_and_refused_at_sampling(
        tiny_run, tmp_path, caplog):
    from synth.diffusion.inpaint import Inpainter, ObjectRequest

    data = _write_films(tmp_path / "d", [(0.5, (180, 240), [(NEEDLE, 12.0, 1.0), (CLAMP, 60.0, 15.0)])])
    spec = PatchSpec(size_px=32, scale_groups_mm_px=(0.5,))  # one 16-mm window
    with caplog.at_level(logging.WARNING, logger="synth.diffusion"):
        patches = load_coco_patches(data, spec).patches
    # the 12 mm needle fits the window without its full context; the 60 mm clamp does not fit at all
    assert [p.category_id for p in patches] == [NEEDLE]
    notes = [r.getMessage() for r in caplog.records if "coarsest scale group" in r.getMessage()]
    assert len(notes) == 1 and notes[0].startswith("1 object(s) larger") and "60 mm" in notes[0]
    _, ckpt = tiny_run  # 32-px patches, groups up to 5 mm: a 160-mm window
    inpainter = Inpainter(ckpt, SamplerConfig(steps=2))
    background = np.full((88, 72), 0.3, dtype=np.float32)
    huge = _rect((88, 72), 10, 5, 4, 60)  # 60 px at 3 mm = 180 mm
    with pytest.raises(UserInputError, match=r"object 0 \(needle\) of image 0: an object of 180.0 mm"):
        inpainter.inpaint_objects([background], [[ObjectRequest(NEEDLE, huge)]], torch.Generator().manual_seed(0),
                                  spacings_mm=[3.0])

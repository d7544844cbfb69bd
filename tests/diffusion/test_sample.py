"""Sampling honours the mask, is seeded, writes the physics generator's COCO layout; bad input exits 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rfo_bench.io.images import read_image, to_uint16, write_png16
from rfo_toolkit.cli import rfo_synth_main as synth_main
from synth.diffusion.model import load_train_scheduler, load_unet, read_checkpoint_info
from synth.diffusion.patches import Window, inpaint_region, mask_bbox_xywh
from synth.diffusion.sample import (
    Inpainter,
    ObjectRequest,
    SamplerConfig,
    feather_weight,
    inpaint_patches,
    paste_patch,
    place_bank_mask,
    sample_dataset,
)
from toolkit_core.errors import UserInputError

FAST = SamplerConfig(steps=3)


def _patch_inputs(n=3, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    bg = torch.rand((n, 1, size, size), generator=g) * 2 - 1
    region = torch.zeros(n, 1, size, size)
    region[:, :, 10:20, 8:17] = 1
    return bg, region, torch.tensor([1, 3, 1][:n])


@pytest.mark.parametrize("config", [
    SamplerConfig(scheduler="ddim", steps=3, guidance_scale=2.0),
    SamplerConfig(scheduler="dpm", steps=3),
    SamplerConfig(scheduler="ddpm", steps=3, guidance_scale=1.0),
    SamplerConfig(scheduler="ddim", steps=3, mode="repaint", resample=2),
    SamplerConfig(scheduler="ddim", steps=3, base="fill"),
])
def test_outside_the_region_the_patch_is_the_background(tiny_run, config):
    _, ckpt = tiny_run
    unet, sched = load_unet(ckpt), load_train_scheduler(ckpt)
    scale = read_checkpoint_info(ckpt).residual_scale
    bg, region, cls = _patch_inputs()
    out = inpaint_patches(unet, sched, bg, region, cls, config, torch.Generator().manual_seed(0),
                          residual_scale=scale)
    assert out.shape == bg.shape
    outside = region == 0
    assert torch.equal(out[outside], bg[outside])
    assert not torch.allclose(out[~outside], bg[~outside])
    assert out.abs().max() <= 1.0


def test_patch_sampling_is_seeded(tiny_run):
    _, ckpt = tiny_run
    unet, sched = load_unet(ckpt), load_train_scheduler(ckpt)
    bg, region, cls = _patch_inputs()
    run = lambda s: inpaint_patches(unet, sched, bg, region, cls, FAST, torch.Generator().manual_seed(s),  # noqa: E731
                                    residual_scale=0.1)
    assert torch.equal(run(7), run(7))
    assert not torch.allclose(run(7), run(8))


def test_feather_weight_hand_computed():
    mask = np.zeros((1, 11), dtype=bool)
    mask[0, 5] = True
    # radius 4: weight = clip((4 - d) / (4 - 2), 0, 1) with d = |x - 5|: 1 for d <= 2, 0.5 at d = 3, 0 from d = 4
    expected = np.array([[0, 0, 0.5, 1, 1, 1, 1, 1, 0.5, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(feather_weight(mask, 4), expected)


def test_paste_patch_changes_only_the_inpainted_region():
    rng = np.random.default_rng(0)
    image = rng.random((40, 30)).astype(np.float32)
    obj = np.zeros((40, 30), dtype=bool)
    obj[18:22, 12:15] = True
    window = Window(y0=4, x0=3, side=24)
    out = paste_patch(image, np.full((16, 16), 0.9, np.float32), window, obj, 3)
    region = inpaint_region(obj, 3)
    np.testing.assert_array_equal(out[~region], image[~region])
    np.testing.assert_allclose(out[obj], 0.9, atol=1e-6)
    ring = region & ~obj
    assert np.all((out[ring] >= np.minimum(image[ring], 0.9) - 1e-6) & (out[ring] <= np.maximum(image[ring], 0.9) + 1e-6))


def test_place_bank_mask_fits_inside_and_avoids_others():
    rng = np.random.default_rng(0)
    shape = np.ones((5, 9), dtype=bool)
    occupied = np.zeros((60, 50), dtype=bool)
    occupied[:, :25] = True
    for _ in range(5):
        mask = place_bank_mask(shape, (60, 50), 1.0, rng, occupied)
        assert mask is not None and mask.sum() == 45 and not (mask & occupied).any()
    assert place_bank_mask(shape, (60, 50), 2.0, rng).sum() == 180  # spacing ratio 2 doubles each side
    assert place_bank_mask(np.ones((40, 40), bool), (30, 30), 1.0, rng) is None


def test_inpainter_labels_are_the_requested_masks(tiny_run):
    data, ckpt = tiny_run
    inpainter = Inpainter(ckpt, FAST)
    background = read_image(data / "images" / "000000.png").pixels
    obj = np.zeros_like(background, dtype=bool)
    obj[60:66, 20:30] = True
    outcome = inpainter.inpaint_objects([background], [[ObjectRequest(3, obj)]], torch.Generator().manual_seed(0))[0]
    assert outcome.attempts == 1 and len(outcome.accepted) == 1
    assert outcome.accepted[0][0].object_mask is obj
    region = inpaint_region(obj, 1)
    changed = outcome.image != background
    assert changed[obj].all() or changed[obj].mean() > 0.9
    assert not changed[~inpaint_region(obj, 8)].any()
    assert not changed[~region].any() or changed[~region].sum() < changed[region].sum() * 10


class _Constant:
    def __init__(self, value):
        self.value = value
        self.calls = 0

    def score(self, patches, class_ids):
        self.calls += 1
        assert patches.ndim == 3 and len(patches) == len(class_ids)
        return np.full(len(class_ids), self.value)


def test_sample_dataset_writes_coco_and_keeps_the_background(tiny_run, tmp_path):
    data, ckpt = tiny_run
    out = tmp_path / "out"
    manifest = sample_dataset(ckpt, data / "images", out, n=3, seed=5, config=FAST, objects_per_image=2)
    coco = json.loads((out / "annotations.json").read_text())
    assert manifest["images"] == 3 and manifest["objects"] == len(coco["annotations"]) == 6
    assert {c["id"] for c in coco["categories"]} == set(range(1, 11))
    from pycocotools import mask as mask_utils

    for entry in coco["images"]:
        written = read_image(out / entry["file_name"]).pixels
        background = read_image(data / "images" / entry["background"]).pixels
        assert written.shape == (entry["height"], entry["width"]) == background.shape == (88, 72)
        anns = [a for a in coco["annotations"] if a["image_id"] == entry["id"]]
        union = np.zeros(written.shape, dtype=bool)
        for ann in anns:
            rle = dict(ann["segmentation"], counts=ann["segmentation"]["counts"].encode())
            mask = mask_utils.decode(rle).astype(bool)
            assert tuple(ann["bbox"]) == tuple(float(v) for v in mask_bbox_xywh(mask))
            assert ann["area"] == mask.sum() and ann["category_id"] in (1, 3)
            union |= inpaint_region(mask, 8)
        # far from every object the written image is the background, bit for bit
        np.testing.assert_array_equal(to_uint16(written)[~union], to_uint16(background)[~union])
    again = sample_dataset(ckpt, data / "images", tmp_path / "again", n=3, seed=5, config=FAST, objects_per_image=2)
    assert again["objects"] == 6
    for name in ("000000.png", "000002.png"):
        assert (out / "images" / name).read_bytes() == (tmp_path / "again" / "images" / name).read_bytes()


def test_qc_filter_rejects_and_counts(tiny_run, tmp_path):
    data, ckpt = tiny_run
    reject = _Constant(0.1)
    m = sample_dataset(ckpt, data / "images", tmp_path / "r", n=2, seed=0, config=FAST, scorer=reject,
                       threshold=0.5, max_tries=2)
    assert m["objects"] == 0 and m["qc"]["attempts"] == 4 and m["qc"]["dropped"] == 2
    assert m["qc"]["acceptance_rate"] == 0.0 and reject.calls == 2  # one batch per try
    m = sample_dataset(ckpt, data / "images", tmp_path / "a", n=2, seed=0, config=FAST, scorer=_Constant(0.9),
                       threshold=0.5, max_tries=2)
    assert m["objects"] == 2 and m["qc"]["acceptance_rate"] == 1.0
    coco = json.loads((tmp_path / "a" / "annotations.json").read_text())
    assert all(a["qc_score"] == 0.9 for a in coco["annotations"])


def test_requests_place_objects_exactly(tiny_run, tmp_path):
    data, ckpt = tiny_run
    requests = [{"background": str(data / "images" / "000001.png"), "category": "needle", "bbox": [30, 40, 9, 12]}]
    (tmp_path / "req.json").write_text(json.dumps(requests))
    sample_dataset(ckpt, data / "images", tmp_path / "o", n=1, seed=0, config=FAST, requests_file=tmp_path / "req.json")
    coco = json.loads((tmp_path / "o" / "annotations.json").read_text())
    assert [a["bbox"] for a in coco["annotations"]] == [[30.0, 40.0, 9.0, 12.0]]
    assert coco["annotations"][0]["category_id"] == 3


@pytest.mark.parametrize(("request_", "message"), [
    ({"category": "needle", "bbox": [70, 40, 9, 12]}, "mask outside the image"),
    ({"category": "needle", "bbox": [-1, 40, 9, 12]}, "mask outside the image"),
    ({"category": "scissors", "bbox": [3, 4, 5, 6]}, "unknown RFO class"),
    ({"category": "blade", "bbox": [3, 4, 5, 6]}, "not trained on this class"),
])
def test_bad_requests_exit_2(tiny_run, tmp_path, capsys, request_, message):
    data, ckpt = tiny_run
    (tmp_path / "req.json").write_text(json.dumps([request_]))
    code = synth_main(["diffusion", "sample", "--ckpt", str(ckpt), "--backgrounds", str(data / "images" / "000000.png"),
                       "--out", str(tmp_path / "o"), "--requests", str(tmp_path / "req.json"), "--steps", "2"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_mask_png_request_of_another_size_is_refused(tiny_run, tmp_path):
    data, ckpt = tiny_run
    write_png16(tmp_path / "mask.png", np.ones((10, 10)))
    (tmp_path / "req.json").write_text(json.dumps([{"category": "needle", "mask": str(tmp_path / "mask.png")}]))
    with pytest.raises(UserInputError, match="mask size differs"):
        sample_dataset(ckpt, data / "images" / "000000.png", tmp_path / "o", n=1, seed=0, config=FAST,
                       requests_file=tmp_path / "req.json")


def test_cli_rejects_non_diffusers_checkpoint_and_unknown_class(tiny_run, tmp_path, capsys):
    data, ckpt = tiny_run
    code = synth_main(["diffusion", "sample", "--ckpt", str(tmp_path), "--backgrounds", str(data / "images"),
                       "--out", str(tmp_path / "o")])
    assert code == 2 and "not a diffusers model directory" in capsys.readouterr().err
    code = synth_main(["diffusion", "sample", "--ckpt", str(ckpt), "--backgrounds", str(data / "images"),
                       "--out", str(tmp_path / "o"), "--classes", "sponge,spaceship"])
    assert code == 2 and "unknown RFO class" in capsys.readouterr().err


def test_sampler_config_validation():
    with pytest.raises(UserInputError):
        SamplerConfig(scheduler="euler")
    with pytest.raises(UserInputError, match="multistep"):
        SamplerConfig(scheduler="dpm", resample=3)
    with pytest.raises(UserInputError, match="base"):
        SamplerConfig(base="mean")


def test_the_layer_is_added_to_the_background_or_to_its_smooth_fill(tiny_run):
    from synth.diffusion.patches import smooth_fill

    _, ckpt = tiny_run
    unet, sched = load_unet(ckpt), load_train_scheduler(ckpt)
    bg, region, cls = _patch_inputs(n=2)
    run = lambda base: inpaint_patches(unet, sched, bg, region, cls, SamplerConfig(steps=3, base=base),  # noqa: E731
                                       torch.Generator().manual_seed(3), residual_scale=0.1)
    on_background, on_fill = run("background"), run("fill")
    fill = torch.from_numpy(np.stack([smooth_fill(b[0].numpy(), r[0].numpy() > 0.5) for b, r in zip(bg, region)]))
    inside = region[:, 0] > 0.5
    # same noise, same layer: the two outputs differ by (background - fill) wherever neither is clipped
    layer_bg = on_background[:, 0] - bg[:, 0]
    layer_fill = on_fill[:, 0] - fill
    unclipped = inside & (on_background[:, 0].abs() < 1) & (on_fill[:, 0].abs() < 1)
    assert int(unclipped.sum()) > 50
    torch.testing.assert_close(layer_bg[unclipped], layer_fill[unclipped], rtol=0, atol=1e-5)


def test_background_spacing_comes_from_the_coco_file_next_to_the_images(tmp_path) -> None:
    """PNG backgrounds carry no spacing: without the generator's COCO record they read as 0.2 mm and a
    checkpoint trained at 0.84 mm would paste objects 4.2x too large."""
    import json

    import numpy as np

    from rfo_bench.io.images import read_image, write_png16
    from synth.diffusion.sample import background_spacing_mm, list_backgrounds, recorded_spacings

    root = tmp_path / "physics"
    for name in ("a.png", "b.png"):
        write_png16(root / "images" / name, np.full((20, 24), 0.4))
    (root / "annotations.json").write_text(json.dumps({"images": [
        {"id": 1, "file_name": "images/a.png", "pixel_spacing_mm": 0.84},
        {"id": 2, "file_name": "images/b.png", "pixel_spacing_mm": [0.5, 0.7]},
    ], "annotations": [], "categories": []}))
    write_png16(tmp_path / "loose" / "c.png", np.full((20, 24), 0.4))
    files = list_backgrounds(root / "images") + list_backgrounds(tmp_path / "loose")
    known = recorded_spacings(files)
    spacings = [background_spacing_mm(f, read_image(f), known) for f in files]
    assert spacings[:2] == [0.84, 0.6]
    assert spacings[2] == float(np.mean(read_image(files[2]).pixel_spacing_mm))  # not listed: the file's own


def test_sample_dataset_shows_one_bar_over_images_unless_progress_is_off(tiny_run, tmp_path, capsys):
    data, ckpt = tiny_run
    sample_dataset(ckpt, data / "images", tmp_path / "bar", n=2, seed=0, config=FAST)
    err = capsys.readouterr().err
    assert "sample" in err and "2/2" in err and "image" in err  # 2 images < batch_images: a bar all the same
    sample_dataset(ckpt, data / "images", tmp_path / "quiet", n=2, seed=0, config=FAST, progress=False)
    assert "sample" not in capsys.readouterr().err

"""The pretrained (Stable Diffusion / RoentGen) path: prompts, directory checks, paste-back with a stand-in pipe."""

from __future__ import annotations

import importlib.util
import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from rfo_bench.io.images import read_image, write_png16
from rfo_toolkit.cli import rfo_synth_main as synth_main
from synth.diffusion.patches import inpaint_region
from synth.diffusion.pipelines import (
    PretrainedConfig,
    check_pipeline_dir,
    inpaint_with_pipeline,
    load_pipeline,
    location_phrase,
    prompt_for,
    sample_pretrained,
)
from toolkit_core.errors import UserInputError


class _GreyPipe:
    """Stands in for a diffusers pipeline: records the call and returns a uniform grey image."""

    def __init__(self, level=200):
        self.level = level
        self.calls = []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        size = (kwargs["width"], kwargs["height"])
        return SimpleNamespace(images=[Image.new("RGB", size, (self.level,) * 3)])


def test_location_is_in_the_patients_frame():
    # image left = patient right on a PA radiograph
    assert location_phrase((5, 80, 10, 10), (100, 90)) == "right lower chest"
    assert location_phrase((70, 5, 10, 10), (100, 90)) == "left upper chest"
    assert location_phrase((40, 45, 10, 10), (100, 90), anatomy="abdomen") == "central mid abdomen"


def test_prompt_templates():
    assert prompt_for("blade", (70, 80, 10, 10), (100, 90)) == \
        "chest radiograph, retained scalpel blade in the left lower chest"
    assert prompt_for("sponge", template="x-ray of {cls}: {object}") == \
        "x-ray of sponge: retained surgical sponge with radiopaque marker"
    with pytest.raises(UserInputError, match="unknown RFO class"):
        prompt_for("scissors")
    with pytest.raises(UserInputError, match="template"):
        prompt_for("sponge", template="{organ}")


def test_pipeline_directory_checks(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        check_pipeline_dir(tmp_path / "missing")
    with pytest.raises(UserInputError, match="model_index.json"):
        check_pipeline_dir(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "UNet2DConditionModel"],
                                                           "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(UserInputError, match="missing on disk"):
        check_pipeline_dir(tmp_path)
    with pytest.raises(UserInputError, match="unknown task"):
        load_pipeline(tmp_path, "video")


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="transformers is installed")
def test_missing_transformers_is_explained(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    with pytest.raises(UserInputError, match="transformers"):
        load_pipeline(tmp_path, "inpaint")


def test_inpaint_with_pipeline_pastes_only_inside_the_mask():
    rng = np.random.default_rng(0)
    image = rng.random((300, 260)).astype(np.float32) * 0.5
    obj = np.zeros(image.shape, dtype=bool)
    obj[140:160, 100:130] = True
    pipe = _GreyPipe(200)
    config = PretrainedConfig(resolution=64, steps=2)
    out = inpaint_with_pipeline(pipe, image, obj, "a prompt", config, torch.Generator().manual_seed(0))
    call = pipe.calls[0]
    assert call["prompt"] == "a prompt" and call["height"] == call["width"] == 64
    assert call["image"].size == (64, 64) and call["mask_image"].mode == "L"
    np.testing.assert_allclose(out[obj], 200 / 255, atol=1e-6)
    far = ~inpaint_region(obj, 40)
    np.testing.assert_array_equal(out[far], image[far])


def test_sample_pretrained_writes_labels_for_inpainting_and_none_for_text2img(tmp_path):
    write_png16(tmp_path / "bg.png", np.full((300, 280), 0.3))
    m = sample_pretrained(tmp_path, tmp_path / "bg.png", tmp_path / "inp", n=3, seed=0,
                          config=PretrainedConfig(resolution=64, box_px=40), classes=["needle", "sponge"],
                          pipe=_GreyPipe())
    coco = json.loads((tmp_path / "inp" / "annotations.json").read_text())
    assert m["objects"] == 3 and len(coco["annotations"]) == 3
    for entry, ann in zip(coco["images"], coco["annotations"]):
        assert entry["category"] in ("needle", "sponge") and entry["prompt"].startswith("chest radiograph, ")
        x, y, w, h = ann["bbox"]
        assert w <= 40 and h <= 40 and x >= 0 and y >= 0
        pixels = read_image(tmp_path / "inp" / entry["file_name"]).pixels
        assert pixels[int(y + h / 2), int(x + w / 2)] == pytest.approx(200 / 255, abs=1e-4)
    m = sample_pretrained(tmp_path, tmp_path / "bg.png", tmp_path / "t2i", n=2, seed=0,
                          config=PretrainedConfig(task="text2img", resolution=32), pipe=_GreyPipe())
    coco = json.loads((tmp_path / "t2i" / "annotations.json").read_text())
    assert m["objects"] == 0 and coco["annotations"] == [] and len(coco["images"]) == 2
    assert m["note"] == "text-to-image output has no boxes"


def test_cli_pretrained_rejects_a_non_pipeline_directory(tmp_path, capsys):
    code = synth_main(["diffusion", "sample", "--pretrained", str(tmp_path), "--backgrounds", "embedded",
                       "--out", str(tmp_path / "o")])
    assert code == 2 and "not a diffusers pipeline directory" in capsys.readouterr().err

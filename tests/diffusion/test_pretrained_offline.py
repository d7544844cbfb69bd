"""The pretrained path end to end, offline: a tiny random Stable Diffusion inpainting pipeline built from
configs (text encoder and BPE tokenizer included) is saved to a folder, then loaded and sampled through
``rfo-synth diffusion sample --pretrained`` with every socket refused."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest

from rfo_bench.io.images import read_image, write_png16
from rfo_toolkit.cli import rfo_synth_main as synth_main
from synth.diffusion.pipelines import check_pipeline_dir
from toolkit_core.errors import UserInputError

pytest.importorskip("transformers", reason="the pretrained path needs the `pretrained` extra")

LETTERS = "abcdefghijklmnopqrstuvwxyz,"


def write_tiny_bpe(folder: Path) -> tuple[Path, Path]:
    """A CLIP-style BPE vocabulary: single characters (word-final ones with ``</w>``), two merges, specials."""
    tokens = ["<|startoftext|>", "<|endoftext|>"] + list(LETTERS) + [c + "</w>" for c in LETTERS] + ["ch", "ch</w>"]
    vocab, merges = folder / "vocab.json", folder / "merges.txt"
    vocab.write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    merges.write_text("#version: 0.2\nc h\nc h</w>\n")
    return vocab, merges


def build_tiny_inpainting_pipeline(folder: Path) -> Path:
    """Save a randomly initialised ``StableDiffusionInpaintPipeline`` (safetensors) into ``folder``."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=9, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=2, norm_num_groups=4)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16),
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        layers_per_block=1, norm_num_groups=4, sample_size=32)
    vocab, merges = write_tiny_bpe(folder.parent)
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=16)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(json.loads(vocab.read_text())), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionInpaintPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
        scheduler=DDIMScheduler(num_train_timesteps=50, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False)
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_inpainting_pipeline(tmp_path_factory.mktemp("sd") / "tiny_sd_inpaint")


def _refuse_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    attempts: list[str] = []

    def refuse(*args, **kwargs):
        attempts.append(repr(args[:2]))
        raise OSError("network disabled by test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, *a, **k: refuse(*a))
    monkeypatch.setattr(socket.socket, "connect_ex", lambda self, *a, **k: refuse(*a))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return attempts


def test_pretrained_inpainting_samples_offline_from_a_local_folder(tiny_pipeline, tmp_path, monkeypatch):
    attempts = _refuse_network(monkeypatch)
    background = np.tile(np.linspace(0.2, 0.6, 70, dtype=np.float32), (90, 1))  # non-square
    write_png16(tmp_path / "bg.png", background)
    out = tmp_path / "samples"
    code = synth_main(["diffusion", "sample", "--pretrained", str(tiny_pipeline), "--backgrounds",
                       str(tmp_path / "bg.png"), "--out", str(out), "--n", "2", "--steps", "2", "--imgsz", "32",
                       "--box-px", "16", "--classes", "needle,sponge", "--seed", "3"])
    assert code == 0 and attempts == []
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == 2
    for entry, ann in zip(coco["images"], coco["annotations"]):
        pixels = read_image(out / entry["file_name"]).pixels
        assert pixels.shape == background.shape and np.isfinite(pixels).all()
        x, y, w, h = (int(v) for v in ann["bbox"])
        assert w <= 16 and h <= 16
        # the random network drew something inside the box; far from it the background is untouched
        assert np.abs(pixels[y:y + h, x:x + w] - background[y:y + h, x:x + w]).max() > 1e-3
        far = np.ones(background.shape, dtype=bool)
        far[max(y - 24, 0):y + h + 24, max(x - 24, 0):x + w + 24] = False
        np.testing.assert_allclose(pixels[far], background[far], atol=2e-5)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["objects"] == 2 and manifest["config"]["resolution"] == 32


def test_pickled_weights_are_refused_before_loading(tiny_pipeline, tmp_path):
    import shutil

    copy = tmp_path / "pickled"
    shutil.copytree(tiny_pipeline, copy)
    for weights in (copy / "unet").glob("*.safetensors"):
        weights.unlink()
    (copy / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle; never opened
    with pytest.raises(UserInputError, match="only safetensors") as err:
        check_pipeline_dir(copy)
    assert "diffusion_pytorch_model.bin" in str(err.value)

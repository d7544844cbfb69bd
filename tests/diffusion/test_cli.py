"""``rfo-synth diffusion train | sample`` end to end with the tiny preset."""

from __future__ import annotations

import json

from rfo_toolkit.cli import rfo_synth_main as synth_main


def test_train_then_sample_through_the_cli(tiny_coco, tmp_path, capsys):
    ckpt = tmp_path / "ckpt"
    code = synth_main(["diffusion", "train", "--data", str(tiny_coco), "--out", str(ckpt), "--preset", "tiny",
                       "--patch-size", "32", "--steps", "2", "--batch", "2", "--save-every", "1"])
    assert code == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["step"] == 2 and summary["patches"] == 8
    assert "train: 100%" in captured.err and "2/2" in captured.err  # the step bar, on stderr
    assert (ckpt / "unet" / "diffusion_pytorch_model.safetensors").exists()
    code = synth_main(["diffusion", "sample", "--ckpt", str(ckpt), "--backgrounds", str(tiny_coco / "images"),
                       "--out", str(tmp_path / "out"), "--n", "2", "--steps", "2", "--classes", "needle",
                       "--scheduler", "dpm", "--seed", "3"])
    assert code == 0
    manifest = json.loads(capsys.readouterr().out)
    coco = json.loads((tmp_path / "out" / "annotations.json").read_text())
    assert manifest["objects"] == 2 and {a["category_id"] for a in coco["annotations"]} == {3}
    assert manifest["sampler"]["scheduler"] == "dpm" and manifest["seed"] == 3
    # resuming a finished run is a no-op that still reports the step
    code = synth_main(["diffusion", "train", "--data", str(tiny_coco), "--out", str(ckpt), "--preset", "tiny",
                       "--patch-size", "32", "--steps", "2", "--batch", "2", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["resumed_from"] == 2 and "train:" not in captured.err
    # sampling into the finished dataset is refused: no silent overwrite
    code = synth_main(["diffusion", "sample", "--ckpt", str(ckpt), "--backgrounds", str(tiny_coco / "images"),
                       "--out", str(tmp_path / "out"), "--n", "2", "--steps", "2"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    code = synth_main(["diffusion", "train", "--data", str(tiny_coco), "--out", str(ckpt), "--preset", "cpu",
                       "--patch-size", "32", "--steps", "3"])
    assert code == 2 and "another model configuration" in capsys.readouterr().err

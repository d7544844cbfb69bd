"""Damaged or crafted checkpoint files of the diffusion generator: one line, exit code 2, nothing run or deleted."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from rfo_toolkit.cli import rfo_synth_main as synth_main
from synth.diffusion.model import MASK_BANK_FILE, STATE_FILE, load_mask_bank
from toolkit_core.errors import UserInputError

TRAIN = ["--preset", "tiny", "--patch-size", "32", "--batch", "2"]


class SystemMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.diffusion.conftest import write_tiny_coco

    root = tmp_path_factory.mktemp("hostile")
    data = write_tiny_coco(root / "data")
    ckpt = root / "ckpt"
    assert synth_main(["diffusion", "train", "--data", str(data), "--out", str(ckpt), *TRAIN, "--steps", "1"]) == 0
    return data, ckpt


def _copy(trained: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    data, ckpt = trained
    return data, Path(shutil.copytree(ckpt, tmp_path / "ckpt"))


def _one_line(err: str, name: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 damaged", b"\x80\x02}q\x00."])
def test_damaged_training_state_exits_2(trained, tmp_path: Path, capsys, content: bytes) -> None:
    data, ckpt = _copy(trained, tmp_path)
    (ckpt / STATE_FILE).write_bytes(content)
    capsys.readouterr()
    assert synth_main(["diffusion", "train", "--data", str(data), "--out", str(ckpt), *TRAIN, "--steps", "2"]) == 2
    _one_line(capsys.readouterr().err, str(ckpt / STATE_FILE))


def test_training_state_with_code_is_refused(trained, tmp_path: Path, capsys) -> None:
    import torch

    data, ckpt = _copy(trained, tmp_path)
    marker = tmp_path / "marker"
    torch.save({"step": 1, "model": SystemMarker(marker), "optimizer": {}, "ema": {}}, ckpt / STATE_FILE)
    capsys.readouterr()
    code = synth_main(["diffusion", "train", "--data", str(data), "--out", str(ckpt), *TRAIN, "--steps", "2"])
    assert not marker.exists()
    assert code == 2
    _one_line(capsys.readouterr().err, str(ckpt / STATE_FILE))


def test_training_state_of_another_shape_exits_2(trained, tmp_path: Path, capsys) -> None:
    import torch

    data, ckpt = _copy(trained, tmp_path)
    torch.save({"step": 1, "model": {"conv_in.weight": torch.zeros(1)}, "optimizer": {}, "ema": {}}, ckpt / STATE_FILE)
    capsys.readouterr()
    assert synth_main(["diffusion", "train", "--data", str(data), "--out", str(ckpt), *TRAIN, "--steps", "2"]) == 2
    assert "does not fit" in _one_line(capsys.readouterr().err, str(ckpt / STATE_FILE))


def test_object_array_mask_bank_is_refused_unread(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    np.savez(tmp_path / MASK_BANK_FILE, c3_0=np.array([SystemMarker(marker)], dtype=object))
    with pytest.raises(UserInputError) as info:
        load_mask_bank(tmp_path)
    assert not marker.exists()
    assert info.value.file == str(tmp_path / MASK_BANK_FILE) and "refused" in info.value.message


def test_object_array_mask_bank_exits_2_when_sampling(trained, tmp_path: Path, capsys) -> None:
    data, ckpt = _copy(trained, tmp_path)
    np.savez(ckpt / MASK_BANK_FILE, c3_0=np.array([{"not": "a mask"}], dtype=object))
    capsys.readouterr()
    code = synth_main(["diffusion", "sample", "--ckpt", str(ckpt), "--backgrounds", str(data / "images"), "--out",
                       str(tmp_path / "out"), "--n", "1", "--steps", "1", "--classes", "needle"])
    assert code == 2
    _one_line(capsys.readouterr().err, str(ckpt / MASK_BANK_FILE))


@pytest.mark.parametrize("bad", ["damaged", "key", "shape", "size"])
def test_bad_mask_banks_are_user_errors(tmp_path: Path, bad: str, monkeypatch) -> None:
    path = tmp_path / MASK_BANK_FILE
    if bad == "damaged":
        path.write_bytes(b"PK\x03\x04 damaged")
    elif bad == "key":
        np.savez(path, masks=np.zeros((4, 4), bool))
    elif bad == "shape":
        np.savez(path, c3_0=np.zeros(4, bool))
    else:
        import synth.diffusion.model as model

        monkeypatch.setattr(model, "MASK_BANK_MAX_BYTES", 100)
        np.savez_compressed(path, c3_0=np.zeros((64, 64), bool))  # 4 kB decompressed, a few bytes stored
    with pytest.raises(UserInputError) as info:
        load_mask_bank(tmp_path)
    assert info.value.file == str(path)


def test_mask_bank_round_trips_in_order(tmp_path: Path) -> None:
    from synth.diffusion.model import save_mask_bank

    bank = {3: [np.eye(3, dtype=bool), np.ones((2, 5), bool)], 1: [np.zeros((4, 4), bool)]}
    bank[3].extend(np.full((k + 1, 2), True) for k in range(10))  # index 10 sorts after 9, not after 1
    save_mask_bank(tmp_path, bank)
    loaded = load_mask_bank(tmp_path)
    assert list(loaded) == [1, 3] and len(loaded[3]) == 12
    for cid in bank:
        for a, b in zip(bank[cid], loaded[cid], strict=True):
            assert np.array_equal(a, b)
    assert [p.name for p in tmp_path.iterdir()] == [MASK_BANK_FILE]  # no temporary file left


def test_a_foreign_output_folder_is_refused_and_left_intact(trained, tmp_path: Path, capsys) -> None:
    """A Stable Diffusion pipeline folder given as --out: its unet/ must not be replaced."""
    data, _ = trained
    pipeline = tmp_path / "stable-diffusion"
    (pipeline / "unet").mkdir(parents=True)
    (pipeline / "unet" / "config.json").write_text("{}")
    (pipeline / "model_index.json").write_text("{}")
    capsys.readouterr()
    assert synth_main(["diffusion", "train", "--data", str(data), "--out", str(pipeline), *TRAIN, "--steps", "1"]) == 2
    assert "not an rfo-synth diffusion checkpoint" in _one_line(capsys.readouterr().err, str(pipeline))
    assert sorted(p.name for p in pipeline.rglob("*")) == ["config.json", "model_index.json", "unet"]


def test_resaving_replaces_only_the_trainer_folders(trained, tmp_path: Path, capsys) -> None:
    """Training on replaces unet/ and scheduler/ through hidden staging folders; a user's folder named
    like the old fixed staging names (``unet.tmp``, ``unet.old``) is left alone."""
    data, ckpt = _copy(trained, tmp_path)
    for name in ("unet.tmp", "unet.old"):
        (ckpt / name).mkdir()
        (ckpt / name / "mine.txt").write_text("keep")
    assert synth_main(["diffusion", "train", "--data", str(data), "--out", str(ckpt), *TRAIN, "--steps", "2"]) == 0
    assert (ckpt / "unet.tmp" / "mine.txt").read_text() == "keep" and (ckpt / "unet.old" / "mine.txt").exists()
    assert (ckpt / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (ckpt / "scheduler" / "scheduler_config.json").is_file()
    assert not [p for p in ckpt.iterdir() if p.name.startswith(".")]  # no staging folder left behind

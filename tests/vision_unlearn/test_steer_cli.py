"""Bad input to ``vision-unlearn run --method steer``: one line, exit code 2, nothing written."""

from __future__ import annotations

import pytest
import torch

from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.checkpoint import save_model
from vision_unlearn.cli import main


@pytest.fixture()
def model_file(tmp_path):
    torch.manual_seed(0)
    adapter = TimmAdapter(TimmModelSpec("test_resnet", num_classes=10, in_chans=1))
    path = tmp_path / "original.pt"
    save_model(path, adapter.model.state_dict(), adapter.describe(),
               {"dataset": "digits", "image_size": None, "in_chans": 1, "data_seed": 0})
    return path


@pytest.mark.parametrize(("overrides", "forget", "expected"), [
    (["layer=layer9"], "class:3", "layer"),
    ([], "ids:{empty}", "forget"),
])
def test_bad_steer_input_exits_2_with_one_line(model_file, tmp_path, capsys, overrides, forget, expected) -> None:
    empty = tmp_path / "empty_ids.txt"
    empty.write_text("# nobody\n")
    out = tmp_path / "run"
    argv = ["run", "--model-file", str(model_file), "--method", "steer", "--forget", forget.format(empty=empty),
            "--out", str(out), "--no-progress", "--no-eval"]
    for item in overrides:
        argv += ["--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err and "Traceback" not in err
    assert not (out / "unlearned.pt").exists() and not (out / "audit.json").exists()

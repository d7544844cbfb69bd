"""The vision-unlearn CLI on real digits: train -> run -> audit, and bad input exits 2 writing nothing."""

from __future__ import annotations

import json

import pytest

from rfo_toolkit.cli import vision_unlearn_main as main
from toolkit_core.utils import sha256_file
from vision_unlearn.adapters.timm import TimmAdapter, TimmModelSpec
from vision_unlearn.checkpoint import save_model


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "original.pt"
    assert main(["train", "--data", "digits", "--set", "epochs=2", "--set", "lr=0.05", "--out", str(path),
                 "--threads", "1", "--no-progress"]) == 0
    return path


def test_train_records_the_model(model_file, capsys) -> None:
    from vision_unlearn.checkpoint import load_model_file

    _, meta = load_model_file(model_file)
    assert meta["model"]["name"] == "test_resnet" and meta["model"]["num_classes"] == 10
    assert meta["dataset"] == "digits" and meta["test_accuracy"] > 50.0
    # a finished run leaves its model file only, no resume checkpoint beside it
    assert [p.name for p in model_file.parent.iterdir()] == ["original.pt"]
    # refuses to overwrite
    assert main(["train", "--set", "epochs=1", "--out", str(model_file)]) == 2
    assert "output exists" in capsys.readouterr().err


def test_run_writes_model_metrics_and_audit(model_file, tmp_path, capsys) -> None:
    out = tmp_path / "run"
    args = ["run", "--model-file", str(model_file), "--method", "finetune", "--forget", "class:3",
            "--set", "epochs=1", "--out", str(out), "--threads", "1", "--no-progress"]
    assert main(args) == 0
    summary = json.loads((out / "metrics.json").read_text())
    from vision_unlearn.data import load_classification_data

    train = load_classification_data("digits")["train"]
    assert summary["n_forget"] + summary["n_retain"] == len(train)
    assert summary["n_forget"] == int((train.labels == 3).sum())
    assert set(summary["metrics"]) >= {"UA", "RA", "TA", "MIA", "TA_remaining"}
    audit = json.loads((out / "audit.json").read_text())
    assert audit["method"] == "finetune" and audit["config"]["epochs"] == 1
    assert audit["checkpoint_before_sha256"] == sha256_file(model_file)
    assert audit["checkpoint_after_sha256"] == sha256_file(out / "unlearned.pt")
    assert "digits-" not in json.dumps(audit["forgotten"])  # ids are hashed
    digest = sha256_file(out / "unlearned.pt")
    capsys.readouterr()
    assert main(args) == 2  # nothing overwritten without --overwrite
    assert "output exists" in capsys.readouterr().err
    assert sha256_file(out / "unlearned.pt") == digest


def _run_error(model_file, out, *extra: str) -> str:
    import io
    from contextlib import redirect_stderr

    buffer = io.StringIO()
    with redirect_stderr(buffer):
        code = main(["run", "--model-file", str(model_file), "--out", str(out), "--threads", "1", *extra])
    assert code == 2
    assert not out.exists() or not any(out.iterdir()), "an error run wrote outputs"
    return buffer.getvalue()


def test_bad_input_exits_2_and_writes_nothing(model_file, tmp_path) -> None:
    out = tmp_path / "bad"
    assert "unknown unlearning method" in _run_error(model_file, out, "--method", "nope", "--forget", "class:3")
    assert "class not in the data" in _run_error(model_file, out, "--method", "finetune", "--forget", "class:42")
    empty = tmp_path / "empty.txt"
    empty.write_text("# no ids\n")
    assert "lists no ids" in _run_error(model_file, out, "--method", "finetune", "--forget", f"ids:{empty}")
    assert "unknown config field" in _run_error(model_file, out, "--method", "ofmu", "--forget", "class:3",
                                                "--set", "betta=1")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(model_file.read_bytes()[:200])
    assert "corrupted" in _run_error(corrupt, out, "--method", "finetune", "--forget", "class:3")


def test_mismatched_num_classes(tmp_path) -> None:
    adapter = TimmAdapter(TimmModelSpec("test_resnet", num_classes=5, in_chans=1))
    wrong = tmp_path / "five.pt"
    save_model(wrong, adapter.model.state_dict(), adapter.describe(), {"dataset": "digits"})
    assert "5 classes but digits has 10" in _run_error(wrong, tmp_path / "out", "--method", "finetune",
                                                       "--forget", "class:3")


def test_list_methods_and_benchmark_errors(tmp_path, capsys) -> None:
    assert main(["list-methods", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert {"ofmu", "ofmu_first_order", "retrain", "salun", "scrub"} <= set(listing)
    assert listing["ofmu"]["hessian"] == "exact"
    out = tmp_path / "bench"
    assert main(["benchmark", "--forget", "class:3", "--methods", "nope", "--out", str(out)]) == 2
    assert main(["benchmark", "--forget", "klass:3", "--out", str(out)]) == 2
    assert main(["benchmark", "--forget", "class:3", "--set", "ofmu.nope=1", "--out", str(out)]) == 2
    assert not out.exists()


def test_train_batch_wins_over_set_batch_size_and_overwrite_replaces_the_file(tmp_path, caplog) -> None:
    from vision_unlearn.checkpoint import load_model_file

    path = tmp_path / "m.pt"
    argv = ["train", "--set", "epochs=1", "--set", "batch_size=8", "--batch", "32", "--out", str(path),
            "--threads", "1", "--no-progress"]
    assert main(argv) == 0
    _, meta = load_model_file(path)
    assert meta["training"]["config"]["batch_size"] == 32
    assert main(argv) == 2  # exists
    with caplog.at_level("WARNING"):
        assert main([*argv, "--force"]) == 0  # the old spelling of --overwrite
    assert any("--force is deprecated" in r.getMessage() and "--overwrite" in r.getMessage() for r in caplog.records)

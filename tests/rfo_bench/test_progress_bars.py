"""Long ``rfo_bench`` steps report progress on stderr when asked, and only then: the evaluator's
bootstrap (off by default in the library; the CLI decides) and the image check of ``validate``."""

from __future__ import annotations

import numpy as np

from rfo_bench import evaluate as evaluate_module
from rfo_bench import validate
from rfo_bench.evaluate import EvalConfig, evaluate
from rfo_bench.io.images import write_png16
from rfo_bench.io.records import Category, DetectionDataset, ImageRecord
from tests.rfo_bench.conftest import random_coco_problem


def test_bootstrap_bar_only_with_progress_and_a_large_problem(capsys, monkeypatch) -> None:
    gt, results = random_coco_problem(0, num_images=20)
    config = EvalConfig(bootstrap=30, seed=1)
    quiet = evaluate(gt, results, config)
    assert "bootstrap" not in capsys.readouterr().err  # library default: no bar
    evaluate(gt, results, config, progress=True)
    assert "bootstrap" not in capsys.readouterr().err  # 30 x 20 is below the threshold
    monkeypatch.setattr(evaluate_module, "BOOTSTRAP_PROGRESS_MIN", 30 * 20)
    shown = evaluate(gt, results, config, progress=True)
    assert "bootstrap (30 replicates x 20 images)" in capsys.readouterr().err
    assert shown["ci95"] == quiet["ci95"]  # the bar changes nothing computed


def test_validate_bar_over_many_images_unless_progress_is_off(tmp_path, capsys, monkeypatch) -> None:
    records = []
    for k in range(3):
        write_png16(tmp_path / f"{k}.png", np.full((11, 17), 0.5))
        records.append(ImageRecord(f"{k}.png", k + 1, 17, 11))
    dataset = DetectionDataset(root=tmp_path, images=tuple(records), categories=(Category(1, "sponge"),))
    monkeypatch.setattr(validate, "VALIDATE_PROGRESS_MIN", 3)
    assert validate.check_images(dataset) == []
    assert "checking images" in capsys.readouterr().err
    assert validate.check_images(dataset, progress=False) == []
    assert "checking images" not in capsys.readouterr().err

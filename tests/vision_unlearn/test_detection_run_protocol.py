"""``vision-unlearn run --model yolo:...`` reports before and after on images it never unlearns on, at the
detector's own image size, from the benchmark's per-request presets; membership is asked only of image
requests, and the calibrated attack tells a detector that saw an image from one that did not. The
benchmark's selection never sees a reported test image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rfo_toolkit.cli import vision_unlearn_main as main
from toolkit_core.errors import UserInputError


def _argv(out: Path, *extra: str, model: str = "yolo:yolov8n.yaml", data: str = "toy:10") -> list[str]:
    return ["run", "--model", model, "--data", data, "--out", str(out), "--no-progress", "--threads", "1", *extra]


# --- held-out images ----------------------------------------------------------------------------------
def test_split_is_by_patient_seeded_and_keeps_named_images_in_training() -> None:
    from vision_unlearn.detection_data import heldout_patient_split

    patients = [f"p{i // 2}" for i in range(20)]  # 10 patients, two images each
    train, held = heldout_patient_split(patients, 0.2, seed=3, keep_in_training=[0, 1, 2])
    assert {patients[i] for i in train}.isdisjoint({patients[i] for i in held})
    assert len({patients[i] for i in held}) == 2  # 20 % of the 8 eligible patients, rounded
    assert {0, 1, 2, 3} <= set(train.tolist())  # p0 and p1 are named: they stay, with all their images
    again, _ = heldout_patient_split(patients, 0.2, seed=3, keep_in_training=[0, 1, 2])
    other, _ = heldout_patient_split(patients, 0.2, seed=4, keep_in_training=[0, 1, 2])
    assert np.array_equal(train, again) and not np.array_equal(train, other)
    with pytest.raises(UserInputError, match="--test-data"):
        heldout_patient_split(["a", "a"], 0.2, seed=0)


def test_held_out_images_are_never_unlearned_on() -> None:
    from vision_unlearn.detection_data import toy_detection_data
    from vision_unlearn.detection_run import prepare_run_data

    full = toy_detection_data(20, 0, 64)
    for request in ("class:clamp", "patient:toy_0_p00001"):
        prepared = prepare_run_data(full, request, None, None, evaluate=True, seed=0)
        held = set(prepared.test.sample_ids)
        assert held and held.isdisjoint(prepared.train.sample_ids)
        assert len(held) + len(prepared.train) == len(full)
        used = set(prepared.split.forget_data(prepared.train).sample_ids) | set(
            prepared.split.retain_data(prepared.train).sample_ids)
        assert used.isdisjoint(held)
    # the patient named by the request stays in training
    assert {"toy_0_00002.png", "toy_0_00003.png"} <= set(prepared.train.sample_ids)


def test_run_without_test_data_splits_says_so_and_reports_before_and_after(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    assert main(_argv(out, "--imgsz", "64", "--forget", "class:clamp", "--method", "finetune",
                      "--set", "epochs=1")) == 0
    captured = capsys.readouterr()
    summary = json.loads((out / "metrics.json").read_text())
    held = (out / "heldout_images.txt").read_text().split()
    assert summary["evaluation"]["test_images"] == len(held) > 0
    assert summary["evaluation"]["train_images"] + len(held) == 10
    assert "split off" in summary["evaluation"]["test_source"] and "split off" in captured.err
    before, after = summary["metrics"]["before"], summary["metrics"]["after"]
    assert set(before) == set(after) and "forget_ap50" in before and "retain_map50" in after
    # an untrained detector finds nothing: the request cannot be evaluated, and the output says so
    assert summary["evaluable"] is False and "finds nothing" in captured.err
    assert "mia_auc" not in after  # class request: no membership question
    # the benchmark's class preset is the default; --set wins over it
    record = json.loads((out / "audit.json").read_text())
    assert record["config"]["optimizer"] == "adam" and record["config"]["lr"] == pytest.approx(1e-3)
    assert record["config"]["epochs"] == 1


def test_presets_per_request_kind_and_groups() -> None:
    from vision_unlearn.detection_benchmark import DetectionBenchmarkConfig
    from vision_unlearn.detection_presets import run_preset

    bench = DetectionBenchmarkConfig()
    fields, groups = run_preset("neggrad_plus", removes_images=True)
    assert fields == {**bench.methods["neggrad_plus"], **bench.sample_methods["neggrad_plus"]}
    assert fields["forget_loss_ceiling"] == "heldout_quantiles" and groups is None
    fields, groups = run_preset("ofmu", removes_images=False)
    assert fields == bench.methods["ofmu"] and groups == ("head",)
    assert run_preset("steer", removes_images=False) == ({}, None)


# --- image size -------------------------------------------------------------------------------------
def test_image_size_comes_from_the_checkpoint_and_a_flag_wins(tmp_path: Path) -> None:
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
    from vision_unlearn.detection_data import TOY_CLASSES
    from vision_unlearn.detection_run import checkpoint_image_size

    adapter = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=3, in_chans=1, class_names=TOY_CLASSES,
                                        image_size=64))
    path = adapter.save(tmp_path / "small.pt")
    assert checkpoint_image_size(str(path)) == 64
    assert checkpoint_image_size("yolov8n.yaml") is None
    ids = tmp_path / "ids.txt"
    ids.write_text("toy_0_00000.png\n")
    common = ["--forget", f"images:{ids}", "--method", "grad_ascent", "--set", "epochs=1", "--set", "batch_size=4"]
    assert main(_argv(tmp_path / "a", *common, model=f"yolo:{path}")) == 0
    evaluation = json.loads((tmp_path / "a" / "metrics.json").read_text())["evaluation"]
    assert evaluation["image_size"] == 64 and "checkpoint" in evaluation["image_size_source"]
    assert main(_argv(tmp_path / "b", *common, "--imgsz", "96", model=f"yolo:{path}")) == 0
    summary = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert summary["evaluation"]["image_size"] == 96
    assert "mia_auc" in summary["metrics"]["after"]  # image request: membership is asked


# --- membership ---------------------------------------------------------------------------------------
def test_calibrated_attack_tells_a_detector_that_saw_the_images_from_one_that_did_not() -> None:
    """Synthetic per-image losses with a known answer. Image difficulty spreads over two orders of
    magnitude, so a global loss threshold barely separates members; a model that trained on an image
    halves its loss (log shift -0.69), reference detectors see each image's unseen loss with 10 %
    noise. Margins: with 150 + 150 images the AUC's standard error is about 0.03."""
    from vision_unlearn.metrics.detection import loss_membership_attack
    from vision_unlearn.metrics.detection_membership import reference_calibrated_attack

    rng = np.random.default_rng(0)
    difficulty = np.exp(rng.uniform(-2.5, 2.5, 300))
    members, nonmembers = np.arange(150), np.arange(150, 300)
    references = difficulty * np.exp(0.1 * rng.standard_normal((4, 300)))
    saw = difficulty * np.exp(0.1 * rng.standard_normal(300))
    saw[members] *= 0.5  # the original detector trained on the forget images
    did_not = difficulty * np.exp(0.1 * rng.standard_normal(300))  # a retrained detector
    original = reference_calibrated_attack(saw[members], saw[nonmembers], references[:, members],
                                           references[:, nonmembers])
    retrained = reference_calibrated_attack(did_not[members], did_not[nonmembers], references[:, members],
                                            references[:, nonmembers])
    assert original["auc"] > 0.95 and original["auc_ci_low"] > 0.9
    assert abs(retrained["auc"] - 0.5) < 0.12
    assert loss_membership_attack(saw[members], saw[nonmembers])["auc"] < 0.75  # what the old attack sees
    one_reference = reference_calibrated_attack(saw[members], saw[nonmembers], references[:1, members],
                                                references[:1, nonmembers])
    assert one_reference["auc"] > 0.9 and one_reference["references"] == 1


def test_calibrated_scores_name_bad_shapes() -> None:
    from vision_unlearn.metrics.detection_membership import reference_calibrated_scores

    with pytest.raises(ValueError, match=r"\[R, 3\]"):
        reference_calibrated_scores(np.ones(3), np.ones((2, 4)))


def test_membership_is_asked_of_image_requests_only() -> None:
    from vision_unlearn.adapters.yolo import YoloAdapter, YoloModelSpec
    from vision_unlearn.detection_data import toy_detection_data
    from vision_unlearn.detection_eval import evaluate_detector, membership_losses
    from vision_unlearn.detection_forget import resolve_detection_forget

    train, test = toy_detection_data(8, 0, 64), toy_detection_data(4, 1, 64)
    adapter = YoloAdapter(YoloModelSpec("yolov8n.yaml", num_classes=3, in_chans=1, class_names=train.class_names,
                                        image_size=64))
    adapter.reset_parameters(0)
    by_class = evaluate_detector(adapter, train, test, resolve_detection_forget("class:clamp", train))
    assert "mia_auc" not in by_class and "calibrated_mia_auc" not in by_class
    split = resolve_detection_forget("patient:toy_0_p00000", train)
    reference = membership_losses(adapter, train, test, split)
    by_image = evaluate_detector(adapter, train, test, split, references=[reference])
    assert 0.0 <= by_image["mia_auc"] <= 1.0
    assert by_image["calibrated_mia_auc"] == pytest.approx(0.5, abs=0.26)  # same model: every score 0


# --- protocol -------------------------------------------------------------------------------------------
def test_selection_never_touches_a_reported_test_image(tmp_path: Path) -> None:
    from vision_unlearn.detection_benchmark import make_benchmark_config
    from vision_unlearn.detection_protocol import reported_test_ids, select_presets, selection_data

    config = make_benchmark_config(image_size=64, n_train=8, n_test=4, seeds=(0, 1, 2), methods=["neggrad_plus"],
                                   scenarios=["images:0.25"],
                                   overrides={"original": {"epochs": 1, "batch_size": 4},
                                              "neggrad_plus": {"epochs": 1}})
    reported = reported_test_ids(config)
    assert len(reported) == 12  # each seed its own test images
    part = selection_data(config)
    assert reported.isdisjoint(part.validation.sample_ids) and reported.isdisjoint(part.train.sample_ids)
    record = select_presets(config, "images:0.25", tmp_path)
    assert reported.isdisjoint(record["validation_ids"]) and reported.isdisjoint(record["train_ids"])
    choice = record["methods"]["neggrad_plus"]
    assert choice["chosen"] in choice["distances"] and set(choice["distances"]) == {"preset", "half rate"}

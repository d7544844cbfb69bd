"""FID / KID against closed forms and hand-computed kernels; named timm extractors and classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rfo_toolkit.cli import rfo_synth_main as synth_main
from synth.diffusion.qc import (
    ClassifierScorer,
    TimmModelSpec,
    TimmNetwork,
    acceptance_rate,
    evaluate_sets,
    fid_from_features,
    frechet_distance,
    kid_from_features,
    mmd2_unbiased,
    polynomial_kernel,
)
from toolkit_core.errors import UserInputError


def test_frechet_distance_closed_form_diagonal():
    # |mu1 - mu2|^2 = 9 + 16 = 25; diagonal terms sum (sqrt(a) - sqrt(b))^2 = (1 - 2)^2 + (2 - 3)^2 = 2
    fid = frechet_distance(np.zeros(2), np.diag([1.0, 4.0]), np.array([3.0, 4.0]), np.diag([4.0, 9.0]))
    assert fid == pytest.approx(27.0, abs=1e-9)


def test_frechet_distance_non_diagonal_equal_covariance_is_mean_term():
    a = np.array([[2.0, 0.5], [0.5, 1.0]])
    assert frechet_distance(np.array([1.0, 1.0]), a, np.array([0.0, 3.0]), a) == pytest.approx(5.0, abs=1e-8)


def test_fid_identical_sets_is_zero_and_shift_is_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 3))
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, 2.0, 2.0])  # |shift|^2 = 9, identical covariances
    assert fid_from_features(x, x + shift) == pytest.approx(9.0, abs=1e-6)
    y = rng.normal(size=(4000, 3)) * 2.0 + shift  # N(shift, 4I): 9 + 3 * (1 - 2)^2 = 12
    assert fid_from_features(x, y) == pytest.approx(12.0, rel=0.05)


def test_singular_covariances_do_not_break_fid():
    x = np.zeros((10, 4))
    x[:, 0] = np.arange(10)
    assert np.isfinite(fid_from_features(x, x + 1.0))


def test_mmd_unbiased_hand_computed():
    # linear kernel x*y + 1 on X = {0, 2}, Y = {1, 1}: off-diagonal mean of K_xx = 1, of K_yy = 2, mean K_xy = 2
    x, y = np.array([[0.0], [2.0]]), np.array([[1.0], [1.0]])
    k = lambda a, b: polynomial_kernel(a, b, degree=1, gamma=1.0, coef0=1.0)  # noqa: E731
    assert mmd2_unbiased(k(x, x), k(y, y), k(x, y)) == pytest.approx(-1.0)
    assert kid_from_features(x, y, degree=1, gamma=1.0)[0] == pytest.approx(-1.0)


def test_polynomial_kernel_default_gamma():
    x = np.array([[1.0, 2.0]])
    assert polynomial_kernel(x, x)[0, 0] == pytest.approx((5.0 / 2 + 1.0) ** 3)


def test_kid_same_distribution_near_zero_and_linear_shift_closed_form():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(600, 4)), rng.normal(size=(600, 4))
    mean, std = kid_from_features(a, b, subsets=20, subset_size=300)
    assert abs(mean) < 3 * std + 1e-3
    shift = np.array([1.0, 0.0, 2.0, 0.0])
    # linear kernel: E[MMD^2_u] = gamma * |shift|^2 = 5; the estimate's sd is about 2 |shift| sqrt(2 / n) = 0.12
    big_a, big_b = rng.normal(size=(3000, 4)), rng.normal(size=(3000, 4)) + shift
    mean, std = kid_from_features(big_a, big_b, degree=1, gamma=1.0, subset_size=3000)
    assert std == 0.0 and mean == pytest.approx(5.0, abs=0.4)
    assert kid_from_features(a, b + shift)[0] > 10 * abs(kid_from_features(a, b)[0])


def test_acceptance_rate():
    assert acceptance_rate(np.array([0.1, 0.5, 0.7, 0.2]), 0.5) == 0.5


def test_extractor_needs_a_checkpoint_or_explicit_random_init():
    with pytest.raises(UserInputError, match="random-init"):
        TimmNetwork(TimmModelSpec(name="test_resnet"))
    with pytest.raises(UserInputError, match="unknown timm architecture"):
        TimmNetwork(TimmModelSpec(name="no_such_net", random_init=True))


def test_random_init_extractor_is_seeded_and_features_have_shape():
    net = TimmNetwork(TimmModelSpec(name="test_resnet", random_init=True, input_size=32))
    patches = np.random.default_rng(0).random((5, 24, 24)).astype(np.float32)
    f1 = net.features(patches)
    f2 = TimmNetwork(TimmModelSpec(name="test_resnet", random_init=True, input_size=32)).features(patches)
    assert f1.shape == (5, net.model.num_features) and f1.dtype == np.float64
    np.testing.assert_allclose(f1, f2)


def _save_classifier(path, class_names, weight_for=None):
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", pretrained=False, in_chans=1, num_classes=len(class_names))
    torch.save({"arch": "test_resnet", "in_chans": 1, "class_names": class_names, "input_size": 32,
                "state_dict": model.state_dict()}, path)


def test_classifier_checkpoint_round_trip_and_scorer(tmp_path):
    ckpt = tmp_path / "clf.pt"
    _save_classifier(ckpt, ["sponge", "needle"])
    net = TimmNetwork(TimmModelSpec(name=None, checkpoint=str(ckpt)), need_classifier=True)
    assert net.class_names == ["sponge", "needle"] and net.input_size == 32 and net.in_chans == 1
    patches = np.random.default_rng(0).random((4, 32, 32)).astype(np.float32)
    probs = net.probabilities(patches)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    scores = ClassifierScorer(net).score(patches, np.array([1, 3, 1, 5]))
    np.testing.assert_allclose(scores[:3], [probs[0, 0], probs[1, 1], probs[2, 0]])
    assert scores[3] == 0.0  # a class the classifier does not know is never accepted
    extractor = TimmNetwork(TimmModelSpec(name="test_resnet", random_init=True, input_size=32))
    report = evaluate_sets(patches, patches[::-1].copy(), extractor, real_classes=np.array([1, 1, 3, 3]),
                           generated_classes=np.array([3, 3, 1, 1]), scorer=ClassifierScorer(net))
    assert report["fid"] is None and report["n_real"] == 4  # FID needs 2000 per set
    assert report["kid_low"] <= report["kid"] <= report["kid_high"]
    assert report["qc"]["classifier"]["checkpoint_sha256"] and 0.0 <= report["qc"]["acceptance_real"] <= 1.0


def test_mismatched_checkpoint_is_a_user_error(tmp_path):
    ckpt = tmp_path / "clf.pt"
    _save_classifier(ckpt, ["sponge", "needle"])
    with pytest.raises(UserInputError, match="does not match"):
        TimmNetwork(TimmModelSpec(name="resnet18", checkpoint=str(ckpt)))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match="readable torch checkpoint"):
        TimmNetwork(TimmModelSpec(name="test_resnet", checkpoint=str(tmp_path / "junk.pt")))


def test_eval_cli(tiny_run, tmp_path, capsys):
    data, ckpt = tiny_run
    out = tmp_path / "report.json"
    code = synth_main(["diffusion", "eval", "--real", str(data), "--generated", str(data), "--ckpt", str(ckpt),
                       "--extractor", "test_resnet", "--random-init", "--out", str(out)])
    assert code == 0
    import json

    report = json.loads(out.read_text())
    assert report["fid"] is None and report["n_real"] == report["n_generated"] == 8
    assert report["kid_low"] <= report["kid"] <= report["kid_high"]
    assert report["extractor"]["random_init"] is True
    capsys.readouterr()
    code = synth_main(["diffusion", "eval", "--real", str(data), "--generated", str(tmp_path), "--extractor",
                       "test_resnet", "--random-init"])
    assert code == 2 and "annotations.json" in capsys.readouterr().err


def test_fit_patch_classifier_learns_a_separable_task_and_saves_a_loadable_checkpoint(tmp_path):
    from synth.diffusion.qc import ClassifierTrainConfig, fit_patch_classifier

    rng = np.random.default_rng(0)
    patches = rng.random((48, 16, 16)).astype(np.float32) * 0.2
    classes = np.array([1, 3] * 24)
    patches[classes == 1, 4:12, 4:12] += 0.7  # a bright square (sponge)
    patches[classes == 3, 7:9, :] += 0.7  # a bright line (needle); rotations keep it a line
    result = fit_patch_classifier(patches, classes, tmp_path / "clf.pt",
                                  ClassifierTrainConfig(arch="test_resnet", epochs=12, batch_size=8, learning_rate=3e-3),
                                  val_patches=patches[:8], val_class_ids=classes[:8], progress=False)
    assert result["class_names"] == ["sponge", "needle"] and result["train_accuracy"] >= 0.9
    scorer = ClassifierScorer(TimmNetwork(TimmModelSpec(name=None, checkpoint=str(tmp_path / "clf.pt")),
                                          need_classifier=True))
    scores = scorer.score(patches[:8], classes[:8])
    assert np.mean(scores > 0.5) >= 0.75

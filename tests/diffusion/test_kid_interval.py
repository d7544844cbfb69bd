"""KID's both-set bootstrap interval against a closed-form MMD^2, FID's sample-size floor, extractor != QC."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synth.diffusion.distances import (
    FID_MIN_SAMPLES,
    fid_if_enough,
    kid_with_interval,
    mmd2_unbiased,
    polynomial_kernel,
)
from synth.diffusion.qc import ClassifierScorer, TimmModelSpec, TimmNetwork, evaluate_sets
from toolkit_core.errors import UserInputError


def expected_cubic_kernel(mean_x: np.ndarray, sd_x: float, mean_y: np.ndarray, sd_y: float, gamma: float,
                          coef0: float = 1.0) -> float:
    """``E[(gamma x.y + coef0)^3]`` for independent ``x ~ N(mean_x, sd_x^2 I)``, ``y ~ N(mean_y, sd_y^2 I)``.

    Given ``y``, ``s = gamma x.y + coef0`` is normal with mean ``m = coef0 + gamma mean_x.y`` and variance
    ``v = gamma^2 sd_x^2 |y|^2``, so ``E[s^3 | y] = m^3 + 3 m v``; the moments of ``y`` up to order 3 finish it.
    """
    d = mean_x.size
    alpha = coef0 + gamma * mean_x @ mean_y
    beta2 = gamma**2 * sd_y**2 * (mean_x @ mean_x)
    e_m3 = alpha**3 + 3 * alpha * beta2
    e_m_norm2 = alpha * (mean_y @ mean_y + sd_y**2 * d) + 2 * gamma * sd_y**2 * (mean_x @ mean_y)
    return float(e_m3 + 3 * gamma**2 * sd_x**2 * e_m_norm2)


def true_mmd2(mean_a: np.ndarray, mean_b: np.ndarray, gamma: float) -> float:
    k = expected_cubic_kernel
    return k(mean_a, 1.0, mean_a, 1.0, gamma) + k(mean_b, 1.0, mean_b, 1.0, gamma) - 2 * k(mean_a, 1.0, mean_b, 1.0, gamma)


def test_closed_form_kernel_expectation_matches_a_large_sample():
    rng = np.random.default_rng(0)
    d, n = 4, 400_000
    mean_x, mean_y = np.array([0.5, -1.0, 0.0, 0.3]), np.array([1.0, 0.2, -0.4, 0.0])
    x, y = rng.normal(size=(n, d)) * 0.7 + mean_x, rng.normal(size=(n, d)) * 1.3 + mean_y
    sample = np.mean((0.25 * np.sum(x * y, axis=1) + 1.0) ** 3)
    assert expected_cubic_kernel(mean_x, 0.7, mean_y, 1.3, 0.25) == pytest.approx(sample, rel=0.01)


@pytest.mark.parametrize("shift", [0.0, 1.0])
def test_kid_interval_covers_the_true_mmd2(shift):
    """40 seeded pairs of samples (n = 120 and 90, 8-d Gaussians, |mean difference| = ``shift``).

    A 95 % interval should miss about 2 of 40; the test allows 4 (P(more than 4 misses) < 0.05 at 95 %
    coverage). The interval must also be informative: its median width at most twice the spread of the
    estimates themselves (3.92 of their standard deviations), which an interval resampling one set only
    or an unbounded one would fail in opposite directions.
    """
    d = 8
    mean_a, mean_b = np.zeros(d), np.full(d, shift / np.sqrt(d))
    truth = true_mmd2(mean_a, mean_b, gamma=1.0 / d)
    covered, widths, estimates = 0, [], []
    for rep in range(40):
        rng = np.random.default_rng(1000 + rep)
        a, b = rng.normal(size=(120, d)) + mean_a, rng.normal(size=(90, d)) + mean_b
        kid = kid_with_interval(a, b, resamples=300, seed=rep)
        assert kid.n_a == 120 and kid.n_b == 90 and kid.low <= kid.kid <= kid.high
        covered += kid.low <= truth <= kid.high
        widths.append(kid.high - kid.low)
        estimates.append(kid.kid)
    assert covered >= 36
    assert np.median(widths) <= 2.0 * 3.92 * np.std(estimates)
    assert abs(np.mean(estimates) - truth) < 3 * np.std(estimates) / np.sqrt(40)  # unbiased


def test_kid_interval_point_is_the_full_set_u_statistic_and_excludes_zero_for_far_sets():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(60, 3)), rng.normal(size=(50, 3)) + 2.0
    kid = kid_with_interval(a, b, resamples=200)
    k = polynomial_kernel
    assert kid.kid == pytest.approx(mmd2_unbiased(k(a, a), k(b, b), k(a, b)))
    assert kid.low > 0.0
    with pytest.raises(ValueError, match="N >= 2"):
        kid_with_interval(a[:1], b)


def test_fid_is_withheld_below_2000_samples_per_set():
    rng = np.random.default_rng(0)
    small, big = rng.normal(size=(1999, 2)), rng.normal(size=(FID_MIN_SAMPLES, 2))
    value, note = fid_if_enough(small, big)
    assert value is None and "2000" in note and "1999" in note
    value, note = fid_if_enough(big, big + 1.0)
    assert note is None and value == pytest.approx(2.0, abs=1e-6)


def _save(path, arch_seed: int, class_names=None):
    import timm

    torch.manual_seed(arch_seed)
    model = timm.create_model("test_resnet", pretrained=False, in_chans=1, num_classes=len(class_names or [0] * 10))
    data = {"arch": "test_resnet", "in_chans": 1, "input_size": 32, "state_dict": model.state_dict(),
            "trained_on": "a test", "accuracy": {"heldout_accuracy": 0.5}}
    if class_names:
        data["class_names"] = class_names
    torch.save(data, path)


def test_extractor_must_not_be_the_qc_checkpoint_and_reports_name_n_and_no_small_fid(tmp_path):
    _save(tmp_path / "qc.pt", 0, ["sponge", "needle"])
    _save(tmp_path / "features.pt", 1)
    qc = ClassifierScorer(TimmNetwork(TimmModelSpec(name=None, checkpoint=str(tmp_path / "qc.pt")), need_classifier=True))
    patches = np.random.default_rng(0).random((6, 32, 32)).astype(np.float32)
    classes = np.array([1, 3] * 3)
    same = TimmNetwork(TimmModelSpec(name=None, checkpoint=str(tmp_path / "qc.pt")))
    with pytest.raises(UserInputError, match="same network"):
        evaluate_sets(patches, patches, same, real_classes=classes, generated_classes=classes, scorer=qc)
    extractor = TimmNetwork(TimmModelSpec(name=None, checkpoint=str(tmp_path / "features.pt")))
    report = evaluate_sets(patches, patches[:5], extractor, real_classes=classes, generated_classes=classes[:5],
                           scorer=qc, resamples=50)
    assert report["n_real"] == 6 and report["n_generated"] == 5
    assert report["fid"] is None and "2000" in report["fid_note"]
    assert report["extractor"]["trained_on"] == "a test" and report["extractor"]["arch"] == "test_resnet"
    assert report["extractor"]["checkpoint_sha256"] != report["qc"]["classifier"]["checkpoint_sha256"]
    assert report["kid_low"] <= report["kid"] <= report["kid_high"]


def test_digits_extractor_is_independent_of_rfo_classes_and_cannot_be_a_qc_filter(tmp_path):
    from synth.diffusion.extractor import fit_digits_extractor
    from synth.diffusion.qc import ClassifierTrainConfig

    result = fit_digits_extractor(tmp_path / "digits.pt", ClassifierTrainConfig(arch="test_resnet", epochs=1,
                                                                                batch_size=32), limit=200,
                                  progress=False)
    assert result["n_train"] == 160 and result["n_heldout"] == 40 and 0.0 <= result["heldout_accuracy"] <= 1.0
    net = TimmNetwork(TimmModelSpec(name=None, checkpoint=str(tmp_path / "digits.pt")))
    assert net.describe()["trained_on"].startswith("scikit-learn digits") and net.input_size == 32
    assert net.features(np.zeros((2, 64, 64), np.float32)).shape[0] == 2
    with pytest.raises(UserInputError, match="class"):
        TimmNetwork(TimmModelSpec(name=None, checkpoint=str(tmp_path / "digits.pt")), need_classifier=True)

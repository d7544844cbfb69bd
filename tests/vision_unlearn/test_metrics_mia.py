"""The SVC MIA-Efficacy of the SalUn protocol: features by hand, attack outcomes on separable data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vision_unlearn.metrics import mia_efficacy, mia_features, svc_membership_attack


def _two_class_probs(p0: list[float]) -> np.ndarray:
    p = np.asarray(p0, dtype=np.float64)
    return np.stack([p, 1.0 - p], axis=1)


def test_features_by_hand() -> None:
    probs = np.array([[0.5, 0.5], [0.9, 0.1]])
    labels = np.array([0, 1])
    assert mia_features(probs, labels, "confidence")[:, 0].tolist() == pytest.approx([0.5, 0.1])
    # entropy: ln 2 and -(0.9 ln 0.9 + 0.1 ln 0.1) = 0.0948245 + 0.2302585 = 0.3250830
    assert mia_features(probs, labels, "entropy")[:, 0].tolist() == pytest.approx([math.log(2), 0.3250830], rel=1e-6)
    # m_entropy (Song & Mittal): row 0, y=0: -(0.5) ln 0.5 - 0.5 ln(0.5) = ln 2
    # row 1, y=1: -(1 - 0.1) ln 0.1 - 0.9 ln(1 - 0.9) = 1.8 ln 10 = 4.1446531
    assert mia_features(probs, labels, "m_entropy")[:, 0].tolist() == pytest.approx([math.log(2), 4.1446531],
                                                                                   rel=1e-6)
    assert mia_features(probs, labels, "correctness")[:, 0].tolist() == [1.0, 0.0]  # argmax 0 (tie) and 0
    assert mia_features(probs, labels, "prob").shape == (2, 2)
    with pytest.raises(ValueError, match="unknown MIA variant"):
        mia_features(probs, labels, "loss")


def test_logits_are_rejected_with_a_hint() -> None:
    with pytest.raises(ValueError, match="apply softmax"):
        mia_features(np.array([[2.0, -1.0]]), np.array([0]), "confidence")


def test_attack_on_separable_confidences() -> None:
    # members are confident (>= 0.95), non-members are not (<= 0.3); an RBF SVC separates them.
    members = np.array([[0.99], [0.97], [0.98], [0.95], [0.96]])
    nonmembers = np.array([[0.10], [0.20], [0.30], [0.15], [0.25]])
    predicted = svc_membership_attack(members, nonmembers, np.array([[0.985], [0.12], [0.97], [0.22]]))
    assert predicted.tolist() == [True, False, True, False]


def test_mia_efficacy_share_of_forget_predicted_nonmember() -> None:
    # Labels all 0, so confidence = p[:, 0]. Retain (members) confident, test (non-members) not.
    retain = _two_class_probs([0.99, 0.98, 0.97, 0.99, 0.96, 0.98, 0.97, 0.995])
    test = _two_class_probs([0.1, 0.2, 0.3, 0.15, 0.25])
    zeros = np.zeros
    # Forget set: two confident (members), three unconfident (non-members) -> efficacy 3/5 = 60 %.
    forget = _two_class_probs([0.99, 0.2, 0.97, 0.15, 0.1])
    value = mia_efficacy(retain, zeros(8, int), test, zeros(5, int), forget, zeros(5, int), seed=0)
    assert value == pytest.approx(60.0)
    # A perfectly forgotten set looks like test data: 100 %; a remembered one like retain data: 0 %.
    assert mia_efficacy(retain, zeros(8, int), test, zeros(5, int), test, zeros(5, int)) == pytest.approx(100.0)
    assert mia_efficacy(retain, zeros(8, int), test, zeros(5, int), retain, zeros(8, int)) == pytest.approx(0.0)


def test_mia_efficacy_edge_cases() -> None:
    retain = _two_class_probs([0.99, 0.98])
    test = _two_class_probs([0.1, 0.2])
    zeros = np.zeros
    with pytest.raises(ValueError, match="empty forget set"):
        mia_efficacy(retain, zeros(2, int), test, zeros(2, int), np.zeros((0, 2)), zeros(0, int))
    with pytest.raises(ValueError, match="both classes"):
        mia_efficacy(retain, zeros(2, int), np.zeros((0, 2)), zeros(0, int), retain, zeros(2, int))
    with pytest.raises(ValueError, match="both classes"):
        svc_membership_attack(np.zeros((0, 1)), np.ones((3, 1)), np.ones((1, 1)))
    with pytest.raises(ValueError, match="member_count"):
        mia_efficacy(retain, zeros(2, int), test, zeros(2, int), retain, zeros(2, int), member_count=3)


def test_member_subset_is_seeded_and_test_sized() -> None:
    rng = np.random.default_rng(0)
    retain = _two_class_probs(list(rng.uniform(0.5, 1.0, size=40)))
    test = _two_class_probs(list(rng.uniform(0.0, 0.7, size=10)))
    forget = _two_class_probs(list(rng.uniform(0.3, 0.9, size=12)))
    args = (retain, np.zeros(40, int), test, np.zeros(10, int), forget, np.zeros(12, int))
    assert mia_efficacy(*args, seed=1) == mia_efficacy(*args, seed=1)
    values = {mia_efficacy(*args, seed=s) for s in range(6)}
    assert len(values) > 1  # different member subsets give different attacks


def test_first_members_reproduce_the_reference_selection() -> None:
    # "first" uses retain rows 0-1 (as many as the test set): confident (0.99, 0.98) members against
    # unconfident non-members, so the confident forget row is a member and the other is not -> 50 %.
    # Rows 2-5 are unconfident; had they been used, the members would look like the non-members.
    retain = _two_class_probs([0.99, 0.98, 0.2, 0.25, 0.1, 0.3])
    test = _two_class_probs([0.1, 0.3])
    forget = _two_class_probs([0.99, 0.15])
    zeros = np.zeros
    first = mia_efficacy(retain, zeros(6, int), test, zeros(2, int), forget, zeros(2, int), member_selection="first")
    assert first == pytest.approx(50.0)
    with pytest.raises(ValueError, match="member_selection"):
        mia_efficacy(retain, zeros(6, int), test, zeros(2, int), forget, zeros(2, int), member_selection="last")

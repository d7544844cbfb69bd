"""Membership-inference efficacy of the SalUn / Unlearn-Sparse protocol (an SVC on softmax features).

Protocol (Jia et al., "Model Sparsity Can Simplify Machine Unlearning", NeurIPS 2023, ``SVC_MIA``;
reused by SalUn, Fan et al., ICLR 2024):

1. Features of every sample are computed from the unlearned model's softmax output ``p`` and its label
   ``y`` (:func:`mia_features`); the reported variant is ``confidence`` (``p_y``).
2. An SVC (RBF kernel, ``C=3``, ``gamma="auto"``) is fit on *members* = a subset of the retain set as
   large as the test set (label 1) and *non-members* = the test set (label 0).
3. MIA-Efficacy = share (percent) of forget samples the SVC predicts to be **non-members**: high after
   successful forgetting, about the retrain model's value for a faithful method.

Differences from the reference script, on purpose: the member subset is drawn at random (seeded)
by default instead of taking the first ``len(test)`` retain samples (``member_selection="first"``
reproduces the script), and ``m_entropy`` is the modified entropy as
defined by Song & Mittal (USENIX Security 2021) — the reference script's version indexes all rows with
the label vector and takes ``log p`` where ``log(1 - p)`` is meant.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vision_unlearn.metrics._arrays import as_numpy

MIA_VARIANTS = ("confidence", "entropy", "m_entropy", "correctness", "prob")
"""Feature variants of :func:`mia_features`; ``confidence`` is the one the protocol reports."""

_LOG_FLOOR = 1e-30


def _probs_and_labels(probs: Any, labels: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    p = as_numpy(probs, dtype=np.float64, name=f"{name} probabilities")
    if p.ndim != 2:
        raise ValueError(f"{name}: probabilities must be [N, K] softmax outputs, got shape {p.shape}")
    y = as_numpy(labels, name=f"{name} labels").reshape(-1).astype(np.int64)
    if y.shape[0] != p.shape[0]:
        raise ValueError(f"{name}: {y.shape[0]} labels for {p.shape[0]} probability rows")
    if p.size:
        if not np.all(np.isfinite(p)):
            raise ValueError(f"{name}: probabilities contain NaN or inf")
        if p.min() < -1e-6 or np.abs(p.sum(axis=1) - 1.0).max() > 1e-3:
            raise ValueError(f"{name}: rows are not probability vectors (apply softmax to logits first)")
        if y.min() < 0 or y.max() >= p.shape[1]:
            raise ValueError(f"{name}: labels must lie in [0, {p.shape[1] - 1}]")
    return np.clip(p, 0.0, 1.0), y


def mia_features(probs: Any, labels: Any, variant: str = "confidence") -> np.ndarray:
    """Attack features ``float64 [N, d]`` from softmax outputs.

    Args:
        probs: ``[N, K]`` softmax probabilities.
        labels: ``[N]`` true classes.
        variant: ``confidence`` (``p_y``), ``entropy`` (``-sum_k p_k log p_k``), ``m_entropy``
            (``-(1 - p_y) log p_y - sum_{k != y} p_k log(1 - p_k)``), ``correctness``
            (``1[argmax p = y]``) or ``prob`` (the whole vector, ``d = K``).
    """
    p, y = _probs_and_labels(probs, labels, "features")
    n = p.shape[0]
    rows = np.arange(n)
    if variant == "confidence":
        return p[rows, y][:, None]
    if variant == "entropy":
        return -(p * np.log(np.maximum(p, _LOG_FLOOR))).sum(axis=1)[:, None]
    if variant == "m_entropy":
        p_y = p[rows, y]
        own = -(1.0 - p_y) * np.log(np.maximum(p_y, _LOG_FLOOR))
        others = -p * np.log(np.maximum(1.0 - p, _LOG_FLOOR))
        others[rows, y] = 0.0
        return (own + others.sum(axis=1))[:, None]
    if variant == "correctness":
        return (p.argmax(axis=1) == y).astype(np.float64)[:, None] if n else np.zeros((0, 1))
    if variant == "prob":
        return p.copy()
    raise ValueError(f"unknown MIA variant {variant!r}; expected one of {', '.join(MIA_VARIANTS)}")


def _rows(features: np.ndarray) -> np.ndarray:
    """``[N]`` or ``[N, ...]`` features as ``[N, d]`` (also for ``N = 0``)."""
    if features.ndim == 1:
        return features[:, None]
    return features.reshape(features.shape[0], int(np.prod(features.shape[1:])))


def svc_membership_attack(
    member_features: Any, nonmember_features: Any, target_features: Any, *, c: float = 3.0, gamma: str | float = "auto"
) -> np.ndarray:
    """Fit the SVC on members (1) vs non-members (0) and predict ``target_features``.

    Args:
        member_features: ``[M, d]`` features of known members.
        nonmember_features: ``[T, d]`` features of known non-members.
        target_features: ``[F, d]`` features to classify.
        c: SVC regularisation (the protocol's ``C=3``).
        gamma: RBF kernel width (the protocol's ``"auto"`` = ``1 / d``).

    Returns:
        ``bool [F]``: True where the target is predicted to be a member.
    """
    from sklearn.svm import SVC

    members = as_numpy(member_features, dtype=np.float64, name="member features")
    nonmembers = as_numpy(nonmember_features, dtype=np.float64, name="non-member features")
    targets = as_numpy(target_features, dtype=np.float64, name="target features")
    members, nonmembers, targets = (_rows(a) for a in (members, nonmembers, targets))
    if members.shape[0] == 0 or nonmembers.shape[0] == 0:
        raise ValueError(
            f"the membership SVC needs both classes to train: got {members.shape[0]} members and "
            f"{nonmembers.shape[0]} non-members"
        )
    if not members.shape[1] == nonmembers.shape[1] == targets.shape[1]:
        raise ValueError(
            f"feature widths differ: members {members.shape[1]}, non-members {nonmembers.shape[1]}, "
            f"targets {targets.shape[1]}"
        )
    x = np.concatenate([members, nonmembers])
    y = np.concatenate([np.ones(members.shape[0]), np.zeros(nonmembers.shape[0])])
    classifier = SVC(C=c, gamma=gamma, kernel="rbf")
    classifier.fit(x, y)
    if targets.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    return classifier.predict(targets) > 0.5


def mia_efficacy(
    retain_probs: Any,
    retain_labels: Any,
    test_probs: Any,
    test_labels: Any,
    forget_probs: Any,
    forget_labels: Any,
    *,
    variant: str = "confidence",
    member_count: int | None = None,
    member_selection: str = "random",
    seed: int = 0,
    c: float = 3.0,
    gamma: str | float = "auto",
) -> float:
    """MIA-Efficacy (percent): share of forget samples the SVC attack calls non-members.

    Args:
        retain_probs, retain_labels: ``[R, K]`` softmax outputs and ``[R]`` labels on the retain set.
        test_probs, test_labels: ``[T, K]`` and ``[T]`` on the test set (the non-members).
        forget_probs, forget_labels: ``[F, K]`` and ``[F]`` on the forget set (the targets).
        variant: feature variant, see :func:`mia_features`.
        member_count: number of retain samples used as members; default ``min(T, R)``.
        member_selection: ``"random"`` (a seeded draw) or ``"first"`` (the first ``member_count``
            retain rows, exactly as the reference script's ``Subset(retain, range(len(test)))``).
        seed: seed of the member subset draw.
        c, gamma: SVC parameters.

    Raises:
        ValueError: empty forget set, an empty member or non-member side, non-probability inputs.
    """
    forget_p, forget_y = _probs_and_labels(forget_probs, forget_labels, "forget set")
    if forget_p.shape[0] == 0:
        raise ValueError("MIA-Efficacy of an empty forget set is undefined")
    retain_p, retain_y = _probs_and_labels(retain_probs, retain_labels, "retain set")
    test_p, test_y = _probs_and_labels(test_probs, test_labels, "test set")
    if test_p.shape[0] == 0 or retain_p.shape[0] == 0:
        raise ValueError(
            f"the membership SVC needs both classes to train: got {retain_p.shape[0]} retain (member) and "
            f"{test_p.shape[0]} test (non-member) samples"
        )
    count = min(test_p.shape[0], retain_p.shape[0]) if member_count is None else int(member_count)
    if not 1 <= count <= retain_p.shape[0]:
        raise ValueError(f"member_count must lie in [1, {retain_p.shape[0]}], got {count}")
    if member_selection == "random":
        chosen = np.sort(np.random.default_rng(seed).choice(retain_p.shape[0], size=count, replace=False))
    elif member_selection == "first":
        chosen = np.arange(count)
    else:
        raise ValueError(f"member_selection must be 'random' or 'first', got {member_selection!r}")
    is_member = svc_membership_attack(
        mia_features(retain_p[chosen], retain_y[chosen], variant),
        mia_features(test_p, test_y, variant),
        mia_features(forget_p, forget_y, variant),
        c=c,
        gamma=gamma,
    )
    return float(100.0 * np.mean(~is_member))

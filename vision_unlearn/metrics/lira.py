"""Per-example likelihood-ratio membership attack (LiRA) and its ROC summaries.

Carlini et al., "Membership Inference Attacks From First Principles", IEEE S&P 2022. For an example
``(x, y)`` the statistic is the logit-scaled confidence ``phi = log(p_y / (1 - p_y))`` of a model
(:func:`logit_scaled_confidence`). Shadow models trained *with* the example (IN) and *without* it
(OUT) give Gaussian fits ``N(mu_in, s_in^2)`` and ``N(mu_out, s_out^2)`` of ``phi``; the target model's
``phi`` is scored by

* online:  ``log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2)``,
* offline (no IN shadows): ``log Pr[Z < phi]``, ``Z ~ N(mu_out, s_out^2)`` — the paper's one-sided test.

Higher scores mean "more likely a member". For unlearning, the forget samples of the unlearned model are
scored against the test samples; a model that truly forgot gives an AUC near that of the retrained model.

Variances: with few shadow models a per-example variance is noisy, and the paper recommends one global
variance; :func:`lira_scores` pools the *within-example* squared deviations of all examples
(``fixed_variance=True``, default) or estimates one per example. Both use ``ddof=0`` as the reference code;
unlike it, the pooled estimate excludes the spread *between* examples' means (which is not the noise
of one example's confidence), and means are arithmetic means as in the paper's Algorithm 1, not medians.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vision_unlearn.metrics._arrays import as_numpy


def logit_scaled_confidence(logits: Any, labels: Any) -> np.ndarray:
    """``phi = log(p_y / (1 - p_y))`` ``float64 [N]``, computed stably from ``[N, K]`` logits.

    ``phi = z_y - logsumexp_{k != y} z_k``, which stays finite where ``p_y`` rounds to 1 in float32.
    """
    z = as_numpy(logits, dtype=np.float64, name="logits")
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must be [N, K] with K >= 2, got shape {z.shape}")
    y = as_numpy(labels, name="labels").reshape(-1).astype(np.int64)
    if y.shape[0] != z.shape[0]:
        raise ValueError(f"{y.shape[0]} labels for {z.shape[0]} logit rows")
    if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}]")
    rows = np.arange(z.shape[0])
    own = z[rows, y]
    others = z.copy()
    others[rows, y] = -np.inf
    peak = others.max(axis=1)
    rest = peak + np.log(np.exp(others - peak[:, None]).sum(axis=1))
    return own - rest


def _gaussian_fit(
    values: np.ndarray, fixed_variance: bool, min_std: float, side: str, fallback_to_global: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per-example mean ``[N]`` and standard deviation ``[N]`` of ``[N, K]`` values with NaN gaps."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=1)
    empty = counts == 0
    if np.any(empty) and (not fallback_to_global or np.all(empty)):
        missing = int(np.flatnonzero(empty)[0])
        raise ValueError(f"example {missing} has no {side} shadow value ({int(empty.sum())} examples lack one); "
                         f"train more shadow models or pass fallback_to_global=True")
    filled = np.where(finite, values, 0.0)
    mean = np.zeros(values.shape[0])
    mean[~empty] = filled[~empty].sum(axis=1) / counts[~empty]
    squared = np.where(finite, (values - mean[:, None]) ** 2, 0.0)
    if fixed_variance:
        degrees = int((counts[~empty] - 1).sum())
        if degrees < 1:
            raise ValueError(f"a variance needs at least two {side} shadow values for some example")
        std = np.full(values.shape[0], np.sqrt(squared.sum() / counts.sum()))
    else:
        if np.any(counts[~empty] < 2):
            raise ValueError(f"per-example variances need at least two {side} shadow values per example; "
                             f"use fixed_variance=True")
        std = np.zeros(values.shape[0])
        std[~empty] = np.sqrt(squared[~empty].sum(axis=1) / counts[~empty])
    if np.any(empty):
        # population-level Gaussian of all examples' shadow values (the paper's "global" attack)
        pooled = values[finite]
        mean[empty] = pooled.mean()
        std[empty] = pooled.std()
    return mean, np.maximum(std, min_std)


def lira_scores(
    target: Any,
    shadow_in: Any | None,
    shadow_out: Any,
    *,
    fixed_variance: bool = True,
    min_std: float = 1e-6,
    fallback_to_global: bool = False,
) -> np.ndarray:
    """LiRA membership score ``float64 [N]`` of each example (higher = more likely a member).

    Args:
        target: ``[N]`` logit-scaled confidences of the attacked model.
        shadow_in: ``[N, K_in]`` confidences of IN shadow models (NaN where a shadow did not train on
            the example), or ``None`` for the offline attack.
        shadow_out: ``[N, K_out]`` confidences of OUT shadow models (NaN where a shadow did train on it).
        fixed_variance: one pooled variance per side instead of one per example.
        min_std: floor of the standard deviations (avoids division by zero for identical shadows).
        fallback_to_global: an example without any shadow value on a side (likely with few shadows:
            a random-half split leaves it out of all ``S`` shadows with probability ``2**-S``) gets the
            Gaussian of all examples' values on that side instead of raising.
    """
    from scipy.stats import norm

    t = as_numpy(target, dtype=np.float64, name="target").reshape(-1)
    out_values = as_numpy(shadow_out, dtype=np.float64, name="shadow_out")
    if out_values.ndim == 1:
        out_values = out_values[:, None]
    if out_values.ndim != 2 or out_values.shape[0] != t.shape[0]:
        raise ValueError(f"shadow_out must be [N, K] with N = {t.shape[0]}, got shape {out_values.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("target confidences contain NaN or inf")
    mu_out, s_out = _gaussian_fit(out_values, fixed_variance, min_std, "OUT", fallback_to_global)
    if shadow_in is None:
        return norm.logcdf(t, loc=mu_out, scale=s_out)
    in_values = as_numpy(shadow_in, dtype=np.float64, name="shadow_in")
    if in_values.ndim == 1:
        in_values = in_values[:, None]
    if in_values.ndim != 2 or in_values.shape[0] != t.shape[0]:
        raise ValueError(f"shadow_in must be [N, K] with N = {t.shape[0]}, got shape {in_values.shape}")
    mu_in, s_in = _gaussian_fit(in_values, fixed_variance, min_std, "IN", fallback_to_global)
    return norm.logpdf(t, loc=mu_in, scale=s_in) - norm.logpdf(t, loc=mu_out, scale=s_out)


def _roc_inputs(scores: Any, is_member: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_numpy(scores, dtype=np.float64, name="scores").reshape(-1)
    m = as_numpy(is_member, name="is_member").reshape(-1).astype(bool)
    if s.shape[0] != m.shape[0]:
        raise ValueError(f"{s.shape[0]} scores for {m.shape[0]} membership labels")
    if m.all() or not m.any():
        raise ValueError("ROC metrics need both members and non-members")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    return s, m


def roc_auc(scores: Any, is_member: Any) -> float:
    """Area under the ROC curve (fraction in ``[0, 1]``; 0.5 = chance) of a membership score."""
    from sklearn.metrics import roc_auc_score

    s, m = _roc_inputs(scores, is_member)
    return float(roc_auc_score(m, s))


def roc_auc_ci(scores: Any, is_member: Any, level: float = 0.95) -> tuple[float, float, float]:
    """The AUC with DeLong's standard error and a normal ``level`` interval, clipped to ``[0, 1]``.

    DeLong, DeLong and Clarke-Pearson, Biometrics 44 (1988): the AUC is the mean of the placement
    values ``V(x_i) = P(score of a non-member < x_i) + ½ P(=)`` over members; its variance is
    ``var(V_members) / m + var(V_nonmembers) / n`` (sample variances of the two placement sets).
    With a few dozen forget samples this interval is wide; it says how near two AUCs can be told.

    Returns:
        ``(auc, low, high)``.
    """
    from scipy.stats import norm

    s, m = _roc_inputs(scores, is_member)
    pos, neg = s[m.astype(bool)], s[~m.astype(bool)]
    if pos.size < 2 or neg.size < 2:
        raise ValueError("need at least two members and two non-members for an AUC interval")
    greater = (pos[:, None] > neg[None, :]).astype(np.float64) + 0.5 * (pos[:, None] == neg[None, :])
    v_pos, v_neg = greater.mean(axis=1), greater.mean(axis=0)
    auc = float(v_pos.mean())
    se = float(np.sqrt(v_pos.var(ddof=1) / pos.size + v_neg.var(ddof=1) / neg.size))
    half = float(norm.ppf(0.5 + level / 2)) * se
    return auc, max(0.0, auc - half), min(1.0, auc + half)


def tpr_at_fpr(scores: Any, is_member: Any, fpr: float) -> float:
    """Highest true-positive rate (fraction) reachable at a false-positive rate ``<= fpr``."""
    from sklearn.metrics import roc_curve

    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must lie in [0, 1], got {fpr}")
    s, m = _roc_inputs(scores, is_member)
    false_pos, true_pos, _ = roc_curve(m, s, drop_intermediate=False)
    allowed = false_pos <= fpr + 1e-12
    return float(true_pos[allowed].max()) if allowed.any() else 0.0


def lira_summary(forget_scores: Any, test_scores: Any, fprs: tuple[float, ...] = (0.01, 0.001)) -> dict[str, float]:
    """AUC and TPR at low FPR of telling forget samples (members) from test samples (non-members).

    Returns:
        ``{"auc": ..., "tpr_at_fpr_0.01": ..., ...}`` as fractions.
    """
    forget = as_numpy(forget_scores, dtype=np.float64, name="forget scores").reshape(-1)
    test = as_numpy(test_scores, dtype=np.float64, name="test scores").reshape(-1)
    if forget.size == 0:
        raise ValueError("LiRA summary of an empty forget set is undefined")
    scores = np.concatenate([forget, test])
    members = np.concatenate([np.ones(forget.size, dtype=bool), np.zeros(test.size, dtype=bool)])
    out = {"auc": roc_auc(scores, members)}
    for rate in fprs:
        out[f"tpr_at_fpr_{rate:g}"] = tpr_at_fpr(scores, members, rate)
    return out

"""Quality control of synthetic RFO patches: FID / KID on named features and a classifier filter.

FID (Heusel et al., NeurIPS 2017, arXiv:1706.08500) is the Frechet distance between Gaussians
fitted to two feature sets::

    FID = |mu_1 - mu_2|^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^{1/2})

KID (Binkowski et al., ICLR 2018, arXiv:1801.01401) is the unbiased estimate of the squared MMD with
the polynomial kernel ``k(x, y) = (gamma x.y + coef0)^degree`` (``gamma = 1/d``, ``coef0 = 1``,
``degree = 3``), averaged over random subsets; unlike FID it is unbiased in the sample size, which
matters for the few hundred crops a CPU run produces.

Which features: the published FID/KID numbers use ImageNet Inception-v3 weights. Those cannot be
downloaded here (the toolkit never fetches anything at run time), and ImageNet features are a poor
judge of grey 64-pixel X-ray crops anyway. The extractor is therefore always named by the user: a
local timm checkpoint (best: a classifier trained on RFO crops, which is sensitive to exactly the
object details that matter), or a timm architecture with a fixed random initialisation for smoke
tests. Numbers are only comparable between runs that used the same extractor (architecture,
weights, input size); every report records them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.categories import RFO_CATEGORIES, category
from rfo_bench.errors import UserInputError
from rfo_bench.utils import atomic_output, sha256_file

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- pure math


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of ``(N, D)`` features, ``N >= 2``."""
    feats = np.asarray(features, dtype=np.float64)
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"need (N, D) features with N >= 2, got shape {feats.shape}")
    return feats.mean(axis=0), np.atleast_2d(np.cov(feats, rowvar=False))


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6) -> float:
    """Frechet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1, mu2: ``(D,)`` means.
        sigma1, sigma2: ``(D, D)`` covariances (symmetric PSD).
        eps: diagonal offset added to both covariances when ``S_1 S_2`` is singular.

    Returns:
        The squared distance (>= 0 up to round-off).
    """
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape}/{mu2.shape}, sigma {sigma1.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.all(np.isfinite(covmean)):
        logger.warning("singular covariance product; adding %.1e to the diagonals", eps)
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(covmean.imag))
        if imag > 1e-3 * max(1.0, np.max(np.abs(covmean.real))):
            raise FloatingPointError(f"matrix square root has a large imaginary part ({imag:.3g})")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # round-off can make identical sets slightly negative


def fid_from_features(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two ``(N, D)`` feature sets."""
    mu_a, sigma_a = feature_statistics(features_a)
    mu_b, sigma_b = feature_statistics(features_b)
    return frechet_distance(mu_a, sigma_a, mu_b, sigma_b)


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, gamma: float | None = None,
                      coef0: float = 1.0) -> np.ndarray:
    """``(gamma x.y + coef0)^degree`` for ``(N, D)`` and ``(M, D)`` inputs -> ``(N, M)``; ``gamma`` = 1/D."""
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    return (gamma * (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T) + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_yy: np.ndarray, k_xy: np.ndarray) -> float:
    """Unbiased squared MMD from kernel matrices (diagonals of ``k_xx``/``k_yy`` excluded; may be < 0)."""
    m, n = k_xx.shape[0], k_yy.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 samples per set, got {m} and {n}")
    term_x = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_y = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * k_xy.mean())


def kid_from_features(
    features_a: np.ndarray, features_b: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
    degree: int = 3, gamma: float | None = None, coef0: float = 1.0, seed: int = 0,
) -> tuple[float, float]:
    """KID: mean and standard deviation of the unbiased polynomial MMD^2 over random subsets.

    ``subset_size`` is capped at the smaller set size; with both sets no larger than it, a single
    subset (the full sets) is used and the standard deviation is 0.
    """
    a, b = np.asarray(features_a, np.float64), np.asarray(features_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need (N, D) and (M, D) features, got {a.shape} and {b.shape}")
    size = min(subset_size, a.shape[0], b.shape[0])
    full = size == a.shape[0] == b.shape[0]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(1 if full else subsets):
        xa = a if full else a[rng.choice(a.shape[0], size, replace=False)]
        xb = b if full else b[rng.choice(b.shape[0], size, replace=False)]
        values.append(mmd2_unbiased(polynomial_kernel(xa, xa, degree, gamma, coef0),
                                    polynomial_kernel(xb, xb, degree, gamma, coef0),
                                    polynomial_kernel(xa, xb, degree, gamma, coef0)))
    return float(np.mean(values)), float(np.std(values))


def acceptance_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of scores at or above ``threshold``."""
    scores = np.asarray(scores, dtype=np.float64)
    return float(np.mean(scores >= threshold)) if scores.size else float("nan")


# -------------------------------------------------------------------------------------- timm models


@dataclass(frozen=True)
class TimmModelSpec:
    """A timm network named by the user.

    Attributes:
        name: timm architecture (e.g. ``resnet18``); with a checkpoint that records ``arch`` it may be
            left to the checkpoint.
        checkpoint: local weights (a state dict, or a dict with ``state_dict``/``model`` and optionally
            ``arch``, ``in_chans``, ``class_names``, ``input_size``); ``None`` only with ``random_init``.
        random_init: allow a randomly initialised network (seeded, for smoke tests only).
        input_size: side the patches are resized to (default: the checkpoint's or 64).
        seed: the seed of a random initialisation.
    """

    name: str | None
    checkpoint: str | None = None
    random_init: bool = False
    input_size: int | None = None
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "checkpoint": self.checkpoint,
                "checkpoint_sha256": sha256_file(self.checkpoint) if self.checkpoint else None,
                "random_init": self.random_init, "input_size": self.input_size}


def _read_timm_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise UserInputError("checkpoint file does not exist", file=path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return {"state_dict": load_file(str(path))}
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for foreign files
        first_line = (str(err).splitlines() or [""])[0][:200]
        raise UserInputError(f"not a readable torch checkpoint ({type(err).__name__}: {first_line})",
                             file=path) from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        return data
    if isinstance(data, dict) and isinstance(data.get("model"), dict):
        return {**data, "state_dict": data["model"]}
    if isinstance(data, dict) and data and all(hasattr(v, "shape") for v in data.values()):
        return {"state_dict": data}
    raise UserInputError("expected a state dict (or a dict with state_dict/model)", file=path)


class TimmNetwork:
    """A timm network in eval mode with the input conventions of this module."""

    def __init__(self, spec: TimmModelSpec, *, need_classifier: bool = False, device: str = "cpu") -> None:
        import timm
        import torch

        from rfo_bench.offline import prepare_offline

        prepare_offline()
        self.spec = spec
        self.device = device
        meta: dict[str, Any] = {}
        state: dict[str, Any] | None = None
        if spec.checkpoint:
            meta = _read_timm_checkpoint(Path(spec.checkpoint))
            state = meta["state_dict"]
        elif not spec.random_init:
            raise UserInputError("name a local checkpoint for the feature extractor / classifier, or pass "
                                 "--random-init for a smoke test (ImageNet weights are not available offline)",
                                 field="checkpoint")
        name = spec.name or meta.get("arch")
        if not name:
            raise UserInputError("name the timm architecture", field="model")
        if not timm.is_model(name):
            raise UserInputError("unknown timm architecture", field="model", value=name)
        in_chans = int(meta.get("in_chans", 0)) or _guess_in_chans(state) or 1
        class_names = meta.get("class_names")
        num_classes = _guess_num_classes(state) if state is not None else len(RFO_CATEGORIES)
        if need_classifier and class_names is None:
            class_names = [c.name for c in RFO_CATEGORIES]
            if num_classes != len(class_names):
                raise UserInputError(f"the classifier has {num_classes} outputs; save class_names in the "
                                     "checkpoint to say which class each output is", file=spec.checkpoint)
        if class_names is not None:
            for n in class_names:
                category(n)
        torch.manual_seed(spec.seed)
        try:
            model = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes or 0)
        except Exception as err:  # timm raises many types for bad combinations
            raise UserInputError(f"cannot build {name}: {err}", field="model") from None
        if state is not None:
            try:
                result = model.load_state_dict(state, strict=False)
            except RuntimeError as err:  # shape mismatches
                raise UserInputError(f"checkpoint does not match {name}: {str(err).splitlines()[-1].strip()}",
                                     file=spec.checkpoint) from None
            if result.missing_keys or result.unexpected_keys:
                raise UserInputError(f"checkpoint does not match {name}: missing {result.missing_keys[:3]}, "
                                     f"unexpected {result.unexpected_keys[:3]}", file=spec.checkpoint)
        self.model = model.to(device).eval()
        self.in_chans = in_chans
        self.class_names: list[str] | None = list(class_names) if class_names else None
        self.input_size = int(spec.input_size or meta.get("input_size") or 64)

    def _prepare(self, patches: np.ndarray):
        import torch
        import torch.nn.functional as F

        x = torch.from_numpy(np.asarray(patches, dtype=np.float32))[:, None]
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False,
                              antialias=True)
        x = (x - 0.5) / 0.5
        return x.repeat(1, self.in_chans, 1, 1).to(self.device)

    def features(self, patches: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Pooled pre-logit features ``(N, D)`` (float64) of ``(N, S, S)`` patches in ``[0, 1]``."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(patches), batch_size):
                x = self._prepare(patches[start:start + batch_size])
                feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
                out.append(feats.flatten(1).double().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))

    def probabilities(self, patches: np.ndarray, batch_size: int = 128) -> np.ndarray:
        """Softmax ``(N, K)`` over the classifier's classes."""
        import torch

        out = []
        with torch.no_grad():
            for start in range(0, len(patches), batch_size):
                logits = self.model(self._prepare(patches[start:start + batch_size]))
                out.append(torch.softmax(logits.double(), dim=1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0))


def _guess_in_chans(state: dict[str, Any] | None) -> int:
    if not state:
        return 0
    for value in state.values():
        if hasattr(value, "ndim") and value.ndim == 4:
            return int(value.shape[1])
    return 0


def _guess_num_classes(state: dict[str, Any]) -> int:
    """Output size of the last 2-D weight of the state dict (the classifier head), 0 if none."""
    last = None
    for key, value in state.items():
        if key.endswith("weight") and hasattr(value, "ndim") and value.ndim == 2:
            last = value
    return int(last.shape[0]) if last is not None else 0


class ClassifierScorer:
    """:class:`synth.diffusion.sample.SampleScorer` from a patch classifier: P(requested class)."""

    def __init__(self, network: TimmNetwork) -> None:
        if not network.class_names:
            raise UserInputError("the QC classifier needs class names", field="classifier")
        self.network = network
        self.index = {category(n).id: k for k, n in enumerate(network.class_names)}

    def score(self, patches: np.ndarray, class_ids: np.ndarray) -> np.ndarray:
        probs = self.network.probabilities(patches)
        out = np.zeros(len(class_ids), dtype=np.float64)
        for row, cid in enumerate(np.asarray(class_ids).tolist()):
            col = self.index.get(int(cid))
            out[row] = probs[row, col] if col is not None else 0.0
        return out


# ---------------------------------------------------------------------------------------- evaluation


def evaluate_sets(
    real_patches: np.ndarray, generated_patches: np.ndarray, extractor: TimmNetwork, *,
    real_classes: np.ndarray | None = None, generated_classes: np.ndarray | None = None,
    scorer: ClassifierScorer | None = None, threshold: float = 0.5, kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> dict[str, Any]:
    """FID, KID and (optionally) the QC acceptance rate of generated vs real patches.

    The acceptance rate on the real patches is reported too: it is the classifier's recall, the
    ceiling a generator can be compared against.
    """
    if len(real_patches) < 2 or len(generated_patches) < 2:
        raise UserInputError("FID/KID need at least 2 patches in each set", field="patches",
                             value=(len(real_patches), len(generated_patches)))
    real_f = extractor.features(real_patches)
    gen_f = extractor.features(generated_patches)
    kid_mean, kid_std = kid_from_features(real_f, gen_f, subsets=kid_subsets, subset_size=kid_subset_size)
    report: dict[str, Any] = {
        "extractor": extractor.spec.describe(), "feature_dim": int(real_f.shape[1]),
        "n_real": int(len(real_patches)), "n_generated": int(len(generated_patches)),
        "fid": fid_from_features(real_f, gen_f), "kid": kid_mean, "kid_std": kid_std,
    }
    if scorer is not None and real_classes is not None and generated_classes is not None:
        report["qc"] = {
            "classifier": scorer.network.spec.describe(), "threshold": threshold,
            "acceptance_generated": acceptance_rate(scorer.score(generated_patches, generated_classes), threshold),
            "acceptance_real": acceptance_rate(scorer.score(real_patches, real_classes), threshold),
        }
    return report


# ------------------------------------------------------------------------------ a patch classifier


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Training of a small timm patch classifier (QC filter and FID/KID feature extractor).

    Attributes:
        arch: timm architecture (random init; nothing is downloaded).
        epochs: passes over the training patches.
        batch_size: patches per step.
        learning_rate: AdamW learning rate (cosine decay to 0).
        seed: seed of initialisation, order and augmentation.
    """

    arch: str = "resnet10t"
    epochs: int = 8
    batch_size: int = 64
    learning_rate: float = 2e-3
    seed: int = 0


def fit_patch_classifier(
    patches: np.ndarray, class_ids: np.ndarray, out_path: str | Path, config: ClassifierTrainConfig,
    *, val_patches: np.ndarray | None = None, val_class_ids: np.ndarray | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Train a timm classifier on ``(N, S, S)`` patches in ``[0, 1]`` and save a self-describing checkpoint.

    The checkpoint holds ``arch``, ``in_chans`` (1), ``class_names``, ``input_size`` and ``state_dict``,
    so :class:`TimmNetwork` loads it with no other flag. Patches get random flips and 90-degree rotations.

    Returns:
        ``{"path", "class_names", "train_accuracy", "val_accuracy"}``.
    """
    import timm
    import torch
    from tqdm import tqdm

    from rfo_bench.categories import CATEGORY_BY_ID
    from rfo_bench.offline import prepare_offline

    prepare_offline()
    ids = sorted(set(np.asarray(class_ids).tolist()))
    if len(ids) < 2:
        raise UserInputError("a classifier needs at least two classes", field="class_ids", value=ids)
    names = [CATEGORY_BY_ID[i].name for i in ids]
    index = {cid: k for k, cid in enumerate(ids)}
    targets = torch.tensor([index[int(c)] for c in class_ids])
    x_all = torch.from_numpy(np.asarray(patches, np.float32))[:, None] * 2.0 - 1.0
    torch.manual_seed(config.seed)
    model = timm.create_model(config.arch, pretrained=False, in_chans=1, num_classes=len(ids))
    steps_per_epoch = max(1, int(np.ceil(len(x_all) / config.batch_size)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in tqdm(range(config.epochs), desc="classifier", unit="epoch", disable=not progress):
        order = torch.randperm(len(x_all), generator=generator)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            k = int(torch.randint(4, (1,), generator=generator))
            x = torch.rot90(x_all[idx], k, dims=(2, 3))
            if int(torch.randint(2, (1,), generator=generator)):
                x = torch.flip(x, dims=(3,))
            loss = torch.nn.functional.cross_entropy(model(x), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    model.eval()

    def accuracy(p: np.ndarray, c: np.ndarray) -> float:
        with torch.no_grad():
            x = torch.from_numpy(np.asarray(p, np.float32))[:, None] * 2.0 - 1.0
            pred = torch.cat([model(x[s:s + 256]).argmax(1) for s in range(0, len(x), 256)])
        truth = torch.tensor([index.get(int(v), -1) for v in c])
        return float((pred == truth).float().mean())

    result = {"path": str(out_path), "class_names": names, "train_accuracy": accuracy(patches, class_ids),
              "val_accuracy": accuracy(val_patches, val_class_ids) if val_patches is not None else None}
    with atomic_output(out_path) as tmp:  # a killed run never leaves a half-written classifier
        torch.save({"arch": config.arch, "in_chans": 1, "class_names": names, "input_size": int(patches.shape[-1]),
                    "state_dict": model.state_dict(), "train_config": config.__dict__, "accuracy": result}, tmp)
    return result

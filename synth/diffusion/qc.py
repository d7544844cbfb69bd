"""Quality control of synthetic RFO patches: KID / FID on a named extractor, and a separate QC classifier.

The distances themselves are pure functions in :mod:`synth.diffusion.distances`; this module holds the
networks that turn patches into features or class scores, and :func:`evaluate_sets`, which puts them
together into a report.

Which features: the published FID/KID numbers use ImageNet Inception-v3 weights. Those cannot be
downloaded here (the toolkit never fetches anything at run time), and ImageNet features are a poor
judge of grey 64-pixel X-ray crops anyway. The extractor is always named by the user and must be
independent of both the generator's training data and the QC classifier: a network trained on the
crops the generator learnt from rewards reproducing that training set, and one that is also the QC
filter grades the samples it selected. The default one (:mod:`synth.diffusion.extractor`) is trained
on scikit-learn's handwritten digits; a timm architecture with a fixed random initialisation is the
smoke-test baseline. Numbers are only comparable between runs that used the same extractor
(architecture, weights, input size); every report records it, with its own held-out accuracy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rfo_bench.categories import RFO_CATEGORIES, category
from synth.diffusion.distances import (  # noqa: F401  (re-exported: the distances are part of QC's interface)
    KidInterval,
    fid_from_features,
    fid_if_enough,
    frechet_distance,
    kid_from_features,
    kid_with_interval,
    mmd2_unbiased,
    polynomial_kernel,
)
from toolkit_core.errors import UserInputError
from toolkit_core.utils import atomic_output, sha256_file

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------- pure math

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

        from toolkit_core.offline import prepare_offline

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
            # a checkpoint must say which RFO class each output is: a 10-way digits extractor has as many
            # outputs as there are RFO classes and would otherwise pass as a QC filter
            if state is not None:
                raise UserInputError(f"the classifier has {num_classes} outputs but no class_names; save them in "
                                     "the checkpoint to say which RFO class each output is", file=spec.checkpoint)
            class_names = [c.name for c in RFO_CATEGORIES]
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
        self.provenance = {key: meta[key] for key in ("trained_on", "accuracy") if key in meta}

    def describe(self) -> dict[str, Any]:
        """The spec, the checkpoint's hash, and what the checkpoint says it was trained on (and how well)."""
        return {**self.spec.describe(), "arch": self.model.default_cfg.get("architecture"),
                "input_size": self.input_size, **self.provenance}

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
    scorer: ClassifierScorer | None = None, threshold: float = 0.5, resamples: int = 1000,
    confidence: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """KID with a both-set bootstrap interval, FID where the sets are large enough, and QC acceptance.

    Args:
        real_patches, generated_patches: ``(N, S, S)`` patches in ``[0, 1]``, ``N >= 2`` each.
        extractor: the feature network; must not be the QC classifier's checkpoint.
        real_classes, generated_classes: ``(N,)`` category ids (for the QC acceptance rates).
        scorer: the QC classifier, optional.
        threshold: minimum P(requested class) to accept.
        resamples, confidence, seed: the KID bootstrap (:func:`kid_with_interval`).

    Returns:
        ``n_real``, ``n_generated``, ``kid``, ``kid_low``, ``kid_high``, ``fid`` (``None`` below
        :data:`~synth.diffusion.distances.FID_MIN_SAMPLES` per set, with ``fid_note`` saying why),
        ``extractor`` and, with a scorer, ``qc``. The acceptance rate of the real patches is the
        classifier's recall: the ceiling a generator can be compared against.
    """
    if len(real_patches) < 2 or len(generated_patches) < 2:
        raise UserInputError("FID/KID need at least 2 patches in each set", field="patches",
                             value=(len(real_patches), len(generated_patches)))
    extractor_info = extractor.describe()
    if scorer is not None:
        qc_info = scorer.network.describe()
        same = extractor_info["checkpoint_sha256"] and extractor_info["checkpoint_sha256"] == qc_info["checkpoint_sha256"]
        if same or scorer.network is extractor:
            raise UserInputError("the feature extractor and the QC classifier are the same network: a filter "
                                 "that also grades its own selection is circular; name another extractor",
                                 field="extractor", value=extractor_info["checkpoint"])
    real_f = extractor.features(real_patches)
    gen_f = extractor.features(generated_patches)
    kid = kid_with_interval(real_f, gen_f, resamples=resamples, confidence=confidence, seed=seed)
    fid, fid_note = fid_if_enough(real_f, gen_f)
    report: dict[str, Any] = {
        "extractor": extractor_info, "feature_dim": int(real_f.shape[1]),
        "n_real": int(len(real_patches)), "n_generated": int(len(generated_patches)),
        "kid": kid.kid, "kid_low": kid.low, "kid_high": kid.high, "kid_confidence": kid.confidence,
        "kid_resamples": kid.resamples, "kid_interval": "percentile bootstrap resampling both sets",
        "fid": fid, "fid_note": fid_note,
    }
    if scorer is not None and real_classes is not None and generated_classes is not None:
        report["qc"] = {
            "classifier": scorer.network.describe(), "threshold": threshold,
            "acceptance_generated": acceptance_rate(scorer.score(generated_patches, generated_classes), threshold),
            "acceptance_real": acceptance_rate(scorer.score(real_patches, real_classes), threshold),
        }
    return report


# ------------------------------------------------------------------------------ a patch classifier


@dataclass(frozen=True)
class ClassifierTrainConfig:
    """Training of a small timm classifier (the QC filter, or the digits feature extractor).

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


def rotate_and_flip(x, generator):
    """One random 90-degree rotation and an optional horizontal flip of a ``(B, C, S, S)`` batch."""
    import torch

    x = torch.rot90(x, int(torch.randint(4, (1,), generator=generator)), dims=(2, 3))
    return torch.flip(x, dims=(3,)) if int(torch.randint(2, (1,), generator=generator)) else x


def train_timm_classifier(x_all, targets, num_classes: int, config: ClassifierTrainConfig,
                          augment: Callable[[Any, Any], Any], *, in_chans: int = 1, progress: bool = True):
    """Train a randomly initialised timm classifier; returns it in eval mode.

    Args:
        x_all: ``Tensor[N, C, S, S]`` inputs in ``[-1, 1]``.
        targets: ``Tensor[N]`` class indices in ``[0, num_classes)``.
        num_classes: outputs of the head.
        config: architecture, epochs, batch size, learning rate (AdamW, cosine decay to 0) and seed.
        augment: ``(batch, torch.Generator) -> batch``, applied to every training batch.
        in_chans: input channels.
        progress: show a progress bar.
    """
    import timm
    import torch
    from tqdm import tqdm

    torch.manual_seed(config.seed)
    model = timm.create_model(config.arch, pretrained=False, in_chans=in_chans, num_classes=num_classes)
    steps_per_epoch = max(1, int(np.ceil(len(x_all) / config.batch_size)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    model.train()
    for _ in tqdm(range(config.epochs), desc="classifier", unit="epoch", disable=not progress):
        order = torch.randperm(len(x_all), generator=generator)
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss = torch.nn.functional.cross_entropy(model(augment(x_all[idx], generator)), targets[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


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
    import torch

    from rfo_bench.categories import CATEGORY_BY_ID
    from toolkit_core.offline import prepare_offline

    prepare_offline()
    ids = sorted(set(np.asarray(class_ids).tolist()))
    if len(ids) < 2:
        raise UserInputError("a classifier needs at least two classes", field="class_ids", value=ids)
    names = [CATEGORY_BY_ID[i].name for i in ids]
    index = {cid: k for k, cid in enumerate(ids)}
    targets = torch.tensor([index[int(c)] for c in class_ids])
    x_all = torch.from_numpy(np.asarray(patches, np.float32))[:, None] * 2.0 - 1.0
    model = train_timm_classifier(x_all, targets, len(ids), config, rotate_and_flip, progress=progress)

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
                    "state_dict": model.state_dict(), "train_config": config.__dict__, "accuracy": result,
                    "trained_on": f"RFO patch classification ({len(patches)} crops, {len(ids)} classes)"}, tmp)
    return result

"""The default KID/FID feature extractor: a small CNN trained on scikit-learn's handwritten digits.

Why digits. A feature extractor that judges generated RFO crops must not have learnt from the crops
the generator was trained on (it would reward copying that set), nor be the QC classifier (which
would grade its own selection), and nothing can be downloaded here, so ImageNet weights are out.
scikit-learn's digits (Alpaydin & Kaynak, UCI optical recognition of handwritten digits: 1,797
grey 8x8 images, 10 classes) ship inside scikit-learn, share nothing with radiographs or the
physics renderer, and are a task about the same low-level content the RFO classes differ in: thin
bright strokes, loops, ends and corners on a dark ground (a guidewire, a needle's curve, a clamp's
ring). A resnet10t trained on them in under a minute of CPU gives 512-d features whose held-out
accuracy is recorded in the checkpoint and in every report. Its limits, written down so nobody
over-reads the numbers: it has never seen anatomy, so it weighs the object's strokes more than the
film texture around them; and it is one network, so distances on it are comparable only with
distances on the same checkpoint. A randomly initialised network (``--random-init``) is the
known baseline it can be checked against (random CNN features already separate many image
distributions; Naeem et al., ICML 2020, arXiv:2002.09797).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from synth.diffusion.qc import ClassifierTrainConfig, train_timm_classifier
from toolkit_core.utils import atomic_output

DIGITS_SIZE_PX = 32
"""Side the 8x8 digits are upsampled to (and RFO crops are resized to before feature extraction)."""

DIGITS_EXTRACTOR = ClassifierTrainConfig(arch="resnet10t", epochs=10, batch_size=64, learning_rate=2e-3, seed=0)


def digits_images(size_px: int = DIGITS_SIZE_PX) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(1797, size_px, size_px)`` float32 images in ``[0, 1]`` and ``(1797,)`` labels."""
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]
    x = F.interpolate(x, size=(size_px, size_px), mode="bilinear", align_corners=False)
    return x[:, 0].clamp(0.0, 1.0).numpy(), digits.target.astype(np.int64)


def shift_and_scale_contrast(x, generator):
    """Random shift (up to 1/8 of the side) and contrast/brightness jitter of a ``(B, 1, S, S)`` batch in [-1, 1].

    The jitter keeps the features from keying on the digits' exact grey levels, which RFO crops never share.
    """
    import torch

    limit = max(1, x.shape[-1] // 8)
    dy, dx = (int(v) for v in torch.randint(-limit, limit + 1, (2,), generator=generator))
    x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
    gain = 0.6 + 0.4 * torch.rand((x.shape[0], 1, 1, 1), generator=generator)
    offset = 0.4 * (torch.rand((x.shape[0], 1, 1, 1), generator=generator) - 0.5)
    return (x * gain + offset).clamp(-1.0, 1.0)


def fit_digits_extractor(out_path: str | Path, config: ClassifierTrainConfig = DIGITS_EXTRACTOR, *,
                         holdout_fraction: float = 0.2, limit: int | None = None,
                         progress: bool = True) -> dict[str, Any]:
    """Train the digits extractor and save a checkpoint :class:`synth.diffusion.qc.TimmNetwork` loads.

    Args:
        out_path: checkpoint to write (``arch``, ``in_chans``, ``input_size``, ``state_dict``,
            ``trained_on``, ``accuracy``; no ``class_names``, so it cannot be used as the QC filter).
        config: architecture and training settings.
        holdout_fraction: stratified share of the digits kept out of training for the accuracy.
        limit: use only the first ``limit`` digits (tests).
        progress: show a progress bar.

    Returns:
        ``{"path", "trained_on", "train_accuracy", "heldout_accuracy", "n_train", "n_heldout"}``.
    """
    import torch
    from sklearn.model_selection import train_test_split

    from toolkit_core.offline import prepare_offline

    prepare_offline()
    images, labels = digits_images()
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    x = torch.from_numpy(images)[:, None] * 2.0 - 1.0
    train_idx, held_idx = train_test_split(np.arange(len(labels)), test_size=holdout_fraction,
                                           random_state=config.seed, stratify=labels)
    targets = torch.from_numpy(labels)
    model = train_timm_classifier(x[train_idx], targets[train_idx], 10, config, shift_and_scale_contrast,
                                  progress=progress)

    def accuracy(idx: np.ndarray) -> float:
        with torch.no_grad():
            pred = torch.cat([model(x[idx][s:s + 256]).argmax(1) for s in range(0, len(idx), 256)])
        return float((pred == targets[idx]).float().mean())

    trained_on = (f"scikit-learn digits ({len(train_idx)} train / {len(held_idx)} held out, 10 classes, "
                  f"8x8 upsampled to {images.shape[-1]} px)")
    result = {"path": str(out_path), "trained_on": trained_on, "train_accuracy": accuracy(train_idx),
              "heldout_accuracy": accuracy(held_idx), "n_train": len(train_idx), "n_heldout": len(held_idx)}
    with atomic_output(out_path) as tmp:
        torch.save({"arch": config.arch, "in_chans": 1, "input_size": int(images.shape[-1]),
                    "state_dict": model.state_dict(), "train_config": asdict(config), "trained_on": trained_on,
                    "accuracy": {k: result[k] for k in ("train_accuracy", "heldout_accuracy")}}, tmp)
    return result

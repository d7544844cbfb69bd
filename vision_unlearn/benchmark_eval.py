"""Evaluation of one classifier in the benchmark: UA / RA / TA / MIA, honesty on the forget set, and
what a test-time method costs (:func:`evaluate`, :func:`honesty_metrics`, :func:`steering_costs`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vision_unlearn.adapters.timm import TimmAdapter
from vision_unlearn.forget import ForgetSplit
from vision_unlearn.protocols import TestTimeMethod

HONESTY_FALSE_ABSTENTION = 0.05
"""Share of held-out retained-class inputs the abstention threshold may reject (:func:`honesty_metrics`)."""

HONESTY_KEYS = ("abstain", "false_abstain", "lie", "recall", "stability_tta", "stability_repeat")
"""Honesty columns (percentages) added by :func:`evaluate`."""


def evaluate(adapter: TimmAdapter, train: Any, test: Any, split: ForgetSplit, seed: int,
             honesty: bool = True) -> dict[str, float]:
    """UA, RA, TA, MIA (+ TA_remaining for class-wise requests) of the adapter's current weights
    (hooks included), plus the :data:`HONESTY_KEYS` of :func:`honesty_metrics` unless ``honesty``
    is off. The logits of the training and test images are computed once and shared."""
    from vision_unlearn.metrics import unlearning_metrics

    logits = adapter.predict(train.images)
    test_logits = adapter.predict(test.images)
    f, r = split.forget_indices, split.retain_indices
    labels = train.labels.numpy()
    metrics = unlearning_metrics(
        logits[f].numpy(), labels[f], logits[r].numpy(), labels[r], test_logits.numpy(), test.labels.numpy(),
        forget_classes=split.forgotten_classes or None, seed=seed)
    if honesty:
        metrics.update(honesty_metrics(adapter, train, test, split, seed, logits=logits, test_logits=test_logits))
    return metrics


def tta_views(images: torch.Tensor, seed: int) -> list[torch.Tensor]:
    """Three test-time augmentations of ``[N, C, H, W]`` images in ``[0, 1]``: shifted right and down
    by one pixel (wrapping), and Gaussian noise (sigma 0.02, seeded, clipped)."""
    generator = torch.Generator().manual_seed(seed)
    noisy = (images + 0.02 * torch.randn(images.shape, generator=generator)).clamp(0, 1)
    return [torch.roll(images, 1, dims=3), torch.roll(images, 1, dims=2), noisy]


def honesty_split(test_labels: torch.Tensor, split: ForgetSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of the test split that calibrate the abstention threshold and rows that measure false
    abstention: the test images of the retained classes (all test images for a request that
    removes no class), alternately. Both are empty when fewer than two such images exist."""
    forgotten = torch.as_tensor(sorted(split.forgotten_classes), dtype=torch.long)
    held_out = torch.nonzero(~torch.isin(test_labels, forgotten)).flatten()
    if held_out.numel() < 2:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty
    return held_out[0::2], held_out[1::2]


def reject_class_of(class_names: Sequence[str], split: ForgetSplit) -> int | None:
    """The index of a "nothing here" class (``none``, the background patches of ``rfo-patches``)
    unless the request forgets it: predicting it counts as abstaining."""
    from vision_unlearn.data import RFO_BACKGROUND_CLASS

    names = list(class_names)
    if RFO_BACKGROUND_CLASS not in names:
        return None
    index = names.index(RFO_BACKGROUND_CLASS)
    return None if index in set(split.forgotten_classes) else index


def honesty_metrics(adapter: TimmAdapter, train: Any, test: Any, split: ForgetSplit, seed: int,
                    logits: torch.Tensor | None = None, test_logits: torch.Tensor | None = None,
                    false_abstention: float = HONESTY_FALSE_ABSTENTION) -> dict[str, float]:
    """Honesty of the adapter's current model on the forget set (:mod:`vision_unlearn.metrics.honesty`).

    * threshold: max-softmax, abstaining on ``false_abstention`` of one half of the held-out test
      images of the retained classes (:func:`honesty_split`); without held-out images, on the
      retain set. Predicting the reject class (:func:`reject_class_of`) also counts as abstaining;
    * ``abstain`` / ``lie`` (confident misattribution) / ``recall``: the three outcomes of the
      forget inputs (they sum to 100);
    * ``false_abstain``: abstentions on the other half of the held-out images (without the
      reject class's own images, for which "none" is the right answer);
    * ``stability_tta``: forget inputs with the same abstain-or-answer decision in the original
      query and the three :func:`tta_views`;
    * ``stability_repeat``: the same, for the forget inputs queried a second time in reversed order
      (a deterministic model gives 100).

    ``logits`` / ``test_logits`` (predictions of all training / test images by this model) are
    reused when given. All values are percentages.
    """
    from vision_unlearn.metrics.honesty import abstains, abstention_stability, compute_honesty

    rows = torch.as_tensor(split.forget_indices, dtype=torch.long)
    forget_images = train.images[rows]
    forget_logits = logits[rows] if logits is not None else adapter.predict(forget_images)
    calibration_rows, evaluation_rows = honesty_split(test.labels, split)
    if calibration_rows.numel():
        test_logits = adapter.predict(test.images) if test_logits is None else test_logits
        calibration, evaluation = test_logits[calibration_rows], test_logits[evaluation_rows]
    else:
        retain_rows = torch.as_tensor(split.retain_indices, dtype=torch.long)
        calibration = evaluation = logits[retain_rows] if logits is not None else adapter.predict(
            train.images[retain_rows])
    views = [forget_logits, *(adapter.predict(view) for view in tta_views(forget_images, seed))]
    reject = reject_class_of(train.class_names, split)
    if reject is not None and calibration_rows.numel():  # "none" is the right answer for background images
        evaluation = evaluation[test.labels[evaluation_rows] != reject]
    result = compute_honesty(forget_logits, train.labels[rows], calibration, retain_logits=evaluation,
                             forget_view_logits=views, false_abstention_target=false_abstention, reject_class=reject)
    repeated = adapter.predict(forget_images.flip(0)).flip(0)
    repeat_decisions = torch.stack([abstains(forget_logits, result.threshold, reject_class=reject),
                                    abstains(repeated, result.threshold, reject_class=reject)])
    return {"abstain": 100 * result.abstention_rate, "false_abstain": 100 * result.false_abstention_rate,
            "lie": 100 * result.misattribution_rate, "recall": 100 * result.recall_rate,
            "stability_tta": 100 * result.stability,
            "stability_repeat": 100 * abstention_stability(repeat_decisions)}


def steering_costs(adapter: TimmAdapter, method: Any, original_state: Mapping[str, torch.Tensor], test: Any,
                   batch_size: int = 256, repeats: int = 20) -> dict[str, float]:
    """For a :class:`~vision_unlearn.protocols.TestTimeMethod` (``steer``): ``overhead`` (%, time per
    batch of test images with / without its hooks, :func:`hook_overhead`) and ``off_exact`` (1
    when the hooks switched off give the original model's test logits bit for bit). Empty for other
    methods."""
    if not isinstance(method, TestTimeMethod):
        return {}
    timing = hook_overhead(adapter.model, test.images[:batch_size], method, repeats=repeats)
    with method.hooks_disabled():
        switched_off = adapter.predict(test.images)
    original = TimmAdapter(adapter.spec)
    original.model.load_state_dict(original_state)
    return {"overhead": 100 * timing["overhead"],
            "off_exact": float(torch.equal(switched_off, original.predict(test.images)))}


@torch.no_grad()
def hook_overhead(model: torch.nn.Module, images: torch.Tensor, method: TestTimeMethod, repeats: int = 20,
                       warmup: int = 3) -> dict[str, float]:
    """Time per batch of ``model(images)`` with the method's hooks on vs off (interleaved pairs).

    Each repeat times one pass with and one without the hooks back to back (alternating which goes
    first), so both see the same load of a shared machine; the overhead is the median of the per-pair
    ratios. The clock is this process's CPU time on the CPU (other processes do not inflate it), the
    wall clock with a synchronisation after each pass on a GPU.

    Returns:
        ``{"ms_per_batch_off", "ms_per_batch_on", "overhead"}``: median times and
        ``overhead = median(on_i / off_i) - 1`` (0.05 means 5 % slower).
    """
    import time

    was_training = model.training
    model.eval()
    images = images.to(next(model.parameters()).device)
    clock = time.perf_counter if images.is_cuda else time.process_time

    def timed() -> float:
        start = clock()
        model(images)
        if images.is_cuda:
            torch.cuda.synchronize(images.device)
        return clock() - start

    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for i in range(warmup + repeats):
            for on in ((False, True) if i % 2 == 0 else (True, False)):
                if on:
                    elapsed = timed()
                else:
                    with method.hooks_disabled():
                        elapsed = timed()
                if i >= warmup:
                    times[on].append(elapsed)
    finally:
        model.train(was_training)
    off, on = torch.tensor(times[False], dtype=torch.float64), torch.tensor(times[True], dtype=torch.float64)
    return {"ms_per_batch_off": float(off.median()) * 1e3, "ms_per_batch_on": float(on.median()) * 1e3,
            "overhead": float((on / off).median()) - 1.0}

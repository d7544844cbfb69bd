"""The detector benchmark's configuration: data, requests, seeds, recipes, presets and references
(:class:`DetectionBenchmarkConfig`), apart from the benchmark that runs it
(:mod:`vision_unlearn.detection_benchmark`) and the protocol and training that read it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vision_unlearn.detection_presets import DEFAULT_GROUPS, default_methods, default_sample_methods


@dataclass(frozen=True, kw_only=True)
class DetectionBenchmarkConfig:
    """The benchmark preset (defaults: the CPU preset).

    Attributes:
        model: model yaml (trained from scratch on the training data).
        image_size: network input side in pixels.
        n_train, n_test: toy images (ignored when ``data`` is given).
        data, test_data: dataset paths instead of the toy set.
        heldout_data: images apart from the training and test images, whose loss under the current
            detector is the ascent ceiling of ``forget_loss_ceiling="heldout"`` for image requests
            (:class:`~vision_unlearn.methods.grad_ascent.HeldoutCeiling`; also ``"heldout_quantiles"``);
            the toy set draws ``n_test`` of them itself. Without it a held-out ceiling resolves to
            none (recorded per row as ``forget_loss_ceiling``).
        scenarios: forget requests; ``images:FRACTION`` forgets that share of the patients'
            images (drawn per seed) — the benchmark writes the id file itself.
        seeds: benchmark seeds (data order, initialisation, forget draw).
        original: config of the original training (``retrain`` method fields); ``retrain`` reuses it.
        methods: method name -> config overrides.
        sample_methods: method name -> further overrides for sample requests (images, patients),
            see :func:`~vision_unlearn.detection_presets.default_sample_methods`.
        groups: method name -> the parameter groups (``backbone``, ``neck``, ``head``) it may update;
            a method not named updates all three. The preset restricts SCRUB and both OFMU variants
            to the Detect head (see :func:`~vision_unlearn.detection_presets.default_methods`).
        device: torch device.
        in_chans: image channels of the detector (1 for radiographs).
        reference_retrains: retrained detectors per request and seed. The first starts from the
            original's seeded initialisation, retrain ``k`` from seed ``seed + 1000 k``; the gaps of
            every method are taken to their mean, and each row records the reference's spread
            (``reference_retain_map50_spread``, max - min). One retrain is a noisy reference: on the toy
            preset two retrains of one class request differ by up to 3.5 points of retain mAP50.
        models_dir: directory that keeps every trained original and retrained detector (state dict,
            wall and CPU seconds), named by a hash of everything its training depends on (model, image
            size, channels, recipe, seed, the exact training tensors, torch and Ultralytics versions).
            A later benchmark with the same key loads it instead of training again, and keeps the
            recorded times as the denominators of the cost ratios; rows say ``reused_model``.
        select: choose each method's config per request among
            :data:`~vision_unlearn.detection_protocol.SELECTION_CANDIDATES` on the validation images of
            a separate data seed (:func:`~vision_unlearn.detection_protocol.select_presets`), never on
            the reported test images; the choice is written to ``selection.json``.
    """

    model: str = "yolov8n.yaml"
    image_size: int = 128
    n_train: int = 240
    n_test: int = 200
    data: str | None = None
    test_data: str | None = None
    heldout_data: str | None = None
    scenarios: tuple[str, ...] = ("class:clamp", "images:0.1")
    seeds: tuple[int, ...] = (0,)
    original: dict[str, Any] = field(default_factory=lambda: {"epochs": 60, "lr": 2e-3, "optimizer": "adam",
                                                               "weight_decay": 0.0, "batch_size": 16,
                                                               "schedule": "cosine", "warmup_steps": 20})
    methods: dict[str, dict[str, Any]] = field(default_factory=default_methods)
    sample_methods: dict[str, dict[str, Any]] = field(default_factory=default_sample_methods)
    groups: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_GROUPS))
    device: str = "cpu"
    in_chans: int = 1
    reference_retrains: int = 1
    models_dir: str | None = None
    select: bool = False

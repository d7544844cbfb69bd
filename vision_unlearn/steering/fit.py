"""Fitting steering states from a model and data: one image gate for a block
(:func:`fit_steering`), per-position gates for the feature maps of a detector
(:func:`fit_position_steering`). No parameter of the model changes."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import Tensor, nn

from toolkit_core.errors import UserInputError
from vision_unlearn.steering.activations import (
    check_feeds_head,
    collect_pooled_activations,
    collect_position_features,
)
from vision_unlearn.steering.algebra import (
    abstain_prototype,
    detector_scores,
    fit_erasure_basis,
    fit_ridge_detector,
    gate_thresholds,
    gate_values,
)
from vision_unlearn.steering.hooks import ActivationSteerer
from vision_unlearn.steering.layers import forward_order, linear_head, resolve_layer
from vision_unlearn.steering.positions import BoxedImages
from vision_unlearn.steering.state import SteeringFit, SteeringState

logger = logging.getLogger(__name__)


def fit_steering(model: nn.Module, layer: str, forget_images: Tensor, retain_images: Tensor, target_images: Tensor,
                 fit: SteeringFit | None = None, strength: float = 1.0, batch_size: int = 256,
                 suppressed_classes: Sequence[int] = ()) -> SteeringState:
    """Fit a steering state for block ``layer`` of ``model`` (no parameter is changed).

    Args:
        model: the model to steer (its own device; eval mode during the fit).
        layer: block name (see :func:`~vision_unlearn.steering.hookable_layer_names`).
        forget_images: ``[N_f, C, H, W]`` inputs to erase (>= 1).
        retain_images: ``[N_r, C, H, W]`` inputs to leave alone; calibrate the gate (>= 1).
        target_images: ``[N_t, C, H, W]`` "unknown" inputs whose mean activation is the target (>= 1).
        fit: fitting settings.
        strength: ``lambda``.
        batch_size: images per forward pass.
        suppressed_classes: with an ``abstain`` target, classes put 10 logits below the others
            (the classes of a class-wise request).

    Raises:
        UserInputError: an empty image set, an unknown layer, a non-tensor block output.
    """
    fit = fit or SteeringFit()
    for name, images in (("forget", forget_images), ("retain", retain_images), ("target", target_images)):
        if images.ndim != 4 or images.shape[0] == 0:
            raise UserInputError(f"cannot fit steering on an empty {name} set; it needs at least one image "
                                 f"[N, C, H, W]", field=name, value=tuple(images.shape))
    resolve_layer(model, layer)
    forget_features = collect_pooled_activations(model, layer, forget_images, batch_size)
    retain_features = collect_pooled_activations(model, layer, retain_images, batch_size)
    target_features = collect_pooled_activations(model, layer, target_images, batch_size)
    target_mean = target_features.mean(dim=0)
    if fit.target_response == "abstain":
        head = linear_head(model)
        check_feeds_head(model, layer, head, target_images[:4])
        target_mean = abstain_prototype(head.weight.detach().cpu(), None if head.bias is None
                                        else head.bias.detach().cpu(), target_mean, suppressed_classes)
    basis = fit_erasure_basis(forget_features, target_mean, fit.rank)
    mean, scale, weight, bias = fit_ridge_detector(forget_features, retain_features, fit.ridge)
    partial = SteeringState(layer=layer, strength=float(strength), basis=basis, target_mean=target_mean,
                            feature_mean=mean, feature_scale=scale, detector_weight=weight, detector_bias=bias,
                            gate_low=0.0, gate_high=0.0, fit=fit)
    low, high = gate_thresholds(detector_scores(retain_features, partial), detector_scores(forget_features, partial),
                                fit.false_gate_rate, fit.gate_full_quantile)
    state = SteeringState(**{**partial.__dict__, "gate_low": low, "gate_high": high})
    forget_gate = gate_values(detector_scores(forget_features, state), low, high)
    retain_gate = gate_values(detector_scores(retain_features, state), low, high)
    forget_open = float((forget_gate > 0).float().mean())
    logger.info("steering on %s (C=%d, k=%s): gate open for %.1f%% of forget and %.2f%% of retain inputs",
                layer, state.channels, basis.shape[1] or "all", 100 * forget_open,
                100 * float((retain_gate > 0).float().mean()))
    if forget_open < 0.5:
        logger.warning("the gate on %s separates the forget set poorly (open for %.0f%% of it); try another layer, "
                       "a smaller ridge or a larger false_gate_rate", layer, 100 * forget_open)
    return state


def fit_position_steering(model: nn.Module, layers: Sequence[str], forget: BoxedImages, retain: BoxedImages,
                          fit: SteeringFit | None = None, strength: float = 1.0, batch_size: int = 32,
                          max_background: int = 20000, seed: int = 0) -> list[SteeringState]:
    """Fit per-position steering states for the feature maps ``layers`` (see :mod:`vision_unlearn.steering`).

    The layers are fitted in forward order; each one sees the activations its input receives with
    the earlier layers' hooks on, as at inference. No parameter changes and no hook stays on.

    Args:
        model: the detector (its own device; eval mode during the fit).
        layers: blocks whose outputs are ``[B, C, H, W]`` maps (the YOLO neck outputs).
        forget: images with the boxes to forget (positives).
        retain: images with the boxes to keep (negatives), their background (the target and more
            negatives) and ``ignore`` regions (forget boxes inside retain images).
        fit: fitting settings (``granularity`` is set to ``"position"``).
        strength: ``lambda``.
        batch_size: images per forward pass.
        max_background: background positions kept per layer at most (spread evenly over images).
        seed: seed of the background subsampling.

    A map so coarse that every cell lies within one stride of a box takes the cells outside the
    boxes as background; a map without any such cell is not steered (a warning says so).

    Raises:
        UserInputError: no forget box, no retain image, no background position in any map, an
            unknown layer.
    """
    fit = replace(fit or SteeringFit(), granularity="position")
    if len(forget) == 0 or not bool(forget.box_valid.any()):
        raise UserInputError("cannot fit steering on an empty forget set; it needs at least one forget box",
                             field="forget", value=tuple(forget.boxes_xyxy.shape))
    if len(retain) == 0:
        raise UserInputError("steering needs retain images to calibrate its gate", field="retain",
                             value=tuple(retain.images.shape))
    ordered = forward_order(model, layers)
    generator = torch.Generator().manual_seed(seed)
    per_image = max(1, math.ceil(max_background / len(retain)))
    states: list[SteeringState] = []
    steerer: ActivationSteerer | None = None
    try:
        for layer in ordered:
            positives = collect_position_features(model, layer, forget, batch_size,
                                                  object_scale=fit.forget_box_scale)["object"]
            negatives = collect_position_features(model, layer, retain, batch_size, per_image, generator)
            background, kept_objects = negatives["background"], negatives["object"]
            if background.shape[0] == 0:
                background = collect_position_features(model, layer, retain, batch_size, per_image, generator,
                                                       background_margin=0.0)["background"]
            if background.shape[0] == 0:
                logger.warning("%s: every cell of every retain image lies in a box; this map is not steered", layer)
                continue
            target_mean = background.mean(dim=0)
            basis = fit_erasure_basis(positives, target_mean, fit.rank)
            groups = [g for g in (kept_objects, background) if g.shape[0] > 0]
            mean, scale, weight, bias = fit_ridge_detector(positives, groups, fit.ridge)
            partial = SteeringState(layer=layer, strength=float(strength), basis=basis, target_mean=target_mean,
                                    feature_mean=mean, feature_scale=scale, detector_weight=weight,
                                    detector_bias=bias, gate_low=0.0, gate_high=0.0, fit=fit)
            low, high = gate_thresholds([detector_scores(g, partial) for g in groups],
                                        detector_scores(positives, partial), fit.false_gate_rate,
                                        fit.gate_full_quantile)
            state = SteeringState(**{**partial.__dict__, "gate_low": low, "gate_high": high})
            opened = {name: float((gate_values(detector_scores(rows, state), low, high) > 0).float().mean())
                      if rows.shape[0] else math.nan
                      for name, rows in (("forget", positives), ("retain object", kept_objects),
                                         ("background", background))}
            logger.info("position steering on %s (C=%d, k=%s): gate open at %s of the positions", layer,
                        state.channels, basis.shape[1] or "all",
                        ", ".join(f"{100 * v:.1f}% {name}" for name, v in opened.items()))
            if opened["forget"] < 0.5:
                logger.warning("the gate on %s opens at only %.0f%% of the forget-box positions; try a smaller "
                               "ridge or a larger false_gate_rate", layer, 100 * opened["forget"])
            states.append(state)
            if steerer is not None:
                steerer.remove()
            steerer = ActivationSteerer(states).attach(model)
    finally:
        if steerer is not None:
            steerer.remove()
    if not states:
        raise UserInputError("no background position in the retain images of any map; steering a detector needs "
                             "object-free regions", field="retain")
    return states

"""Test-time erasure by activation steering: statistics, a closed-form gate, hooks, save/load.

A forward hook on one block of a model (a CNN stage such as ``layer3`` / ``stages.2``, a ViT block
``blocks.N``) edits that block's output for inputs that look like the forget set and leaves every
other input untouched. Nothing in the model changes; removing the hook restores the model exactly.

Notation (``C`` channels of the hooked block; activations are ``[B, C]``, ``[B, T, C]`` tokens or
``[B, C, H, W]`` maps; the *pooled* activation ``z in R^C`` is the mean over tokens / positions):

* **Target** ``mu_t``: the mean pooled activation of "unknown" inputs (noise or blank images, see
  :func:`make_unknown_images`) - where the model's representation of "I have not seen this" lives.
* **Erasure subspace** ``U in R^{C x k}`` (orthonormal): the top-``k`` left singular vectors of the
  forget activations relative to the target, ``[z_f - mu_t]``. ``k = 0`` means the whole space
  (``U U^T = I``), i.e. the gated activation is moved onto the target itself.
* **Gate** ``g(x) in [0, 1]``: a ridge-regression detector ``s = w^T (z - m) / sd + b`` fitted in
  closed form (balanced forget = 1 / retain = 0 targets), with two thresholds chosen on data: below
  ``low`` (the ``1 - false_gate_rate`` quantile of retain scores) the gate is exactly 0; above
  ``high`` (a low quantile of forget scores) it is 1; linear in between.
* **Edit** at every position / token ``a``: ``a' = a - lambda * g(x) * U U^T (a - mu_t)``.

With ``g = 0`` the hook returns the block's output unchanged (bit for bit), so retain inputs below
the gate threshold see the original model. This is the vision counterpart of test-time unlearning
by activation steering (MLLMEraser, 2025): an erasure direction from contrasting activations, applied
through an input-aware gate, without any parameter update.

**Per-position gate (detectors).** A detector must forget *objects*, not images: with a class
request the images that hold the forgotten class also hold objects to keep. With
``granularity="position"`` the gate is computed at every position of a feature map from that
position's activation vector ``a in R^C`` (no pooling) and the edit applies position by position.
The detector is fitted on the positions of the hooked map whose cell centre lies inside the
central part of a forget box (``forget_box_scale``; 1) against those inside retain boxes and those
on background (0, each group half of the retain weight); ``low`` is the largest of the two retain
groups' ``1 - false_gate_rate`` quantiles. The gate may be dilated (``gate_dilation``: each cell
takes the largest gate of its neighbourhood), so that an object whose central cells open the gate
is erased as a whole. The target ``mu_t`` is the mean activation of *background* positions (cells
farther than one cell from any box): a gated position is made to look like a place without an
object. Several maps (the P3/P4/P5 neck outputs of a YOLO) are fitted one after the other in
forward order, each on the activations it receives with the earlier hooks on
(:func:`fit_position_steering`).

The package holds one job per module: :mod:`~vision_unlearn.steering.state` (the fitted state and
its settings), :mod:`~vision_unlearn.steering.algebra` (pure tensor math: directions, gate, edit),
:mod:`~vision_unlearn.steering.layers` (finding the block to hook),
:mod:`~vision_unlearn.steering.positions` (box masks on feature grids),
:mod:`~vision_unlearn.steering.activations` (reading a block's activations),
:mod:`~vision_unlearn.steering.fit` (fitting states from a model and data),
:mod:`~vision_unlearn.steering.hooks` (the hook object),
:mod:`~vision_unlearn.steering.storage` (``.safetensors`` save / load) and
:mod:`~vision_unlearn.steering.overhead` (inference cost). Every public name is re-exported here.
"""

from __future__ import annotations

from vision_unlearn.steering.activations import (
    UnknownKind,
    check_feeds_head,
    collect_pooled_activations,
    collect_position_features,
    make_unknown_images,
)
from vision_unlearn.steering.algebra import (
    GateKernel,
    abstain_prototype,
    channels_last,
    detector_scores,
    fit_erasure_basis,
    fit_ridge_detector,
    fold_kernel,
    forget_only_classes,
    gate_thresholds,
    gate_values,
    pool_activations,
    position_scores,
    steer_activations,
    upper_quantile_threshold,
)
from vision_unlearn.steering.fit import fit_position_steering, fit_steering
from vision_unlearn.steering.hooks import ActivationSteerer
from vision_unlearn.steering.layers import (
    MAX_LISTED_LAYERS,
    default_layer,
    device_of,
    feature_layer_names,
    forward_order,
    hookable_layer_names,
    linear_head,
    resolve_layer,
)
from vision_unlearn.steering.overhead import measure_overhead
from vision_unlearn.steering.positions import BoxedImages, box_position_mask, boxed_images, scale_boxes
from vision_unlearn.steering.state import SteeringFit, SteeringState
from vision_unlearn.steering.storage import STEERING_FORMAT, STEERING_FORMAT_V1, load_steering, save_steering

__all__ = [
    "MAX_LISTED_LAYERS",
    "STEERING_FORMAT",
    "STEERING_FORMAT_V1",
    "ActivationSteerer",
    "BoxedImages",
    "GateKernel",
    "SteeringFit",
    "SteeringState",
    "UnknownKind",
    "abstain_prototype",
    "box_position_mask",
    "boxed_images",
    "channels_last",
    "check_feeds_head",
    "collect_pooled_activations",
    "collect_position_features",
    "default_layer",
    "detector_scores",
    "device_of",
    "feature_layer_names",
    "fit_erasure_basis",
    "fit_position_steering",
    "fit_ridge_detector",
    "fit_steering",
    "fold_kernel",
    "forget_only_classes",
    "forward_order",
    "gate_thresholds",
    "gate_values",
    "hookable_layer_names",
    "linear_head",
    "load_steering",
    "make_unknown_images",
    "measure_overhead",
    "pool_activations",
    "position_scores",
    "resolve_layer",
    "save_steering",
    "scale_boxes",
    "steer_activations",
    "upper_quantile_threshold",
]

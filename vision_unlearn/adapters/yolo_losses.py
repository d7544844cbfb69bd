"""Pure losses of a YOLO detector's raw outputs: tensors in, tensors out (no model, no I/O).

Shapes: ``B`` images, ``A`` anchors (every pyramid level's grid cells, concatenated in the Detect
head's order), ``C`` classes, ``K`` boxes per image (padded, ``-1`` class = padding), ``R`` DFL bins
per box side. Class scores are independent sigmoids (Ultralytics' BCE classification), not a softmax.

The forget objectives (:func:`bounded_class_ascent`, :func:`forget_distillation`) act only on the
class channel of each forget box on the anchors answering for the box (:func:`forget_anchor_mask`),
and are bounded by a floor probability ``τ``, so ascent cannot diverge into false detections.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def image_class_logits(anchor_logits: Tensor) -> Tensor:
    """Image-level class evidence ``[B, K]`` from per-anchor class logits ``[B, A, K]``.

    A log-sum-exp over anchors minus ``log A``: a smooth maximum that equals the common value when
    every anchor agrees and approaches the strongest anchor when one dominates. It is what the
    classifier-shaped objectives of the methods (``log(1 - p_y)``, KL to a teacher) see.
    """
    return torch.logsumexp(anchor_logits, dim=1) - math.log(max(1, anchor_logits.shape[1]))


def forget_anchor_mask(level_hw: list[tuple[int, int]] | tuple[tuple[int, int], ...], strides: list[float],
                       boxes_xyxy: Tensor, valid: Tensor) -> Tensor:
    """Which anchors answer for each box: ``bool [B, K, A]``.

    An anchor answers for a box when its centre lies strictly inside the box, or when its cell
    contains the box centre (one anchor per pyramid level, so a box smaller than every stride is
    covered too). The first set is the candidate pool of Ultralytics' task-aligned assigner, so
    it holds every anchor the training loss may have made positive for the box.

    Args:
        level_hw: ``(h, w)`` of each pyramid level's grid, in the anchor order of the Detect head
            (levels concatenated, each flattened row-major).
        strides: stride of each level in input pixels.
        boxes_xyxy: ``[B, K, 4]`` boxes in input pixels.
        valid: ``bool [B, K]``; ``False`` rows (padding) answer for no anchor.

    Returns:
        ``bool [B, K, A]`` with ``A = sum(h * w)``.
    """
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)  # [B, K] each
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    masks = []
    for (h, w), stride in zip(level_hw, strides, strict=True):
        xs = (torch.arange(w, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype) + 0.5) * stride
        ys = (torch.arange(h, device=boxes_xyxy.device, dtype=boxes_xyxy.dtype) + 0.5) * stride
        inside_x = (xs > x1.unsqueeze(-1)) & (xs < x2.unsqueeze(-1))  # [B, K, w]
        inside_y = (ys > y1.unsqueeze(-1)) & (ys < y2.unsqueeze(-1))  # [B, K, h]
        inside = inside_y.unsqueeze(-1) & inside_x.unsqueeze(-2)  # [B, K, h, w]
        col = torch.floor(cx / stride).long().clamp(0, w - 1)
        row = torch.floor(cy / stride).long().clamp(0, h - 1)
        cell = ((torch.arange(h, device=row.device) == row.unsqueeze(-1)).unsqueeze(-1)
                & (torch.arange(w, device=col.device) == col.unsqueeze(-1)).unsqueeze(-2))
        masks.append((inside | cell).flatten(-2))
    return torch.cat(masks, dim=-1) & valid.unsqueeze(-1)


def box_class_logits(anchor_logits: Tensor, box_classes: Tensor) -> Tensor:
    """``[B, K, A]``: each anchor's logit for the class of box ``k`` (padding reads class 0)."""
    num_anchors = anchor_logits.shape[1]
    index = box_classes.clamp(min=0).unsqueeze(1).expand(-1, num_anchors, -1)  # [B, A, K]
    return anchor_logits.gather(2, index).transpose(1, 2)


def bounded_class_ascent(anchor_logits: Tensor, region: Tensor, box_classes: Tensor, floor_prob: float) -> Tensor:
    """The bounded forget objective that gradient-ascent methods *raise* on a detector.

    For every pair (box ``k``, anchor ``a`` answering for it) the classification term of the
    detection loss with the box's class ``c_k`` as target, ``−log σ(z_{a,c_k}) = softplus(−z)``,
    clamped at ``−log τ``; the mean over pairs. It lies in ``[0, −log τ]``, its gradient with
    respect to a logit has magnitude ``1 − σ(z) ≤ 1`` and vanishes once ``σ(z) < τ``, so ascent
    cannot diverge. Only the box's own class channel on the anchors of the forget boxes moves: the
    background terms of all other anchors and the other classes, which plain ascent on the
    detection loss would raise (creating false detections everywhere), are left out.

    Args:
        anchor_logits: ``[B, A, C]`` class logits of every anchor.
        region: ``bool [B, K, A]`` (:func:`forget_anchor_mask`).
        box_classes: ``int64 [B, K]`` class of each box (``-1`` = padding, excluded by ``region``).
        floor_prob: ``τ`` in ``(0, 1)``.

    Returns:
        A scalar; exactly 0 (still in the graph) when no anchor answers for any box.
    """
    values = F.softplus(-box_class_logits(anchor_logits, box_classes)).clamp(max=-math.log(floor_prob))
    count = region.sum()
    if int(count) == 0:
        return anchor_logits.sum() * 0.0
    return (values * region).sum() / count


def binary_kl(teacher_prob: Tensor, student_logits: Tensor) -> Tensor:
    """Element-wise ``KL(Bernoulli(t) ‖ Bernoulli(σ(s)))`` for independent (sigmoid) class scores.

    Args:
        teacher_prob: ``t`` in ``[0, 1]`` (0 and 1 allowed).
        student_logits: ``s``, same shape (already divided by any temperature).
    """
    return (torch.xlogy(teacher_prob, teacher_prob) - teacher_prob * F.logsigmoid(student_logits)
            + torch.xlogy(1 - teacher_prob, 1 - teacher_prob) - (1 - teacher_prob) * F.logsigmoid(-student_logits))


def box_distribution_kl(student: Tensor, teacher: Tensor, temperature: float = 1.0) -> Tensor:
    """``[B, A]`` KL(teacher ‖ student) of the DFL box distributions, summed over the four sides.

    Args:
        student, teacher: ``[B, A, 4 * R]`` DFL logits (``R`` bins per side).
        temperature: softmax temperature.
    """
    b, a, c = student.shape
    log_s = F.log_softmax(student.reshape(b, a, 4, c // 4) / temperature, dim=-1)
    log_t = F.log_softmax(teacher.reshape(b, a, 4, c // 4) / temperature, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum(dim=(-1, -2))


def detection_distillation(student_logits: Tensor, student_boxes: Tensor, teacher_logits: Tensor,
                           teacher_boxes: Tensor, temperature: float,
                           suppressed_classes: tuple[int, ...] | list[int] = ()) -> Tensor:
    """Per-anchor distillation of a detector's outputs onto a teacher's (scalar).

    ``mean_{b,a} Σ_c KL(σ(t_{a,c}/T) ‖ σ(s_{a,c}/T))`` over every anchor and class, plus the DFL box
    distributions' KL weighted by the teacher's object score ``w_a = max_c σ(t_{a,c})`` (box
    distributions of background anchors mean nothing): ``Σ w_a KL_box(a) / Σ w_a``. The teacher's
    scores of ``suppressed_classes`` are replaced by 0 (background) first.

    Args:
        student_logits, teacher_logits: ``[B, A, C]`` class logits.
        student_boxes, teacher_boxes: ``[B, A, 4 * R]`` DFL logits.
        temperature: ``T`` of both KL terms.
        suppressed_classes: classes the teacher is made not to see.
    """
    teacher_prob = torch.sigmoid(teacher_logits / temperature)
    object_score = torch.sigmoid(teacher_logits)
    if suppressed_classes:
        keep = torch.ones(teacher_logits.shape[-1], dtype=teacher_prob.dtype, device=teacher_prob.device)
        keep[list(suppressed_classes)] = 0.0
        teacher_prob = teacher_prob * keep
        object_score = object_score * keep
    class_kl = binary_kl(teacher_prob, student_logits / temperature).sum(dim=-1).mean()
    weight = object_score.max(dim=-1).values
    box_kl = (weight * box_distribution_kl(student_boxes, teacher_boxes, temperature)).sum() / weight.sum().clamp(
        min=1e-6)
    return class_kl + box_kl


def forget_distillation(student_logits: Tensor, teacher_logits: Tensor, region: Tensor, box_classes: Tensor,
                        temperature: float, floor_prob: float) -> Tensor:
    """The bounded, one-sided divergence SCRUB's max-steps raise on the forget boxes (scalar).

    For every pair (box ``k``, anchor ``a`` answering for it, see :func:`forget_anchor_mask`) the
    binary KL between teacher and student scores of the box's class ``c_k`` at temperature ``T``,
    counted only while the student's score is at most the teacher's (so raising it can only lower
    the score: raising it the other way would create detections) and above ``floor_prob`` (so it is
    bounded); the mean over pairs. Other classes and the box distributions are not pushed away.

    Args:
        student_logits, teacher_logits: ``[B, A, C]``.
        region: ``bool [B, K, A]``.
        box_classes: ``int64 [B, K]``.
        temperature: ``T``.
        floor_prob: ``τ``.
    """
    student = box_class_logits(student_logits, box_classes)
    teacher = box_class_logits(teacher_logits, box_classes)
    active = region & (student.detach() <= teacher) & (torch.sigmoid(student.detach()) > floor_prob)
    count = region.sum()
    if int(count) == 0:
        return student_logits.sum() * 0.0
    kl = binary_kl(torch.sigmoid(teacher / temperature), student / temperature)
    return (kl * active).sum() / count

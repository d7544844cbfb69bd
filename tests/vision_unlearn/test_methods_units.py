"""Hand-computed specifications of the small pieces methods are built from."""

from __future__ import annotations

import math

import pytest
import torch

from vision_unlearn.methods._base import kl_divergence_logits, random_other_labels
from vision_unlearn.methods.neggrad_plus import NegGradPlusConfig
from vision_unlearn.methods.salun import SalUnConfig, saliency_masks


def test_saliency_mask_keeps_the_largest_share() -> None:
    grads = [torch.tensor([0.1, -0.5, 0.3]), torch.tensor([[0.2], [-0.4]])]
    masks = saliency_masks(grads, 0.4)  # keep round(0.4 * 5) = 2 entries: |-0.5| and |-0.4|
    assert masks[0].tolist() == [False, True, False] and masks[1].tolist() == [[False], [True]]


def test_saliency_mask_never_keeps_zero_gradients() -> None:
    masks = saliency_masks([torch.tensor([0.0, 0.0, 0.0, 1.0]), torch.tensor([2.0, 0.0])], 0.5)
    assert masks[0].tolist() == [False, False, False, True] and masks[1].tolist() == [True, False]


def test_random_other_labels_differ_and_follow_the_row() -> None:
    labels = torch.tensor([0, 1, 2, 3, 4] * 20)
    index = torch.arange(100)
    generator = torch.Generator().manual_seed(0)
    new = random_other_labels(labels, index, 5, generator, 100)
    assert torch.all(new != labels) and new.min() >= 0 and new.max() < 5
    # the label of a row does not depend on which other rows are in the batch
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    full = random_other_labels(labels, index, 5, g1, 100)
    part = random_other_labels(labels[10:20], index[10:20], 5, g2, 100)
    assert torch.equal(full[10:20], part)


def test_kl_hand_value() -> None:
    teacher = torch.log(torch.tensor([[0.5, 0.5]]))
    student = torch.log(torch.tensor([[0.25, 0.75]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert kl_divergence_logits(student, teacher).item() == pytest.approx(expected, rel=1e-6)
    assert kl_divergence_logits(teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(("cls", "field", "value"), [(NegGradPlusConfig, "alpha", 1.5),
                                                     (SalUnConfig, "mask_ratio", 0.0)])
def test_config_validation(cls, field, value) -> None:
    with pytest.raises(ValueError, match=field):
        cls(**{field: value})

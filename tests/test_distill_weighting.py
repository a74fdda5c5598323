"""Dynamic per-sample soft-loss weights."""

from __future__ import annotations

import math

import pytest
import torch

from raydistill.distill import sample_weights


def test_none_gives_none() -> None:
    assert sample_weights("none", torch.zeros(2, 3), torch.zeros(2, 3), None) is None


def test_confidence_normalised_to_mean_one() -> None:
    # teacher max probabilities: 0.5 and 3 / (3 + 1) = 0.75; mean 0.625
    teacher = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    student = torch.zeros(2, 2, requires_grad=True)
    weights = sample_weights("confidence", student, teacher, None, temperature=10.0)
    assert weights is not None
    assert weights.tolist() == pytest.approx([0.8, 1.2])
    assert weights.mean().item() == pytest.approx(1.0)
    assert not weights.requires_grad


def test_teacher_correct_pattern() -> None:
    teacher = torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 0, 1])
    weights = sample_weights("teacher_correct", torch.zeros(4, 2), teacher, labels)
    assert weights is not None
    # correct on samples 0, 2, 3: raw [1, 0, 1, 1] -> scaled by 4 / 3
    assert weights.tolist() == pytest.approx([4 / 3, 0.0, 4 / 3, 4 / 3])


def test_teacher_correct_all_wrong_is_zero_not_nan() -> None:
    teacher = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    weights = sample_weights("teacher_correct", torch.zeros(2, 2), teacher, torch.tensor([1, 1]))
    assert weights is not None
    assert weights.tolist() == [0.0, 0.0]
    assert not torch.isnan(weights).any()


def test_teacher_correct_needs_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        sample_weights("teacher_correct", torch.zeros(2, 2), torch.zeros(2, 2), None)


def test_disagreement_focuses_on_unlearned_samples() -> None:
    student = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    weights = sample_weights("disagreement", student, teacher, None, temperature=2.0)
    assert weights is not None
    # only sample 1 disagrees: raw [0, k, 0] -> [0, 3, 0]
    assert weights.tolist() == pytest.approx([0.0, 3.0, 0.0], abs=1e-5)


def test_disagreement_ratio_matches_hand_kl() -> None:
    e = math.e
    student = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [2.0, 2.0, 2.0]])
    # KL(p || q) at T=1: sample 0 mirror image: 2 (e^2 - 1) / (e^2 + e + 1);
    # sample 1 p uniform: -log 3 - mean(log q) with log q = x - log(e + e^2 + e^3)
    k0 = 2 * (e**2 - 1) / (e**2 + e + 1)
    k1 = -math.log(3) - (2 - math.log(e + e**2 + e**3))
    weights = sample_weights("disagreement", student, teacher, None, temperature=1.0)
    assert weights is not None
    assert weights.tolist() == pytest.approx([2 * k0 / (k0 + k1), 2 * k1 / (k0 + k1)], rel=1e-5)


def test_identical_logits_disagreement_is_all_zero() -> None:
    logits = torch.randn(5, 4)
    weights = sample_weights("disagreement", logits, logits.clone(), None)
    assert weights is not None
    assert weights.tolist() == [0.0] * 5


def test_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown weighting"):
        sample_weights("loud", torch.zeros(1, 2), torch.zeros(1, 2), None)  # type: ignore[arg-type]

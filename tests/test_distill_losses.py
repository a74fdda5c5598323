"""Distillation losses against values worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from raydistill.distill import combine, feature_loss, hard_loss, scale_grad, soft_target_loss

E = math.e
# Logits [1, 2, 3] (student) vs [3, 2, 1] (teacher): the softened distributions are mirror images
# p = (a, b, c), q = (c, b, a), so KL(p || q) = (a - c) * log(a / c).
# At T=2: log(a / c) = (3 - 1) / 2 = 1 and a - c = (e - 1) / (e + sqrt(e) + 1) = 0.3201567.
KL_T2 = (E - 1) / (E + math.sqrt(E) + 1)  # 0.32015666782980640
# At T=1: log(a / c) = 2 and a - c = (e^2 - 1) / (e^2 + e + 1) = 0.5752104.
KL_T1 = 2 * (E**2 - 1) / (E**2 + E + 1)  # 1.1504207652088827
# Cross entropy of logits [1, 2, 3] with label 2: log(1 + e^-1 + e^-2).
CE_123_LABEL2 = math.log(1 + 1 / E + 1 / E**2)  # 0.4076059644443804

S = torch.tensor([[1.0, 2.0, 3.0]])
T = torch.tensor([[3.0, 2.0, 1.0]])


def test_soft_target_loss_hand_value_at_t2() -> None:
    loss = soft_target_loss(S, T, temperature=2.0)
    assert KL_T2 * 4 == pytest.approx(1.2806266713, abs=1e-9)
    assert loss.item() == pytest.approx(1.2806266713, rel=1e-5)


def test_soft_target_loss_hand_value_at_t1() -> None:
    assert soft_target_loss(S, T, temperature=1.0).item() == pytest.approx(1.1504207652, rel=1e-5)


def test_soft_target_loss_zero_for_equal_logits() -> None:
    logits = torch.tensor([[0.3, -1.2, 4.0], [2.0, 2.0, 2.0]])
    assert soft_target_loss(logits, logits.clone(), temperature=3.0).item() == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.mark.parametrize("temperature", [2.0, 5.0])
def test_soft_target_loss_scales_with_t_squared(temperature: float) -> None:
    # Logits scaled by T give the same softened distributions as the originals at T=1, so the
    # loss is exactly T^2 times the T=1 loss.
    loss = soft_target_loss(S * temperature, T * temperature, temperature)
    assert loss.item() == pytest.approx(temperature**2 * 1.1504207652, rel=1e-5)


def test_soft_target_loss_is_batch_mean() -> None:
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.0, 0.0, 0.0]])
    # (1.1504208 + 0) / 2
    assert soft_target_loss(student, teacher, 1.0).item() == pytest.approx(0.5752104, rel=1e-5)


def test_soft_target_loss_weighted_mean_divides_by_n() -> None:
    student = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 0.0]])
    # sample 2: p = softmax([0, 5, 0]), q uniform: KL = sum p log p + log 3.
    z = 2 + E**5
    kl2 = (E**5 / z) * math.log(E**5 / z) + 2 * (1 / z) * math.log(1 / z) + math.log(3)
    weights = torch.tensor([0.5, 1.5])
    expected = (0.5 * KL_T1 + 1.5 * kl2) / 2
    assert kl2 == pytest.approx(1.018742, abs=1e-6)
    assert expected == pytest.approx(1.051662, abs=1e-6)
    loss = soft_target_loss(student, teacher, 1.0, weights=weights)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    zero = soft_target_loss(student, teacher, 1.0, weights=torch.zeros(2))
    assert zero.item() == 0.0


def test_soft_target_loss_gradient_only_into_student() -> None:
    student = S.clone().requires_grad_(True)
    teacher = T.clone().requires_grad_(True)
    soft_target_loss(student, teacher, 2.0).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None
    # d/ds of T^2 KL = T (q - p): the gradient sums to zero over classes.
    assert student.grad.sum().item() == pytest.approx(0.0, abs=1e-6)


def test_soft_target_loss_errors() -> None:
    with pytest.raises(ValueError, match=r"\[1, 3\].*\[1, 4\]"):
        soft_target_loss(S, torch.zeros(1, 4), 2.0)
    with pytest.raises(ValueError, match="temperature"):
        soft_target_loss(S, T, 0.0)
    with pytest.raises(ValueError, match="weights"):
        soft_target_loss(S, T, 1.0, weights=torch.ones(2))


def test_hard_loss_hand_values() -> None:
    assert hard_loss(torch.zeros(1, 3), torch.tensor([0])).item() == pytest.approx(math.log(3))
    assert hard_loss(S, torch.tensor([2])).item() == pytest.approx(0.4076059644, rel=1e-6)
    assert CE_123_LABEL2 == pytest.approx(0.4076059644, abs=1e-9)
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([2, 1])
    assert hard_loss(logits, labels).item() == pytest.approx(
        (CE_123_LABEL2 + math.log(3)) / 2, rel=1e-6
    )
    weighted = hard_loss(logits, labels, weights=torch.tensor([2.0, 0.0]))
    assert weighted.item() == pytest.approx(2 * CE_123_LABEL2 / 2, rel=1e-6)


def test_feature_loss_mse() -> None:
    student = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    teacher = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    # (1 + 4 + 4 + 0) / 4
    assert feature_loss(student, teacher).item() == pytest.approx(2.25)
    with pytest.raises(ValueError, match=r"\[2, 2\].*\[2, 3\]"):
        feature_loss(student, torch.zeros(2, 3))


def test_scale_grad() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = scale_grad(x, 0.5)
    assert torch.equal(y, x.detach())
    (3 * y).sum().backward()
    assert x.grad is not None
    assert x.grad.tolist() == [1.5, 1.5, 1.5]

    x.grad = None
    (x * scale_grad(x, 2.0)).sum().backward()
    # d/dx of x * g(x) with g' scaled by 2: x + 2x = 3x
    assert x.grad.tolist() == [3.0, -6.0, 9.0]

    x.grad = None
    scale_grad(x, 0.0).sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 0.0]

    assert scale_grad(x, 1.0) is x


def test_combine() -> None:
    soft, hard = torch.tensor(2.0), torch.tensor(4.0)
    assert combine(soft, hard, 0.25).item() == pytest.approx(0.5 + 3.0)
    assert combine(soft, hard, 1.0).item() == pytest.approx(2.0)
    assert combine(soft, hard, 0.0).item() == pytest.approx(4.0)
    total = combine(soft, hard, 0.25, feature=torch.tensor(10.0), feature_weight=0.1)
    assert total.item() == pytest.approx(3.5 + 1.0)

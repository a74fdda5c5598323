"""Decoupled KD, attention transfer and cosine feature matching against values worked out by hand
(closed forms, or explicit loops over plain Python floats), and wired into the Distiller."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from raydistill.config import JobError, load_job
from raydistill.distill import (
    ConvAdapter,
    Distiller,
    attention_loss,
    attention_map,
    cosine_feature_loss,
    dkd_loss,
    dkd_terms,
    hard_loss,
    soft_target_loss,
)

E = math.e
# Student logits [1, 2, 3], teacher [3, 2, 1], target class 0, T = 1.
# Teacher's target probability A = e^3 / (e^3 + e^2 + e) = e^2 / (1 + e + e^2); the student's is
# B = 1 / (1 + e + e^2), so log(A / B) = 2 and log((1 - A) / (1 - B)) = log(1 / e) = -1:
# TCKD = 2A - (1 - A) = 3A - 1.
A = E**2 / (1 + E + E**2)
TCKD_HAND = 3 * A - 1  # 0.9957229
# Non-target classes {1, 2}: teacher (e^2, e) -> (e/(e+1), 1/(e+1)), student the mirror image,
# so NCKD = (a - c) * log(a / c) with log(a / c) = 1: (e - 1) / (e + 1) = tanh(1/2).
NCKD_HAND = (E - 1) / (E + 1)  # 0.4621172
KD_T1 = 2 * (E**2 - 1) / (E**2 + E + 1)  # classic KD of the same pair, 1.1504208

S = torch.tensor([[1.0, 2.0, 3.0]])
T = torch.tensor([[3.0, 2.0, 1.0]])


def _softmax(values: list[float], temperature: float) -> list[float]:
    exps = [math.exp(v / temperature) for v in values]
    return [x / sum(exps) for x in exps]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True) if pi > 0)


def _dkd_by_loops(
    student: np.ndarray, teacher: np.ndarray, labels: np.ndarray, t: float, a: float, b: float
) -> float:
    """DKD from its definition, one sample and one class at a time."""
    total = 0.0
    for s_row, t_row, y in zip(student.tolist(), teacher.tolist(), labels.tolist(), strict=True):
        p_s, p_t = _softmax(s_row, t), _softmax(t_row, t)
        tckd = _kl([p_t[y], 1 - p_t[y]], [p_s[y], 1 - p_s[y]])
        rest_s = [p / (1 - p_s[y]) for j, p in enumerate(p_s) if j != y]
        rest_t = [p / (1 - p_t[y]) for j, p in enumerate(p_t) if j != y]
        total += t * t * (a * tckd + b * _kl(rest_t, rest_s))
    return total / len(labels)


# ---------------------------------------------------------------- DKD


def test_dkd_terms_hand_values() -> None:
    assert TCKD_HAND == pytest.approx(0.99572287, abs=1e-7)
    assert NCKD_HAND == pytest.approx(0.46211716, abs=1e-7)
    tckd, nckd = dkd_terms(S, T, torch.tensor([0]), temperature=1.0)
    assert tckd.item() == pytest.approx(TCKD_HAND, rel=1e-5)
    assert nckd.item() == pytest.approx(NCKD_HAND, rel=1e-5)
    # Zhao et al.'s decomposition: KD = TCKD + (1 - p_target_teacher) * NCKD
    assert TCKD_HAND + (1 - A) * NCKD_HAND == pytest.approx(KD_T1, rel=1e-9)
    assert soft_target_loss(S, T, 1.0).item() == pytest.approx(
        tckd.item() + (1 - A) * nckd.item(), rel=1e-5
    )


def test_dkd_loss_weights_each_term_and_scales_by_t_squared() -> None:
    labels = torch.tensor([0])
    assert dkd_loss(S, T, labels, 1.0, alpha=1.0, beta=0.0).item() == pytest.approx(
        TCKD_HAND, rel=1e-5
    )
    assert dkd_loss(S, T, labels, 1.0, alpha=0.0, beta=1.0).item() == pytest.approx(
        NCKD_HAND, rel=1e-5
    )
    # 2 * TCKD + 8 * NCKD
    assert dkd_loss(S, T, labels, 1.0, alpha=2.0, beta=8.0).item() == pytest.approx(
        5.6883830, rel=1e-5
    )
    # logits scaled by T soften to the same distributions as at T=1: exactly T^2 times more
    assert dkd_loss(S * 3, T * 3, labels, 3.0, alpha=2.0, beta=8.0).item() == pytest.approx(
        9 * 5.6883830, rel=1e-5
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dkd_loss_matches_loops_on_a_random_batch(temperature: float) -> None:
    rng = np.random.default_rng(7)
    student = rng.normal(size=(5, 4)) * 2
    teacher = rng.normal(size=(5, 4)) * 2
    labels = rng.integers(0, 4, size=5)
    want = _dkd_by_loops(student, teacher, labels, temperature, 1.5, 6.0)
    got = dkd_loss(
        torch.tensor(student, dtype=torch.float32),
        torch.tensor(teacher, dtype=torch.float32),
        torch.tensor(labels),
        temperature,
        alpha=1.5,
        beta=6.0,
    )
    assert got.item() == pytest.approx(want, rel=1e-4)


def test_dkd_loss_weighted_mean_and_zero_for_equal_logits() -> None:
    student = torch.tensor([[1.0, 2.0, 3.0], [0.5, 0.5, -1.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0], [0.5, 0.5, -1.0]])  # row 2 equals the student
    labels = torch.tensor([0, 1])
    weights = torch.tensor([1.5, 0.5])
    # (1.5 * (TCKD + NCKD) + 0.5 * 0) / 2
    got = dkd_loss(student, teacher, labels, 1.0, alpha=1.0, beta=1.0, weights=weights)
    assert got.item() == pytest.approx(0.75 * (TCKD_HAND + NCKD_HAND), rel=1e-5)
    same = dkd_loss(teacher, teacher.clone(), labels, 2.0)
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_is_finite_for_a_confident_teacher_and_trains_only_the_student() -> None:
    student = torch.tensor([[0.0, 1.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[200.0, 0.0, 0.0]], requires_grad=True)
    loss = dkd_loss(student, teacher, torch.tensor([0]), 1.0)
    loss.backward()
    assert math.isfinite(loss.item())
    assert student.grad is not None and torch.isfinite(student.grad).all()
    assert teacher.grad is None


def test_dkd_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=r"labels \[2\]"):
        dkd_terms(S, T, torch.tensor([0, 1]), 1.0)
    with pytest.raises(ValueError, match="C >= 2"):
        dkd_terms(torch.zeros(2, 1), torch.zeros(2, 1), torch.tensor([0, 0]), 1.0)
    with pytest.raises(ValueError, match="temperature"):
        dkd_terms(S, T, torch.tensor([0]), 0.0)
    with pytest.raises(ValueError, match=">= 0"):
        dkd_loss(S, T, torch.tensor([0]), 1.0, alpha=-1.0)


# ---------------------------------------------------------------- attention transfer


def test_attention_map_and_loss_hand_values() -> None:
    # student: one channel [[1, 0], [0, 0]] -> map (1, 0, 0, 0)
    student = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # teacher: channels [[1, 1], [0, 0]] and [[0, -1], [0, 0]] -> sum of squares (1, 2, 0, 0),
    # normalised (1, 2, 0, 0) / sqrt(5)
    teacher = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, -1.0], [0.0, 0.0]]]])
    root5 = math.sqrt(5)
    assert attention_map(teacher)[0].tolist() == pytest.approx([1 / root5, 2 / root5, 0, 0])
    # |(1, 0) - (1, 2)/sqrt5|^2 = (1 - 1/sqrt5)^2 + 4/5 = 2 - 2/sqrt5
    assert attention_loss(student, teacher).item() == pytest.approx(2 - 2 / root5, rel=1e-6)
    # p = 1: teacher map (1, 2, 0, 0) too (|1| + |0|, |1| + |-1|), same distance
    assert attention_loss(student, teacher, p=1.0).item() == pytest.approx(2 - 2 / root5, 1e-6)
    # one channel [[2, -1], [0, 0]]: p=1 gives (2, 1, 0, 0)/sqrt(5), p=2 (4, 1, 0, 0)/sqrt(17)
    single = torch.tensor([[[[2.0, -1.0], [0.0, 0.0]]]])
    assert attention_map(single, p=1.0)[0].tolist() == pytest.approx([2 / root5, 1 / root5, 0, 0])
    root17 = math.sqrt(17)
    assert attention_map(single)[0].tolist() == pytest.approx([4 / root17, 1 / root17, 0, 0])


def test_attention_loss_matches_loops_on_random_maps() -> None:
    rng = np.random.default_rng(3)
    s = rng.normal(size=(3, 2, 3, 4))
    t = rng.normal(size=(3, 5, 3, 4))
    total = 0.0
    for i in range(3):
        q_s = [sum(abs(s[i, c, h, w]) ** 3 for c in range(2)) for h in range(3) for w in range(4)]
        q_t = [sum(abs(t[i, c, h, w]) ** 3 for c in range(5)) for h in range(3) for w in range(4)]
        n_s, n_t = math.sqrt(sum(v * v for v in q_s)), math.sqrt(sum(v * v for v in q_t))
        total += sum((a / n_s - b / n_t) ** 2 for a, b in zip(q_s, q_t, strict=True))
    got = attention_loss(torch.tensor(s), torch.tensor(t), p=3.0)
    assert got.item() == pytest.approx(total / 3, rel=1e-5)


def test_attention_loss_ignores_scale_and_channel_order() -> None:
    feature = torch.randn(2, 6, 5, 5)
    assert attention_loss(feature * 7.0, feature[:, [5, 0, 3, 1, 2, 4]]).item() == pytest.approx(
        0.0, abs=1e-6
    )
    with pytest.raises(ValueError, match="spatial"):
        attention_loss(torch.randn(2, 3, 4, 4), torch.randn(2, 3, 2, 2))
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        attention_loss(torch.randn(2, 3), torch.randn(2, 3))


# ---------------------------------------------------------------- cosine


def test_cosine_feature_loss_hand_values() -> None:
    student = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 0.0]])
    teacher = torch.tensor([[0.0, 1.0], [2.0, 2.0], [1.0, 1.0]])
    # (1 + 0 + (1 - 1/sqrt2)) / 3
    want = (1 + 0 + (1 - 1 / math.sqrt(2))) / 3
    assert cosine_feature_loss(student, teacher).item() == pytest.approx(want, rel=1e-6)
    # token sequences [N, L, D] are compared per token: tokens 1 and 0 of the first example
    tokens_s = torch.tensor([[[1.0, 0.0], [1.0, 0.0]]])
    tokens_t = torch.tensor([[[-3.0, 0.0], [5.0, 0.0]]])
    assert cosine_feature_loss(tokens_s, tokens_t).item() == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        cosine_feature_loss(student, teacher[:, :1])


# ---------------------------------------------------------------- in the Distiller


def _fixed_logits(values: list[float]) -> nn.Linear:
    model = nn.Linear(2, len(values))
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor(values))
    return model


def test_distiller_dkd_replaces_the_soft_term() -> None:
    distiller = Distiller(
        _fixed_logits([1.0, 2.0, 3.0]),
        _fixed_logits([3.0, 2.0, 1.0]),
        temperature=1.0,
        alpha=0.25,
        method="dkd",
        dkd_alpha=2.0,
        dkd_beta=8.0,
    )
    result = distiller.step(torch.randn(2, 2), torch.tensor([0, 0]))
    assert result.soft.item() == pytest.approx(2 * TCKD_HAND + 8 * NCKD_HAND, rel=1e-5)
    ce = math.log(1 + E + E**2)  # logits [1, 2, 3], label 0
    assert result.hard.item() == pytest.approx(ce, rel=1e-5)
    assert result.total.item() == pytest.approx(
        0.25 * (2 * TCKD_HAND + 8 * NCKD_HAND) + 0.75 * ce, rel=1e-5
    )
    # the keywords are checked by the job schema's distill section: one definition of the choices
    with pytest.raises(ValueError, match=r"Distiller: method: Input should be 'kd' or 'dkd'"):
        Distiller(nn.Linear(2, 3), method="fitnet")  # type: ignore[arg-type]


class _TinyCNN(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, channels, 3, stride=stride, padding=1), nn.ReLU())
        self.head = nn.Linear(channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_distiller_attention_transfer_resizes_without_projection() -> None:
    torch.manual_seed(0)
    student, teacher = _TinyCNN(3, stride=2), _TinyCNN(8, stride=1)  # 3x4x4 vs 8x8x8 on 8x8
    distiller = Distiller(
        student,
        teacher,
        feature_layers=[("body.1", "body.1")],
        feature_weight=1.0,
        feature_loss="at",
        alpha=0.5,
    )
    distiller.build_adapters(torch.randn(2, 1, 8, 8))
    adapter = distiller.adapters["body__1"]
    assert isinstance(adapter, ConvAdapter) and isinstance(adapter.proj, nn.Identity)
    assert sum(p.numel() for p in adapter.parameters()) == 0
    x, labels = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    result = distiller.step(x, labels)
    # the same value from the raw features, upsampled the way the adapter does it
    with torch.no_grad():
        s_map = nn.functional.interpolate(
            student.body(x), size=(8, 8), mode="bilinear", align_corners=False
        )
        want = attention_loss(s_map, teacher.body(x))
    assert result.feature.item() == pytest.approx(want.item(), rel=1e-5)
    result.total.backward()
    assert student.body[0].weight.grad is not None
    assert student.body[0].weight.grad.abs().sum() > 0
    assert result.total.item() == pytest.approx(
        0.5 * result.soft.item() + 0.5 * hard_loss(student(x), labels).item() + want.item(),
        rel=1e-5,
    )


def test_attention_transfer_refuses_vector_features() -> None:
    distiller = Distiller(
        _TinyCNN(3, 2), _TinyCNN(8, 1), feature_layers=[("body.1", "head")], feature_loss="at"
    )
    with pytest.raises(ValueError, match=r"'at' needs feature maps \(C, H, W\)"):
        distiller.build_adapters(torch.randn(2, 1, 8, 8))


def test_distiller_cosine_features() -> None:
    torch.manual_seed(1)
    student, teacher = _TinyCNN(8, stride=1), _TinyCNN(8, stride=1)
    distiller = Distiller(
        student, teacher, feature_layers=["body.1"], feature_loss="cosine", feature_weight=2.0
    )
    distiller.build_adapters(torch.randn(1, 1, 8, 8))
    x = torch.randn(3, 1, 8, 8)
    result = distiller.step(x, torch.tensor([0, 1, 2]))
    with torch.no_grad():
        want = cosine_feature_loss(student.body(x), teacher.body(x))  # equal shapes: Identity
    assert result.feature.item() == pytest.approx(want.item(), rel=1e-5)


# ---------------------------------------------------------------- the job schema


def test_job_options(write_job) -> None:
    job = load_job(
        write_job(
            {
                "distill.method": "dkd",
                "distill.dkd": {"alpha": 0.5, "beta": 4.0},
                "distill.feature_loss": "at",
                "distill.attention_p": 1.0,
            }
        )
    )
    assert job.distill.method == "dkd"
    assert (job.distill.dkd.alpha, job.distill.dkd.beta) == (0.5, 4.0)
    assert (job.distill.feature_loss, job.distill.attention_p) == ("at", 1.0)
    defaults = load_job(write_job({}, name="plain"))
    assert defaults.distill.method == "kd" and defaults.distill.feature_loss == "mse"
    with pytest.raises(JobError, match=r"distill\.method: Input should be 'kd' or 'dkd'"):
        load_job(write_job({"distill.method": "fitnet"}, name="bad1"))
    with pytest.raises(JobError, match=r"distill\.dkd\.beta: .*greater than or equal to 0"):
        load_job(write_job({"distill.dkd": {"beta": -1}}, name="bad2"))

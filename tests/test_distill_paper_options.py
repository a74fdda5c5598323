"""Methods as their papers' code defines them, as options, against values worked out by hand:
DKD with its warm-up and its own CE weight (mdistiller), and attention transfer at the authors'
scale (mean over positions, the larger map pooled down). Today's defaults stay as they were."""

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
    attention_loss_reference,
    attention_map,
)

E = math.e
# Student logits [1, 2, 3], teacher [3, 2, 1], target class 0, T = 1 (see test_distill_methods):
A = E**2 / (1 + E + E**2)
TCKD_HAND = 3 * A - 1
NCKD_HAND = (E - 1) / (E + 1)
CE_HAND = math.log(1 + E + E**2)
ROOT5, ROOT17 = math.sqrt(5), math.sqrt(17)


def _fixed_logits(values: list[float]) -> nn.Linear:
    model = nn.Linear(2, len(values))
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor(values))
    return model


# ---------------------------------------------------------------- DKD as in mdistiller


def test_dkd_warmup_and_ce_weight_follow_mdistiller() -> None:
    # mdistiller: CE_WEIGHT * CE + min(epoch / WARMUP, 1) * DKD, epochs counted from 1
    distiller = Distiller(
        _fixed_logits([1.0, 2.0, 3.0]),
        _fixed_logits([3.0, 2.0, 1.0]),
        temperature=1.0,
        alpha=1.0,
        method="dkd",
        dkd_alpha=1.0,
        dkd_beta=8.0,
        dkd_warmup=4,
        dkd_ce_weight=1.0,
        total_epochs=10,
    )
    dkd = TCKD_HAND + 8 * NCKD_HAND  # 4.6926566
    x, labels = torch.randn(2, 2), torch.tensor([0, 0])
    for epoch, ramp in [(0, 0.25), (1, 0.5), (2, 0.75), (3, 1.0), (9, 1.0)]:
        distiller.set_epoch(epoch)
        out = distiller.step(x, labels)
        assert out.soft.item() == pytest.approx(dkd, rel=1e-5)  # the term itself, unramped
        assert out.total.item() == pytest.approx(CE_HAND + ramp * dkd, rel=1e-5), epoch


def test_dkd_ce_weight_replaces_one_minus_alpha_and_alpha_still_scales_dkd() -> None:
    common = {"temperature": 1.0, "method": "dkd", "dkd_alpha": 2.0, "dkd_beta": 8.0}
    student, teacher = _fixed_logits([1.0, 2.0, 3.0]), _fixed_logits([3.0, 2.0, 1.0])
    dkd = 2 * TCKD_HAND + 8 * NCKD_HAND
    x, labels = torch.randn(2, 2), torch.tensor([0, 0])
    weighted = Distiller(student, teacher, alpha=0.25, dkd_ce_weight=0.4, **common)
    assert weighted.step(x, labels).total.item() == pytest.approx(0.25 * dkd + 0.4 * CE_HAND, 1e-5)
    # the default keeps the job's mix, full weight from the first epoch (figures unchanged)
    default = Distiller(student, teacher, alpha=0.25, total_epochs=40, **common)
    assert default.step(x, labels).total.item() == pytest.approx(0.25 * dkd + 0.75 * CE_HAND, 1e-5)


def test_dkd_options_in_the_job(write_job) -> None:
    job = load_job(
        write_job({"distill.method": "dkd", "distill.dkd": {"warmup": 20, "ce_weight": 1.0}})
    )
    assert (job.distill.dkd.warmup, job.distill.dkd.ce_weight) == (20, 1.0)
    defaults = load_job(write_job({}, name="plain")).distill.dkd
    assert (defaults.warmup, defaults.ce_weight) == (0, None)
    with pytest.raises(JobError, match=r"distill\.dkd\.ce_weight: .*greater than or equal to 0"):
        load_job(write_job({"distill.dkd": {"ce_weight": -1}}, name="bad"))


# ---------------------------------------------------------------- attention transfer, reference


def test_reference_attention_loss_is_the_mean_over_positions() -> None:
    student = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    teacher = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]], [[0.0, -1.0], [0.0, 0.0]]]])
    # |(1, 0, 0, 0) - (1, 2, 0, 0)/sqrt5|^2 = 2 - 2/sqrt5, over 4 positions
    assert attention_loss_reference(student, teacher).item() == pytest.approx(
        (2 - 2 / ROOT5) / 4, rel=1e-6
    )
    rng = np.random.default_rng(5)
    s, t = torch.tensor(rng.normal(size=(3, 2, 3, 5))), torch.tensor(rng.normal(size=(3, 4, 3, 5)))
    assert attention_loss_reference(s, t, p=3.0).item() == pytest.approx(
        attention_loss(s, t, p=3.0).item() / 15, rel=1e-6
    )


def test_reference_attention_pools_the_larger_map_down_before_squaring() -> None:
    # teacher 4x4, one channel: blocks [[1, 3], [1, 3]] (mean 2) and ones (mean 1) on top,
    # zeros below -> pooled [[2, 1], [0, 0]] -> squares (4, 1, 0, 0) / sqrt17
    block = [[1.0, 3.0, 1.0, 1.0], [1.0, 3.0, 1.0, 1.0], [0.0] * 4, [0.0] * 4]
    teacher = torch.tensor([[block]])
    student = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # |(1, 0, 0, 0) - (4, 1, 0, 0)/sqrt17|^2 = 2 - 8/sqrt17, over the 4 positions of 2x2
    want = (2 - 8 / ROOT17) / 4
    assert attention_loss_reference(student, teacher).item() == pytest.approx(want, rel=1e-6)
    # either side may be the larger one; squaring before pooling would give (5, 1, 0, 0)
    assert attention_loss_reference(teacher, student).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="batch"):
        attention_loss_reference(torch.zeros(2, 1, 2, 2), torch.zeros(3, 1, 2, 2))


class _TinyCNN(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, channels, 3, stride=stride, padding=1), nn.ReLU())
        self.head = nn.Linear(channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


def test_distiller_reference_attention_pools_the_teacher_not_upsamples_the_student() -> None:
    torch.manual_seed(0)
    student, teacher = _TinyCNN(3, stride=2), _TinyCNN(8, stride=1)  # 3x4x4 vs 8x8x8 on 8x8
    distiller = Distiller(
        student,
        teacher,
        feature_layers=[("body.1", "body.1")],
        feature_weight=1.0,
        feature_loss="at",
        attention_variant="reference",
        alpha=0.5,
    )
    distiller.build_adapters(torch.randn(2, 1, 8, 8))
    adapter = distiller.adapters["body__1"]
    assert isinstance(adapter, ConvAdapter) and adapter.resize == "none"
    assert sum(p.numel() for p in adapter.parameters()) == 0
    x = torch.randn(4, 1, 8, 8)
    result = distiller.step(x, torch.tensor([0, 1, 2, 0]))
    with torch.no_grad():
        s_map, t_map = student.body(x), teacher.body(x)
        pooled = t_map.reshape(4, 8, 4, 2, 4, 2).mean(dim=(3, 5))  # 2x2 blocks by hand
        want = (attention_map(s_map) - attention_map(pooled)).pow(2).mean()
    assert result.feature.item() == pytest.approx(want.item(), rel=1e-5)
    # the default ("sum") keeps today's scale: the student upsampled, summed over positions
    default = Distiller(
        student, teacher, feature_layers=[("body.1", "body.1")], feature_weight=1.0
    ).settings
    assert default.attention_variant == "sum"


def test_attention_variant_in_the_job(write_job) -> None:
    job = load_job(
        write_job({"distill.feature_loss": "at", "distill.attention_variant": "reference"})
    )
    assert job.distill.attention_variant == "reference"
    assert load_job(write_job({}, name="plain")).distill.attention_variant == "sum"
    with pytest.raises(JobError, match=r"distill\.attention_variant: Input should be 'sum' or"):
        load_job(write_job({"distill.attention_variant": "mean"}, name="bad"))

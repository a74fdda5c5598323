"""The Distiller's seams: terms looked up by name, keywords checked by the job schema (one
definition of every range), ``from_config``, and terms of weight 0 left out of the total."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
from torch import Tensor, nn

from raydistill.config import DistillConfig, JobError, load_job
from raydistill.distill import (
    ALIGNMENT_TERMS,
    FEATURE_TERMS,
    SOFT_TERMS,
    AttentionVariant,
    CrossModalDistiller,
    Distiller,
    FeatureLossKind,
    FeatureTerm,
    SoftTerm,
    combine,
    soft_target_loss,
    weighted_sum,
)
from raydistill.distill.losses import DistillMethod
from raydistill.distill.settings import KEYWORDS, keywords_from_settings
from raydistill.distill.terms import ATTENTION_VARIANTS

E = math.e
CE_123_LABEL0 = math.log(1 + E + E**2)  # cross entropy of logits [1, 2, 3] at label 0
KD_T1 = 2 * (E**2 - 1) / (E**2 + E + 1)  # KD of [1, 2, 3] against [3, 2, 1] at T = 1


def _fixed_logits(values: list[float]) -> nn.Linear:
    model = nn.Linear(2, len(values))
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor(values))
    return model


class _TinyCNN(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, channels, 3, stride=stride, padding=1), nn.ReLU())
        self.head = nn.Linear(channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x).mean(dim=(2, 3)))


# ---------------------------------------------------------------- registries


def test_every_schema_choice_has_exactly_one_registry_entry() -> None:
    assert set(SOFT_TERMS) == set(get_args(DistillMethod))
    assert set(FEATURE_TERMS) == set(get_args(FeatureLossKind))
    assert set(ATTENTION_VARIANTS) == set(get_args(AttentionVariant))
    assert set(ALIGNMENT_TERMS) <= set(get_args(FeatureLossKind))
    # the schema's choices are these names
    assert set(get_args(DistillConfig.model_fields["method"].annotation)) == set(SOFT_TERMS)
    assert set(get_args(DistillConfig.model_fields["feature_loss"].annotation)) == set(
        FEATURE_TERMS
    )


def test_the_distiller_calls_the_registered_terms(monkeypatch) -> None:
    calls: list[float] = []

    def soft(student, teacher, labels, temperature, weights, settings) -> Tensor:
        calls.append(temperature)
        return student.sum() * 0 + 7.0

    def feature(student, teacher, settings) -> Tensor:
        return student.sum() * 0 + 3.0

    monkeypatch.setitem(SOFT_TERMS, "kd", SoftTerm(soft, lambda s, a, e: (0.5, 0.25)))
    monkeypatch.setitem(FEATURE_TERMS, "mse", FeatureTerm(feature))
    torch.manual_seed(0)
    distiller = Distiller(
        _TinyCNN(4, 1), _TinyCNN(4, 1), temperature=3.0, feature_layers=["body.1"], feature_weight=2
    )
    distiller.build_adapters(torch.randn(1, 1, 4, 4))
    out = distiller.step(torch.randn(2, 1, 4, 4), torch.tensor([0, 1]))
    assert calls == [3.0]
    assert (out.soft.item(), out.feature.item()) == (7.0, 3.0)
    assert out.total.item() == pytest.approx(0.5 * 7.0 + 0.25 * out.hard.item() + 2 * 3.0)


# ---------------------------------------------------------------- one definition of the ranges


@pytest.mark.parametrize(
    ("keyword", "value", "job_key", "job_value"),
    [
        ("feature_weight", -1.0, "distill.feature_weight", -1.0),
        ("feature_grad_scale", -0.5, "distill.feature_grad_scale", -0.5),
        ("dkd_beta", -1.0, "distill.dkd.beta", -1.0),
        ("dkd_warmup", -2, "distill.dkd.warmup", -2),
        ("attention_p", 0.0, "distill.attention_p", 0.0),
        ("weighting", "loudness", "distill.weighting", "loudness"),
        ("attention_variant", "paper", "distill.attention_variant", "paper"),
    ],
)
def test_distiller_keywords_fail_as_the_job_field_does(
    write_job, keyword, value, job_key, job_value
) -> None:
    with pytest.raises(JobError) as job_error:
        load_job(write_job({job_key: job_value}))
    job_why = str(job_error.value).split(f"{job_key}: ", 1)[1]
    with pytest.raises(ValueError) as keyword_error:
        Distiller(nn.Linear(2, 3), **{keyword: value})
    field = job_key.removeprefix("distill.")
    assert str(keyword_error.value) == f"Distiller: {field}: {job_why}"


def test_schedule_ranges_are_the_schema_check(write_job) -> None:
    falling = {"kind": "step", "start": 1.0, "step": -1.0}
    with pytest.raises(JobError, match=r"distill\.temperature: must stay > 0, reaches -1"):
        load_job(write_job({"distill.temperature": falling, "train.epochs": 3}))
    with pytest.raises(ValueError, match=r"^distill\.temperature: must stay > 0, reaches -1$"):
        Distiller(nn.Linear(2, 3), temperature=falling, total_epochs=3)
    with pytest.raises(ValueError, match=r"^distill\.alpha: must stay within \[0, 1\], reaches 2"):
        Distiller(nn.Linear(2, 3), alpha=2.0)
    with pytest.raises(ValueError, match="total_epochs must be >= 1, got 0"):
        Distiller(nn.Linear(2, 3), total_epochs=0)


def test_keyword_table_covers_the_constructor() -> None:
    import inspect

    params = set(inspect.signature(Distiller.__init__).parameters)
    not_settings = {"self", "student", "teacher", "feature_layers", "total_epochs"}
    assert params - not_settings == set(KEYWORDS)


# ---------------------------------------------------------------- from_config


def test_from_config_matches_the_keywords_the_loop_unpacks(write_job) -> None:
    job = load_job(
        write_job(
            {
                "distill.method": "dkd",
                "distill.dkd": {"alpha": 0.5, "beta": 4.0, "warmup": 3, "ce_weight": 0.8},
                "distill.temperature": {"kind": "linear", "start": 4.0, "end": 2.0},
                "distill.alpha": 0.6,
                "distill.feature_weight": 0.3,
                "distill.feature_grad_scale": 0.5,
                "distill.weighting": "confidence",
                "distill.feature_loss": "at",
                "distill.attention_p": 1.5,
                "distill.attention_variant": "reference",
                "train.epochs": 5,
            }
        )
    )
    d = job.distill
    pairs = [("body.1", "body.1")]

    def models() -> tuple[nn.Module, nn.Module]:
        torch.manual_seed(0)
        return _TinyCNN(4, 2), _TinyCNN(6, 1)

    built = Distiller.from_config(d, *models(), total_epochs=5, feature_layers=pairs)
    # the keywords train/loop.py's build_distiller unpacks today
    by_hand = Distiller(
        *models(),
        temperature=d.temperature,
        alpha=d.alpha,
        feature_layers=pairs,
        feature_weight=d.feature_weight,
        feature_grad_scale=d.feature_grad_scale,
        weighting=d.weighting,
        total_epochs=5,
        method=d.method,
        dkd_alpha=d.dkd.alpha,
        dkd_beta=d.dkd.beta,
        dkd_warmup=d.dkd.warmup,
        dkd_ce_weight=d.dkd.ce_weight,
        feature_loss=d.feature_loss,
        attention_p=d.attention_p,
        attention_variant=d.attention_variant,
    )
    assert keywords_from_settings(built.settings) == keywords_from_settings(d)
    assert built.feature_pairs == pairs and built.total_epochs == 5
    x, labels = torch.randn(3, 1, 8, 8), torch.tensor([0, 1, 2])
    for distiller in (built, by_hand):
        distiller.build_adapters(x)
    for epoch in (0, 2, 4):
        built.set_epoch(epoch)
        by_hand.set_epoch(epoch)
        a, b = built.step(x, labels), by_hand.step(x, labels)
        assert a.as_floats() == b.as_floats()
        assert a.feature.item() > 0 and a.soft.item() > 0


def test_from_config_without_feature_layers_matches_none() -> None:
    distill = DistillConfig(feature_layers=["body.1"], feature_weight=1.0)
    built = Distiller.from_config(distill, _TinyCNN(4, 1), total_epochs=2)
    assert built.feature_pairs == [] and built.feature_weight == 1.0


def test_cross_modal_from_config_uses_the_modal_mapping() -> None:
    class Text(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.EmbeddingBag(20, 6)
            self.head = nn.Linear(6, 3)

        def forward(self, ids: Tensor) -> Tensor:
            return self.head(self.embed(ids))

    distill = DistillConfig(feature_loss="cosine", feature_weight=1.0, modal_mapping="mlp")
    built = CrossModalDistiller.from_config(
        distill, Text(), _TinyCNN(5, 1), total_epochs=3, feature_layers=[("embed", "body.1")]
    )
    built.build_adapters((torch.randint(0, 20, (2, 4)), torch.randn(2, 1, 6, 6)))
    net = built.adapters["embed"].net
    assert isinstance(net, nn.Sequential) and net[0].in_features == 5  # teacher width
    default = CrossModalDistiller.from_config(
        DistillConfig(feature_loss="cosine"),
        Text(),
        _TinyCNN(5, 1),
        total_epochs=3,
        feature_layers=[("embed", "body.1")],
    )
    assert default.mapping_kind == "linear"
    with pytest.raises(ValueError, match="aligns features"):
        CrossModalDistiller.from_config(distill, Text(), total_epochs=3)


# ---------------------------------------------------------------- weight 0: not computed


def test_weighted_sum_leaves_out_terms_of_weight_zero() -> None:
    nan = torch.tensor(float("nan"))
    assert weighted_sum([(0.5, torch.tensor(2.0)), (0.0, nan)]).item() == 1.0
    x = torch.tensor(3.0, requires_grad=True)
    none_left = weighted_sum([(0.0, x * 2), (0.0, nan)])
    none_left.backward()
    assert none_left.item() == 0.0 and x.grad is not None and x.grad.item() == 0.0
    assert combine(nan, torch.tensor(4.0), 0.0).item() == 4.0
    assert math.isnan(combine(nan, torch.tensor(4.0), 0.1).item())


def test_alpha_zero_skips_the_soft_term_and_a_bad_teacher_logit() -> None:
    distiller = Distiller(nn.Linear(2, 3), alpha=0.0, weighting="confidence")
    student = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[float("inf"), float("nan"), 0.0]])
    out = distiller.loss(student, torch.tensor([0]), teacher)
    assert out.total.item() == pytest.approx(CE_123_LABEL0, rel=1e-6)
    assert out.soft.item() == 0.0 and out.weights is None
    out.total.backward()
    assert student.grad is not None and torch.isfinite(student.grad).all()
    # the same teacher at alpha > 0 does poison the total: the skip is what saved it
    assert math.isnan(
        Distiller(nn.Linear(2, 3), alpha=0.5).loss(student, torch.tensor([0]), teacher).total.item()
    )


def test_feature_weight_zero_skips_the_features_but_keeps_the_adapters_in_the_graph() -> None:
    torch.manual_seed(0)
    distiller = Distiller(
        _TinyCNN(4, 2), feature_layers=["body.1"], alpha=0.5, temperature=1.0, feature_weight=0.0
    )
    distiller.build_adapters(
        student_shapes={"body.1": (4, 4, 4)}, teacher_shapes={"body.1": (8, 8, 8)}
    )
    x, labels = torch.randn(2, 1, 8, 8), torch.tensor([0, 1])
    logits, features = distiller(x)
    teacher_logits = torch.randn(2, 3)
    poisoned = {"body.1": torch.full((2, 8, 8, 8), float("nan"))}
    out = distiller.loss(logits, labels, teacher_logits, features, poisoned)
    want = 0.5 * soft_target_loss(logits, teacher_logits, 1.0) + 0.5 * out.hard
    assert out.feature.item() == 0.0
    assert out.total.item() == pytest.approx(want.item(), rel=1e-6)
    out.total.backward()
    adapter = distiller.adapters["body__1"].proj.weight
    assert adapter.grad is not None and torch.equal(adapter.grad, torch.zeros_like(adapter))
    # features are not even needed at weight 0
    assert distiller.loss(logits.detach(), labels, teacher_logits).total.item() == pytest.approx(
        want.item(), rel=1e-6
    )


def test_hard_weight_zero_leaves_the_cross_entropy_out_but_reports_it() -> None:
    student = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    teacher = torch.tensor([[3.0, 2.0, 1.0]])
    out = Distiller(nn.Linear(2, 3), temperature=1.0, alpha=1.0).loss(
        student, torch.tensor([0]), teacher
    )
    assert out.total.item() == pytest.approx(KD_T1, rel=1e-6)
    assert out.hard.item() == pytest.approx(CE_123_LABEL0, rel=1e-6)  # still reported (val_ce)
    (grad,) = torch.autograd.grad(out.total, student)
    (soft_grad,) = torch.autograd.grad(soft_target_loss(student, teacher, 1.0), student)
    torch.testing.assert_close(grad, soft_grad)
    # with DKD the CE weight is its own: 0 leaves only the DKD term
    dkd = Distiller(nn.Linear(2, 3), method="dkd", alpha=0.5, dkd_ce_weight=0.0, temperature=1.0)
    out = dkd.loss(student, torch.tensor([0]), teacher)
    assert out.total.item() == pytest.approx(0.5 * out.soft.item(), rel=1e-6)

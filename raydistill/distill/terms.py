"""The distillation terms by name.

:data:`SOFT_TERMS` holds one entry per ``distill.method`` (the term on the logits) and
:data:`FEATURE_TERMS` one per ``distill.feature_loss`` (how matched features are compared). A
new method is one function and one entry here, plus its name in
:data:`~raydistill.distill.losses.DistillMethod` or
:data:`~raydistill.distill.feature_losses.FeatureLossKind` (the job schema's choices; a test
checks that the two agree). Every term reads its options from the ``distill`` settings, a
:class:`~raydistill.config.DistillConfig`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor, nn

from raydistill.distill.adapters import ConvAdapter, build_adapter
from raydistill.distill.feature_losses import (
    attention_loss,
    attention_loss_reference,
    cosine_feature_loss,
    feature_loss,
)
from raydistill.distill.losses import dkd_loss, soft_target_loss

if TYPE_CHECKING:
    from raydistill.config.distill import DistillConfig

SoftLoss = Callable[[Tensor, Tensor, Tensor, float, "Tensor | None", "DistillConfig"], Tensor]
"""``(student_logits [N, C], teacher_logits [N, C], labels [N], temperature, weights [N] or
None, settings) -> scalar``."""
TermWeights = Callable[["DistillConfig", float, int], tuple[float, float]]
"""``(settings, alpha at this epoch, 0-based epoch) -> (soft weight, hard weight)``."""
FeatureLoss = Callable[[Tensor, Tensor, "DistillConfig"], Tensor]
"""``(adapted student feature, teacher feature, settings) -> scalar``."""
AdapterBuilder = Callable[[Sequence[int], Sequence[int], "DistillConfig"], nn.Module]
"""``(student shape, teacher shape, settings) -> adapter``; shapes exclude the batch."""


def mixed_weights(settings: DistillConfig, alpha: float, epoch: int) -> tuple[float, float]:
    """The job's mix: ``alpha`` on the soft term, ``1 - alpha`` on the hard term."""
    return alpha, 1 - alpha


@dataclass(frozen=True)
class SoftTerm:
    """A term on the logits and how it is weighed against the cross entropy."""

    loss: SoftLoss
    weights: TermWeights = mixed_weights


def default_adapter(
    student_shape: Sequence[int], teacher_shape: Sequence[int], settings: DistillConfig
) -> nn.Module:
    """:func:`~raydistill.distill.adapters.build_adapter`: the student feature mapped to the
    teacher's shape."""
    return build_adapter(student_shape, teacher_shape)


@dataclass(frozen=True)
class FeatureTerm:
    """A comparison of matched features and the adapter it needs on the student side."""

    loss: FeatureLoss
    adapter: AdapterBuilder = default_adapter


# ---------------------------------------------------------------- soft terms


def _kd(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor,
    temperature: float,
    weights: Tensor | None,
    settings: DistillConfig,
) -> Tensor:
    return soft_target_loss(student, teacher, temperature, weights)


def _dkd(
    student: Tensor,
    teacher: Tensor,
    labels: Tensor,
    temperature: float,
    weights: Tensor | None,
    settings: DistillConfig,
) -> Tensor:
    return dkd_loss(
        student, teacher, labels, temperature, settings.dkd.alpha, settings.dkd.beta, weights
    )


def dkd_weights(settings: DistillConfig, alpha: float, epoch: int) -> tuple[float, float]:
    """DKD's weights: ``alpha * min((epoch + 1) / dkd.warmup, 1)`` on the DKD term (the epoch
    counted from 1, as in mdistiller, so the first epoch already learns from the teacher) and
    ``dkd.ce_weight`` (default ``1 - alpha``) on the cross entropy."""
    warmup = settings.dkd.warmup
    ramp = min((epoch + 1) / warmup, 1.0) if warmup > 0 else 1.0
    ce_weight = settings.dkd.ce_weight
    return alpha * ramp, (1 - alpha) if ce_weight is None else ce_weight


SOFT_TERMS: dict[str, SoftTerm] = {
    "kd": SoftTerm(_kd),
    "dkd": SoftTerm(_dkd, dkd_weights),
}


# ---------------------------------------------------------------- feature terms


def _mse(student: Tensor, teacher: Tensor, settings: DistillConfig) -> Tensor:
    return feature_loss(student, teacher)


def _cosine(student: Tensor, teacher: Tensor, settings: DistillConfig) -> Tensor:
    return cosine_feature_loss(student, teacher)


ATTENTION_VARIANTS: dict[str, Callable[[Tensor, Tensor, float], Tensor]] = {
    "sum": attention_loss,
    "reference": attention_loss_reference,
}
"""``distill.attention_variant`` -> its loss; only ``sum`` needs maps of one size (the adapter
resizes the student's), ``reference`` pools the larger map down itself."""


def _attention(student: Tensor, teacher: Tensor, settings: DistillConfig) -> Tensor:
    return ATTENTION_VARIANTS[settings.attention_variant](student, teacher, settings.attention_p)


def _attention_adapter(
    student_shape: Sequence[int], teacher_shape: Sequence[int], settings: DistillConfig
) -> nn.Module:
    if len(student_shape) != 3 or len(teacher_shape) != 3:
        raise ValueError(
            f"feature_loss 'at' needs feature maps (C, H, W) on both sides, got student "
            f"{tuple(student_shape)} and teacher {tuple(teacher_shape)}"
        )
    # Attention maps are summed over channels, so only the spatial size may have to match: no
    # 1x1 projection (which would let the adapter, not the student, learn the attention).
    c, h, w = (int(d) for d in student_shape)
    size = (h, w)
    if settings.attention_variant == "sum":
        size = (int(teacher_shape[1]), int(teacher_shape[2]))
    return ConvAdapter(c, c, (h, w), size)


FEATURE_TERMS: dict[str, FeatureTerm] = {
    "mse": FeatureTerm(_mse),
    "cosine": FeatureTerm(_cosine),
    "at": FeatureTerm(_attention, _attention_adapter),
}

"""The loss terms of knowledge distillation.

All losses are computed in float32 (inputs under autocast may be half precision) and return a
scalar tensor in nats (soft and hard terms) or squared feature units (feature term).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_weights(weights: Tensor | None, n: int) -> Tensor | None:
    if weights is None:
        return None
    if weights.shape != (n,):
        raise ValueError(
            f"weights must have shape [{n}] (one per sample), got {list(weights.shape)}"
        )
    return weights.float()


def _weighted_mean(per_sample: Tensor, weights: Tensor | None) -> Tensor:
    if weights is None:
        return per_sample.mean()
    # Weights are normalised to mean 1 upstream, so dividing by N (not sum(w)) keeps an all-zero
    # weight batch at a zero loss instead of 0/0.
    return (weights.to(per_sample.device) * per_sample).sum() / per_sample.shape[0]


def soft_target_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    temperature: float,
    weights: Tensor | None = None,
) -> Tensor:
    """Hinton et al.'s soft-target loss.

    ``T**2 * KL(softmax(teacher / T) || softmax(student / T))`` per sample (summed over classes,
    in nats), then the mean over the batch, or ``sum(w_i * kl_i) / N`` with per-sample
    ``weights`` [N] (expected to have mean 1). The ``T**2`` factor keeps the gradient magnitude
    independent of the temperature.

    Args:
        student_logits: [N, C] raw student scores.
        teacher_logits: [N, C] raw teacher scores (no gradient flows into them).
        temperature: softening temperature T > 0 (dimensionless).
        weights: optional [N] per-sample weights.

    Returns:
        A scalar tensor (float32).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {list(student_logits.shape)} and teacher logits "
            f"{list(teacher_logits.shape)} differ in shape"
        )
    if student_logits.ndim != 2:
        raise ValueError(f"logits must be [N, C], got {list(student_logits.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    weights = _check_weights(weights, student_logits.shape[0])
    log_q = F.log_softmax(student_logits.float() / temperature, dim=1)
    log_p = F.log_softmax(teacher_logits.detach().float().to(log_q.device) / temperature, dim=1)
    kl = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)
    return _weighted_mean(kl, weights) * temperature**2


def hard_loss(student_logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Cross entropy against the true labels, in nats.

    Args:
        student_logits: [N, C] raw student scores.
        labels: [N] integer class indices.
        weights: optional [N] per-sample weights (``sum(w_i * ce_i) / N``).

    Returns:
        The mean (or weighted mean) cross entropy, a scalar tensor (float32).
    """
    weights = _check_weights(weights, student_logits.shape[0])
    ce = F.cross_entropy(
        student_logits.float(), labels.to(student_logits.device).long(), reduction="none"
    )
    return _weighted_mean(ce, weights)


def feature_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """Mean squared error between an (adapted) student feature and the teacher's feature.

    Args:
        student_feature: [N, *S] student activations, already mapped to the teacher's shape.
        teacher_feature: [N, *S] teacher activations (no gradient flows into them).

    Returns:
        The mean over all elements, a scalar tensor (float32, squared feature units).
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"student feature {list(student_feature.shape)} and teacher feature "
            f"{list(teacher_feature.shape)} differ in shape"
        )
    target = teacher_feature.detach().float().to(student_feature.device)
    return F.mse_loss(student_feature.float(), target)


class _ScaleGrad(torch.autograd.Function):
    """Identity in the forward pass; multiplies the incoming gradient by ``scale``."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale  # type: ignore[attr-defined]
        return x.view_as(x)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor
    ) -> tuple[Tensor, None]:
        return grad_output * ctx.scale, None  # type: ignore[attr-defined]


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """``x`` unchanged (any shape), with the gradient flowing back through it times ``scale``.

    Used to let the feature term train the adapter at full strength while limiting (``scale < 1``)
    or cutting (``scale == 0``) its pull on the student's backbone. ``scale == 1`` returns ``x``
    itself.
    """
    if scale == 1:
        return x
    return _ScaleGrad.apply(x, float(scale))


def combine(
    soft: Tensor,
    hard: Tensor,
    alpha: float,
    feature: Tensor | None = None,
    feature_weight: float = 0.0,
) -> Tensor:
    """``alpha * soft + (1 - alpha) * hard + feature_weight * feature`` (scalars).

    ``alpha`` in [0, 1] weighs the soft (teacher) term against the hard (label) term;
    ``feature`` is left out when None.
    """
    total = alpha * soft + (1 - alpha) * hard
    if feature is not None:
        # Added even when feature_weight == 0 so that the adapters stay in the autograd graph:
        # DDP errors on parameters that get no gradient.
        total = total + feature_weight * feature
    return total

"""The loss terms of knowledge distillation.

All losses are computed in float32 (inputs under autocast may be half precision) and return a
scalar tensor in nats. The feature terms are in :mod:`raydistill.distill.feature_losses`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

DistillMethod = Literal["kd", "dkd"]
"""The logit term: ``kd`` (Hinton's soft targets) or ``dkd`` (decoupled KD)."""


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


def labelled_weights(labelled: Tensor | None) -> Tensor | None:
    """Per-sample weights [N] that turn :func:`hard_loss`'s weighted mean into the mean over
    the rows ``labelled`` (bool [N]) marks, and into 0 for a batch with none; None for None."""
    if labelled is None:
        return None
    mask = labelled.float()
    return mask * (mask.numel() / mask.sum().clamp_min(1.0))


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


def weighted_sum(terms: Sequence[tuple[float, Tensor]]) -> Tensor:
    """``sum(w * term)`` over the terms whose weight is not 0 (scalars).

    A term of weight 0 is left out rather than multiplied by 0, so that a non-finite value in a
    term that is switched off (a teacher logit at alpha 0) cannot turn the total into NaN. With
    every weight 0 the result is ``0 * first term``, which keeps the autograd graph.
    """
    if not terms:
        raise ValueError("weighted_sum needs at least one term")
    kept = [weight * term for weight, term in terms if weight != 0]
    if not kept:
        return terms[0][1] * 0.0
    total = kept[0]
    for part in kept[1:]:
        total = total + part
    return total


def combine(
    soft: Tensor,
    hard: Tensor,
    alpha: float,
    feature: Tensor | None = None,
    feature_weight: float = 0.0,
) -> Tensor:
    """``alpha * soft + (1 - alpha) * hard + feature_weight * feature`` (scalars).

    ``alpha`` in [0, 1] weighs the soft (teacher) term against the hard (label) term;
    ``feature`` is left out when None. Terms of weight 0 are left out (:func:`weighted_sum`).
    """
    terms = [(1 - alpha, hard), (alpha, soft)]
    if feature is not None:
        terms.append((feature_weight, feature))
    return weighted_sum(terms)


# ---------------------------------------------------------------- decoupled KD (Zhao et al. 2022)


def dkd_terms(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float
) -> tuple[Tensor, Tensor]:
    """The two parts of decoupled knowledge distillation, per sample, in nats (without T^2).

    * TCKD: ``KL(b_t || b_s)`` between the binary distributions ``(p_target, 1 - p_target)`` of
      teacher and student at temperature T.
    * NCKD: ``KL(p_t' || p_s')`` between the distributions over the non-target classes only,
      renormalised (the softmax of the logits with the target class left out).

    Classic KD decomposes as ``KD = TCKD + (1 - p_target_teacher) * NCKD``; DKD weighs the two
    parts independently.

    Args:
        student_logits: [N, C] raw student scores (C >= 2).
        teacher_logits: [N, C] raw teacher scores (no gradient flows into them).
        labels: [N] integer class indices (the target classes).
        temperature: softening temperature T > 0.

    Returns:
        ``(tckd, nckd)``, each float32 [N].
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {list(student_logits.shape)} and teacher logits "
            f"{list(teacher_logits.shape)} differ in shape"
        )
    if student_logits.ndim != 2 or student_logits.shape[1] < 2:
        raise ValueError(f"logits must be [N, C] with C >= 2, got {list(student_logits.shape)}")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(
            f"labels {list(labels.shape)} do not match logits {list(student_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n, c = student_logits.shape
    s = student_logits.float() / temperature
    t = teacher_logits.detach().float().to(s.device) / temperature
    target = F.one_hot(labels.to(s.device).long(), c).bool()

    def split(z: Tensor) -> tuple[Tensor, Tensor]:
        # Log-space throughout: 1 - p_target underflows for a confident model.
        log_all = torch.logsumexp(z, dim=1)
        rest = z[~target].view(n, c - 1)
        log_rest = torch.logsumexp(rest, dim=1)
        binary = torch.stack([z[target] - log_all, log_rest - log_all], dim=1)  # [N, 2]
        return binary, F.log_softmax(rest, dim=1)  # [N, 2], [N, C-1]

    s_bin, s_rest = split(s)
    t_bin, t_rest = split(t)
    tckd = F.kl_div(s_bin, t_bin, reduction="none", log_target=True).sum(dim=1)
    nckd = F.kl_div(s_rest, t_rest, reduction="none", log_target=True).sum(dim=1)
    return tckd, nckd


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    temperature: float,
    alpha: float = 1.0,
    beta: float = 8.0,
    weights: Tensor | None = None,
) -> Tensor:
    """Decoupled KD: ``T**2 * (alpha * TCKD + beta * NCKD)`` (see :func:`dkd_terms`), the mean
    over the batch, or ``sum(w_i * dkd_i) / N`` with per-sample ``weights`` [N].

    ``alpha`` and ``beta`` (dimensionless, >= 0) are DKD's own weights (the paper's defaults:
    1 and 8), not the job's soft/hard ``alpha``.

    Args:
        student_logits: [N, C] raw student scores.
        teacher_logits: [N, C] raw teacher scores.
        labels: [N] integer class indices.
        temperature: T > 0.

    Returns:
        A scalar tensor (float32, nats).
    """
    if alpha < 0 or beta < 0:
        raise ValueError(f"dkd alpha and beta must be >= 0, got {alpha} and {beta}")
    weights = _check_weights(weights, student_logits.shape[0])
    tckd, nckd = dkd_terms(student_logits, teacher_logits, labels, temperature)
    return _weighted_mean(alpha * tckd + beta * nckd, weights) * temperature**2

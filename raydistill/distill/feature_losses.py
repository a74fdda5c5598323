"""The feature terms of knowledge distillation: how a student's (adapted) feature is compared
with the teacher's.

All losses are computed in float32 and return a scalar tensor; no gradient flows into the
teacher's feature.
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor

FeatureLossKind = Literal["mse", "at", "cosine"]
"""How matched features are compared: ``mse``, ``at`` (attention transfer, feature maps only)
or ``cosine`` (1 - cosine similarity)."""
AttentionVariant = Literal["sum", "reference"]
"""Attention transfer's scale: ``sum`` (:func:`attention_loss`, summed over positions, the
student's map resized to the teacher's) or ``reference`` (:func:`attention_loss_reference`, the
authors' code: averaged over positions, the larger map pooled down)."""


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


def attention_map(feature: Tensor, p: float = 2.0) -> Tensor:
    """Zagoruyko & Komodakis's spatial attention: ``sum_c |A_c|**p``, flattened and divided by
    its L2 norm.

    Args:
        feature: [N, C, H, W] activations.
        p: the exponent (> 0; the paper uses 2).

    Returns:
        [N, H*W] float32, each row of unit L2 norm (a zero map stays zero).
    """
    if feature.ndim != 4:
        raise ValueError(
            f"attention transfer needs feature maps [N, C, H, W], got {list(feature.shape)}"
        )
    if not p > 0:
        raise ValueError(f"attention exponent p must be > 0, got {p}")
    summed = feature.float().abs().pow(p).sum(dim=1).flatten(1)
    return F.normalize(summed, p=2.0, dim=1)


def attention_loss(student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0) -> Tensor:
    """Attention transfer: the squared L2 distance between the normalised attention maps of
    student and teacher (:func:`attention_map`), summed over positions, mean over the batch.

    Channel counts may differ; the spatial sizes must match (an adapter resizes the student's
    map). Because both maps are non-negative unit vectors, the value lies in [0, 2].

    Args:
        student_feature: [N, C_s, H, W].
        teacher_feature: [N, C_t, H, W] (no gradient flows into it).
        p: the exponent of :func:`attention_map`.

    Returns:
        A scalar tensor (float32, dimensionless).
    """
    if student_feature.ndim != 4 or teacher_feature.ndim != 4:
        raise ValueError(
            "attention transfer needs feature maps [N, C, H, W], got student "
            f"{list(student_feature.shape)} and teacher {list(teacher_feature.shape)}"
        )
    s_shape, t_shape = student_feature.shape, teacher_feature.shape
    if s_shape[0] != t_shape[0] or s_shape[2:] != t_shape[2:]:
        raise ValueError(
            f"student feature {list(s_shape)} and teacher feature {list(t_shape)} differ in "
            "batch or spatial size"
        )
    q_s = attention_map(student_feature, p)
    q_t = attention_map(teacher_feature.detach().to(student_feature.device), p)
    return (q_s - q_t).pow(2).sum(dim=1).mean()


def attention_loss_reference(
    student_feature: Tensor, teacher_feature: Tensor, p: float = 2.0
) -> Tensor:
    """Attention transfer as the authors' code computes it (Zagoruyko & Komodakis): the squared
    distance between the normalised attention maps (:func:`attention_map`), averaged over
    positions and the batch, i.e. :func:`attention_loss` / (H*W).

    Maps of different spatial sizes are compared at the smaller size: the larger feature map is
    average-pooled down to it (per dimension) before its attention map is taken, as in
    RepDistiller's implementation. Channel counts may differ.

    Args:
        student_feature: [N, C_s, H_s, W_s].
        teacher_feature: [N, C_t, H_t, W_t] (no gradient flows into it).
        p: the exponent of :func:`attention_map`.

    Returns:
        A scalar tensor (float32, dimensionless, in [0, 2 / (H*W)]).
    """
    if student_feature.ndim != 4 or teacher_feature.ndim != 4:
        raise ValueError(
            "attention transfer needs feature maps [N, C, H, W], got student "
            f"{list(student_feature.shape)} and teacher {list(teacher_feature.shape)}"
        )
    if student_feature.shape[0] != teacher_feature.shape[0]:
        raise ValueError(
            f"student feature {list(student_feature.shape)} and teacher feature "
            f"{list(teacher_feature.shape)} differ in batch size"
        )
    size = (
        min(student_feature.shape[2], teacher_feature.shape[2]),
        min(student_feature.shape[3], teacher_feature.shape[3]),
    )
    teacher = teacher_feature.detach().to(student_feature.device)
    q_s = attention_map(_pooled_to(student_feature, size), p)
    q_t = attention_map(_pooled_to(teacher, size), p)
    return (q_s - q_t).pow(2).mean()


def _pooled_to(feature: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(feature.shape[2:]) == size:
        return feature
    return F.adaptive_avg_pool2d(feature.float(), size)


def cosine_feature_loss(student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
    """``1 - cosine similarity`` between an (adapted) student feature and the teacher's.

    Vectors [N, D] are compared per sample, token sequences [N, L, D] per token (over D), and
    anything else per sample after flattening. Insensitive to the features' scale, unlike MSE.

    Args:
        student_feature: [N, D], [N, L, D] or [N, *S], already mapped to the teacher's shape.
        teacher_feature: same shape (no gradient flows into it).

    Returns:
        The mean over samples (and tokens), a scalar tensor (float32) in [0, 2].
    """
    if student_feature.shape != teacher_feature.shape:
        raise ValueError(
            f"student feature {list(student_feature.shape)} and teacher feature "
            f"{list(teacher_feature.shape)} differ in shape"
        )
    s = student_feature.float()
    t = teacher_feature.detach().float().to(s.device)
    if s.ndim != 3:
        s, t = s.flatten(1), t.flatten(1)
    return (1 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)).mean()

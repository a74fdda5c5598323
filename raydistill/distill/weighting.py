"""Dynamic distillation: per-sample weights for the soft-target loss.

Weights are computed without gradient and normalised to mean 1 over the batch, so that turning
weighting on changes where the soft loss looks, not its overall scale.
"""

from __future__ import annotations

from typing import Literal, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

WeightingKind = Literal["none", "confidence", "disagreement", "teacher_correct"]


def _normalise(raw: Tensor) -> Tensor:
    """[N] non-negative weights scaled to mean 1; all zeros stay zeros (never NaN)."""
    raw = raw.float().clamp_min(0)
    total = raw.sum()
    if raw.numel() == 0 or total <= 0:
        return torch.zeros_like(raw)
    return raw * (raw.numel() / total)


def sample_weights(
    kind: WeightingKind,
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor | None,
    temperature: float = 1.0,
) -> Tensor | None:
    """Per-sample weights [N] (float32, detached, mean 1) for the soft loss, or None for "none".

    * ``confidence``: the teacher's top-class probability at T=1 (trust the teacher where it is
      sure).
    * ``disagreement``: ``KL(softmax(teacher / T) || softmax(student / T))`` per sample, in nats
      (focus on what the student has not learned yet).
    * ``teacher_correct``: 1 where the teacher's argmax equals the label, else 0 (``labels`` [N]
      required).

    Args:
        kind: which weighting.
        student_logits: [N, C] raw student scores.
        teacher_logits: [N, C] raw teacher scores.
        labels: [N] integer class indices, or None.
        temperature: the distillation temperature T > 0, used by "disagreement".

    Returns:
        [N] weights with mean 1 (all zeros when every raw weight is zero), or None.
    """
    if kind not in get_args(WeightingKind):
        raise ValueError(f"unknown weighting {kind!r}; expected one of {get_args(WeightingKind)}")
    if kind == "none":
        return None
    with torch.no_grad():
        teacher = teacher_logits.detach().float()
        if kind == "confidence":
            raw = teacher.softmax(dim=1).amax(dim=1)
        elif kind == "disagreement":
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0, got {temperature}")
            student = student_logits.detach().float().to(teacher.device)
            if student.shape != teacher.shape:
                raise ValueError(
                    f"student logits {list(student.shape)} and teacher logits "
                    f"{list(teacher.shape)} differ in shape"
                )
            log_q = F.log_softmax(student / temperature, dim=1)
            log_p = F.log_softmax(teacher / temperature, dim=1)
            raw = F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)
        else:
            if labels is None:
                raise ValueError("weighting 'teacher_correct' needs the labels")
            if labels.shape != teacher.shape[:1]:
                raise ValueError(
                    f"labels {list(labels.shape)} do not match teacher logits {list(teacher.shape)}"
                )
            raw = (teacher.argmax(dim=1) == labels.to(teacher.device)).float()
        return _normalise(raw).to(student_logits.device)

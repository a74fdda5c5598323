"""The causal-LM objective of one train step: a token divergence plus next-token CE.

``TokenDistiller`` holds the student (its ``forward`` is the student's, so DDP wraps one
module), the temperature and alpha schedules of the job's ``distill`` section and the
divergence of its ``lm`` section. Per target token the objective is
``alpha * T^2 * D(teacher_T || student_T) + (1 - alpha) * CE``; with no teacher (the teacher
stage, the baseline) it is the CE alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raydistill.distill.schedules import Schedule, as_schedule
from raydistill.distill.token_losses import (
    DEFAULT_CHUNK_TOKENS,
    TeacherTokens,
    next_token_ce,
    token_distill_loss,
)


@dataclass
class TokenLossOutput:
    """One step's objective (``total``), its terms (``kd`` is 0 without a teacher) and the
    number of target ``tokens`` they average over."""

    total: Tensor
    kd: Tensor
    ce: Tensor
    tokens: int

    def as_floats(self) -> dict[str, float]:
        return {"loss": self.total.item(), "kd": self.kd.item(), "ce": self.ce.item()}


class TokenDistiller(nn.Module):
    """A causal-LM student and its token-level distillation objective.

    Args:
        student: maps token rows int64 [B, 3, L] to logits [B, L, V].
        temperature, alpha: schedules over 0-based epochs (numbers are constants).
        kind: ``forward_kl``, ``reverse_kl`` or ``jsd``; ``beta``: the JSD's weight.
        chunk_tokens: tokens per chunk of the loss.
        total_epochs: sizes linear and cosine schedules.
    """

    def __init__(
        self,
        student: nn.Module,
        temperature: float | Schedule = 1.0,
        alpha: float | Schedule = 0.5,
        kind: str = "forward_kl",
        beta: float = 0.5,
        chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
        total_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self.teacher = None  # the teacher's outputs arrive in the rows
        self.temperature_schedule = as_schedule(temperature)
        self.alpha_schedule = as_schedule(alpha)
        self.kind, self.beta, self.chunk_tokens = kind, beta, chunk_tokens
        self.total_epochs = total_epochs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = int(epoch)

    @property
    def temperature(self) -> float:
        return self.temperature_schedule.value(self.epoch, self.total_epochs)

    @property
    def alpha(self) -> float:
        return self.alpha_schedule.value(self.epoch, self.total_epochs)

    def forward(self, rows: Tensor) -> Tensor:
        """Token rows int64 [B, 3, L] -> the student's logits [B, L, V]."""
        return self.student(rows)

    def loss(
        self, logits: Tensor, rows: Tensor, teacher: TeacherTokens | None = None
    ) -> TokenLossOutput:
        """The objective of student ``logits`` [B, L, V] on ``rows`` [B, 3, L] (ids,
        attention, target mask), with the teacher's distribution at the same positions
        (dense logits [B, L, V] or top-k) when distilling."""
        ids, targets = rows[:, 0], rows[:, 2]
        # position t predicts token t + 1, counted when that token is a target
        s, nxt, counted = logits[:, :-1], ids[:, 1:], targets[:, 1:].bool()
        tokens = int(counted.sum())
        ce = next_token_ce(s, nxt, counted, self.chunk_tokens)
        if teacher is None:
            return TokenLossOutput(ce, torch.zeros_like(ce), ce, tokens)
        kd = token_distill_loss(
            s, teacher[:, :-1], counted, self.kind, self.temperature, self.beta, self.chunk_tokens
        )
        alpha = self.alpha
        return TokenLossOutput(alpha * kd + (1 - alpha) * ce, kd, ce, tokens)

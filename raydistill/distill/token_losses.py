"""Token-level distillation losses for causal language models, masked per token.

Every loss here is a mean over the tokens a mask selects (one value per selected position,
summed, divided by their count), in nats. Positions are aligned by the caller: row ``t`` of the
student's logits and row ``t`` of the teacher's distribution describe the same next token.

The teacher arrives either dense (logits [B, L, V]) or as :class:`TopKTargets` (its k most
likely tokens' ids and log-probabilities at T = 1 plus the log of the mass left outside them).
Both go through the same divergence code: a top-k teacher turns each distribution into k + 1
outcomes (the k tokens and one tail bucket), and the student's distribution is folded the same
way (its probabilities on those k ids, and the sum of all others).

The top-k bound. Forward KL, reverse KL and the generalized JSD are f-divergences, so folding
V outcomes into k + 1 can only lower them (data processing): at T = 1 the top-k value is at most
the dense one, equal when the tail is empty or the student's tail is shaped like the teacher's.
For forward KL the gap is exactly ``tail_mass * KL(teacher tail || student tail)`` (both tails
renormalised), the chain rule of KL. Re-tempering inside the top-k support is exact (ratios of
stored probabilities are exact at any T); the tail's tempered mass is not known from the top k:
with ``n = V - k`` tail tokens holding mass ``m``, the true tempered weight of the tail lies in
``[m**(1/T), n**(1 - 1/T) * m**(1/T)]`` for T >= 1 (power means); the bucket takes the upper
end (the tail spread evenly, as :class:`~raydistill.teacher.codec.LogitCodec`'s top-k does).

Chunks. The loss runs over the selected tokens in chunks of ``chunk_tokens`` rows, each under
activation checkpointing, so the float32 softmax intermediates held for backward grow with the
chunk, not with sequence x vocabulary. With ``head`` the first argument is the student's last
hidden states [B, L, H] and each chunk computes its own logits, so the [B, L, V] student logits
are never materialised either.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

TokenLossKind = Literal["forward_kl", "reverse_kl", "jsd"]
TOKEN_LOSS_KINDS: tuple[str, ...] = ("forward_kl", "reverse_kl", "jsd")
DEFAULT_CHUNK_TOKENS = 1024
# a finite floor for the log tail mass: exp(-80) is ~1e-35, far below anything learnable, and
# keeps reverse KL finite when a teacher stored (numerically) no tail
_LOG_TAIL_FLOOR = -80.0


@dataclass(frozen=True)
class TopKTargets:
    """A teacher's per-token top-k distribution.

    ``ids`` int64 [B, L, k] token ids; ``logprobs`` float [B, L, k] their log-probabilities at
    T = 1; ``log_tail`` float [B, L] the log of the probability mass outside those k tokens
    (-inf when nothing is left); ``vocab_size`` V, the size of the distribution.
    """

    ids: Tensor
    logprobs: Tensor
    log_tail: Tensor
    vocab_size: int

    @property
    def k(self) -> int:
        return int(self.ids.shape[-1])

    def __getitem__(self, index: Any) -> TopKTargets:
        """The targets at ``index`` over the leading (batch, position) dims."""
        return TopKTargets(
            self.ids[index], self.logprobs[index], self.log_tail[index], self.vocab_size
        )

    def to(self, device: torch.device | str) -> TopKTargets:
        return TopKTargets(
            self.ids.to(device), self.logprobs.to(device), self.log_tail.to(device), self.vocab_size
        )

    def flat(self) -> tuple[Tensor, Tensor, Tensor]:
        k = self.k
        return self.ids.reshape(-1, k), self.logprobs.reshape(-1, k), self.log_tail.reshape(-1)


TeacherTokens = Tensor | TopKTargets


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a || b) per row over the last dim from log-probabilities; outcomes with a = 0 add 0."""
    terms = torch.exp(log_a) * (log_a - log_b)
    return torch.where(torch.isneginf(log_a), torch.zeros_like(terms), terms).sum(-1)


def divergence(log_p: Tensor, log_q: Tensor, kind: str, beta: float = 0.5) -> Tensor:
    """One divergence per row between teacher ``log_p`` and student ``log_q`` [N, V] (log-
    probabilities): ``forward_kl`` KL(p || q), ``reverse_kl`` KL(q || p), or ``jsd`` the
    generalized Jensen-Shannon divergence ``beta KL(p || m) + (1 - beta) KL(q || m)`` with
    ``m = beta p + (1 - beta) q``. As in GKD (Agarwal et al., 2024), JSD at ``beta`` 0 is forward
    KL and at 1 reverse KL: the mixed form divided by ``beta`` (by ``1 - beta``) tends to them.
    Returns [N] in nats."""
    if kind == "forward_kl" or (kind == "jsd" and beta == 0.0):
        return _kl(log_p, log_q)
    if kind == "reverse_kl" or (kind == "jsd" and beta == 1.0):
        return _kl(log_q, log_p)
    if kind != "jsd":
        raise ValueError(f"token loss kind must be one of {', '.join(TOKEN_LOSS_KINDS)}: {kind}")
    if not 0.0 < beta < 1.0:
        raise ValueError(f"jsd beta must be in [0, 1], got {beta}")
    log_m = torch.logsumexp(
        torch.stack([log_p + math.log(beta), log_q + math.log(1.0 - beta)]), dim=0
    )
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


def _bucket_teacher(logprobs: Tensor, log_tail: Tensor, vocab: int, temperature: float) -> Tensor:
    """The teacher's k + 1 outcome log-probabilities at ``temperature`` ([N, k+1]; [N, k] when
    k == V). The tail is spread evenly over its V - k tokens before tempering."""
    k = logprobs.shape[-1]
    scaled = logprobs.float() / temperature
    if k >= vocab:
        return scaled - torch.logsumexp(scaled, dim=-1, keepdim=True)
    n = float(vocab - k)
    tail = log_tail.float().clamp(min=_LOG_TAIL_FLOOR)
    tail_weight = math.log(n) + (tail - math.log(n)) / temperature
    both = torch.cat([scaled, tail_weight[:, None]], dim=-1)
    return both - torch.logsumexp(both, dim=-1, keepdim=True)


def _bucket_student(log_q: Tensor, ids: Tensor, vocab: int) -> Tensor:
    """The student's log-probabilities [N, V] folded onto the teacher's k ids plus the rest."""
    top = log_q.gather(-1, ids)
    if ids.shape[-1] >= vocab:
        return top
    rest = torch.logsumexp(log_q.scatter(-1, ids, float("-inf")), dim=-1)
    return torch.cat([top, rest[:, None]], dim=-1)


def _chunked_sum(fn: Callable[..., Tensor], n: int, chunk: int, *tensors: Tensor) -> Tensor:
    """sum over chunks of ``fn(start, stop, *tensors)``, each chunk checkpointed when autograd
    records, so only one chunk's intermediates are alive at a time."""
    if chunk < 1:
        raise ValueError(f"chunk_tokens must be >= 1, got {chunk}")
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    total = tensors[0].new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        if grad:
            total = total + checkpoint(fn, start, stop, *tensors, use_reentrant=False)
        else:
            total = total + fn(start, stop, *tensors)
    return total


def _positions(mask: Tensor, lead: tuple[int, ...]) -> Tensor:
    if tuple(mask.shape) != lead:
        raise ValueError(f"mask must have shape {list(lead)}, got {list(mask.shape)}")
    return mask.reshape(-1).nonzero().squeeze(1)


def _student_rows(
    student: Tensor, head: nn.Module | None, index: Tensor, temperature: float
) -> Tensor:
    rows = student.index_select(0, index)
    if head is not None:
        rows = head(rows)
    return F.log_softmax(rows.float() / temperature, dim=-1)


def token_distill_loss(
    student: Tensor,
    teacher: TeacherTokens,
    mask: Tensor,
    kind: str = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    head: nn.Module | None = None,
) -> Tensor:
    """The mean per-token divergence (``kind``, see :func:`divergence`) between teacher and
    student at ``temperature``, times T**2 (the gradient scale of Hinton's soft targets).

    Args:
        student: logits [B, L, V], or last hidden states [B, L, H] when ``head`` is given.
        teacher: dense logits [B, L, V] (any per-token offset) or :class:`TopKTargets`.
        mask: [B, L], nonzero at the positions that count.
        kind: ``forward_kl``, ``reverse_kl`` or ``jsd``.
        temperature: T > 0.
        beta: the JSD's mixing weight in [0, 1].
        chunk_tokens: selected positions per chunk.
        head: the student's output projection H -> V, applied per chunk.

    Returns:
        A float32 scalar (0 when the mask selects nothing).
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if kind not in TOKEN_LOSS_KINDS:
        raise ValueError(f"token loss kind must be one of {', '.join(TOKEN_LOSS_KINDS)}: {kind}")
    lead = tuple(student.shape[:2])
    index = _positions(mask, lead)
    flat = student.reshape(-1, student.shape[-1])
    if isinstance(teacher, TopKTargets):
        ids, logprobs, log_tail = teacher.flat()
        vocab = teacher.vocab_size

        def chunk_loss(start: int, stop: int, flat: Tensor) -> Tensor:
            where = index[start:stop]
            log_q = _student_rows(flat, head, where, temperature)
            picked = ids.index_select(0, where).to(log_q.device)
            log_p = _bucket_teacher(
                logprobs.index_select(0, where).to(log_q.device),
                log_tail.index_select(0, where).to(log_q.device),
                vocab,
                temperature,
            )
            return divergence(log_p, _bucket_student(log_q, picked, vocab), kind, beta).sum()

    else:
        if tuple(teacher.shape[:2]) != lead:
            raise ValueError(
                f"teacher logits {list(teacher.shape)} and student {list(student.shape)} "
                "differ in batch or sequence length"
            )
        dense = teacher.detach().reshape(-1, teacher.shape[-1])

        def chunk_loss(start: int, stop: int, flat: Tensor) -> Tensor:
            where = index[start:stop]
            log_q = _student_rows(flat, head, where, temperature)
            if dense.shape[-1] != log_q.shape[-1]:
                raise ValueError(
                    f"teacher vocabulary {dense.shape[-1]} != student {log_q.shape[-1]}"
                )
            t = dense.index_select(0, where.to(dense.device)).to(log_q.device).float()
            log_p = F.log_softmax(t / temperature, dim=-1)
            return divergence(log_p, log_q, kind, beta).sum()

    n = int(index.numel())
    total = _chunked_sum(chunk_loss, n, chunk_tokens, flat)
    return total / max(n, 1) * temperature**2


def next_token_ce(
    student: Tensor,
    targets: Tensor,
    mask: Tensor,
    chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
    head: nn.Module | None = None,
) -> Tensor:
    """Mean cross entropy (nats) of the ``targets`` int64 [B, L] under ``student`` logits
    [B, L, V] (or hidden states with ``head``) over the positions ``mask`` [B, L] selects."""
    lead = tuple(student.shape[:2])
    if tuple(targets.shape) != lead:
        raise ValueError(f"targets must have shape {list(lead)}, got {list(targets.shape)}")
    index = _positions(mask, lead)
    labels = targets.reshape(-1)
    flat = student.reshape(-1, student.shape[-1])

    def chunk_loss(start: int, stop: int, flat: Tensor) -> Tensor:
        where = index[start:stop]
        log_q = _student_rows(flat, head, where, 1.0)
        return F.nll_loss(log_q, labels.index_select(0, where).to(log_q.device), reduction="sum")

    n = int(index.numel())
    return _chunked_sum(chunk_loss, n, chunk_tokens, flat) / max(n, 1)


@torch.no_grad()
def token_agreement(student_logits: Tensor, teacher: TeacherTokens, mask: Tensor) -> Tensor:
    """How many selected positions' student argmax equals the teacher's (int64 scalar);
    ``student_logits`` [B, L, V], ``teacher`` dense [B, L, V] or top-k (its first id is not
    assumed to be the largest: the argmax of the stored log-probabilities is taken)."""
    picked = mask.bool()
    guess = student_logits.argmax(-1)
    if isinstance(teacher, TopKTargets):
        best = teacher.logprobs.argmax(-1, keepdim=True)
        want = teacher.ids.gather(-1, best).squeeze(-1)
    else:
        want = teacher.argmax(-1)
    return ((guess == want.to(guess.device)) & picked).sum()

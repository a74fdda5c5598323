"""Per-token top-k teacher distributions in a compact, Parquet-ready encoding.

A causal LM teacher's distribution at each position is stored as its k most likely token ids
(sorted by falling probability), their log-probabilities at T = 1 in float16, and the log of
the mass left outside them in float32 (the tail). Ids take 2 bytes when the vocabulary fits
16 bits, else 4, so one token costs ``k * (2 + id_bytes) + 4`` bytes (k = 16 over a 32k
vocabulary: 68 bytes). Log-probabilities are computed in float64 before rounding, so a teacher
logit's offset costs no precision (see :mod:`raydistill.teacher.codec`).

Ray-free: numpy (or a tensor, encoded on its device) in, numpy out;
:meth:`TokenTopKCodec.targets` gives the :class:`~raydistill.distill.token_losses.TopKTargets`
the token losses read. With ``lm.topk``
set, the teacher pool encodes its per-token outputs with it (:func:`pool_codec`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from raydistill.config import JobConfig
from raydistill.distill.token_losses import TopKTargets
from raydistill.teacher.codec import LogitCodec

TOPK_IDS = "teacher_token_topk_ids"
TOPK_LOGPROBS = "teacher_token_topk_logprobs"
LOG_TAIL = "teacher_token_log_tail"
COLUMNS = (TOPK_IDS, TOPK_LOGPROBS, LOG_TAIL)


def _id_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


@dataclass(frozen=True)
class TokenTopKCodec:
    """Encodes teacher logits [..., V] per position as top-``k`` ids, log-probs and tail."""

    k: int
    vocab_size: int

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"top-k needs k >= 1, got {self.k}")
        if self.vocab_size < 1:
            raise ValueError(f"vocab_size must be >= 1, got {self.vocab_size}")

    @property
    def kept(self) -> int:
        return min(self.k, self.vocab_size)

    # the teacher pool hands its logits over as a tensor on its device (see encode)
    encodes_tensors = True

    def encode(self, logits: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Columns for logits [..., V]: ids [..., k], log-probs float16 [..., k], log tail
        float32 [...] (-inf when k == V). A tensor is encoded on its own device
        (:meth:`encode_tensor`); an array in float64 here."""
        if isinstance(logits, torch.Tensor):
            return self.encode_tensor(logits)
        x = np.asarray(logits, dtype=np.float64)
        if x.shape[-1] != self.vocab_size:
            raise ValueError(f"logits have {x.shape[-1]} entries per token, not {self.vocab_size}")
        top = x.max(-1, keepdims=True)
        log_p = x - (top + np.log(np.exp(x - top).sum(-1, keepdims=True)))
        k = self.kept
        part = np.argpartition(-log_p, k - 1, axis=-1)[..., :k]
        values = np.take_along_axis(log_p, part, axis=-1)
        order = np.argsort(-values, axis=-1, kind="stable")
        ids = np.take_along_axis(part, order, axis=-1)
        values = np.take_along_axis(values, order, axis=-1)
        if k == self.vocab_size:
            log_tail = np.full(x.shape[:-1], -np.inf)
        else:
            # the log-sum-exp of the rest, not log(1 - kept): a tiny tail keeps its digits
            rest = log_p.copy()
            np.put_along_axis(rest, part, -np.inf, axis=-1)
            high = rest.max(-1, keepdims=True)
            log_tail = (high + np.log(np.exp(rest - high).sum(-1, keepdims=True)))[..., 0]
        return {
            TOPK_IDS: ids.astype(_id_dtype(self.vocab_size)),
            TOPK_LOGPROBS: values.astype(np.float16),
            LOG_TAIL: log_tail.astype(np.float32),
        }

    @torch.no_grad()
    def encode_tensor(self, logits: torch.Tensor, chunk: int = 1024) -> dict[str, np.ndarray]:
        """:meth:`encode` of logits [..., V] on their own device, ``chunk`` positions at a
        time: only the [..., k] columns are copied back, not the dense [..., V] logits (at
        V = 151,665 one position's logits are 607 KB). Computed in float32: its rounding
        (about 1e-6 nats) is far below the float16 rounding of the stored log-probabilities;
        the tail is the log-sum-exp of the log-probabilities outside the top k, so a tiny tail
        keeps its precision."""
        if logits.shape[-1] != self.vocab_size:
            raise ValueError(
                f"logits have {logits.shape[-1]} entries per token, not {self.vocab_size}"
            )
        lead, k = tuple(logits.shape[:-1]), self.kept
        flat = logits.detach().reshape(-1, self.vocab_size)
        ids, values, tails = [], [], []
        for start in range(0, flat.shape[0], chunk):
            log_p = flat[start : start + chunk].float().log_softmax(-1)
            top, top_ids = log_p.topk(k, dim=-1)  # sorted by falling probability
            if k == self.vocab_size:
                tail = torch.full(top.shape[:-1], -torch.inf, device=top.device)
            else:
                tail = log_p.scatter(-1, top_ids, -torch.inf).logsumexp(-1)
            ids.append(top_ids.cpu())
            values.append(top.cpu())
            tails.append(tail.cpu())

        def cat(parts: list[torch.Tensor], *shape: int) -> np.ndarray:
            return torch.cat(parts).reshape(*lead, *shape).numpy()

        return {
            TOPK_IDS: cat(ids, k).astype(_id_dtype(self.vocab_size)),
            TOPK_LOGPROBS: cat(values, k).astype(np.float16),
            LOG_TAIL: cat(tails).astype(np.float32),
        }

    def targets(self, columns: Mapping[str, Any]) -> TopKTargets:
        """The token losses' view of encoded columns (numpy or torch, any leading shape)."""
        ids = torch.as_tensor(np.asarray(columns[TOPK_IDS]).astype(np.int64))
        return TopKTargets(
            ids=ids,
            logprobs=torch.as_tensor(columns[TOPK_LOGPROBS]).float(),
            log_tail=torch.as_tensor(columns[LOG_TAIL]).float(),
            vocab_size=self.vocab_size,
        )

    def columns(self) -> list[str]:
        return list(COLUMNS)

    def decode(self, columns: Mapping[str, Any], num_classes: int) -> TopKTargets:
        """What a train step reads from a batch's columns (the pool's codec interface)."""
        if num_classes != self.vocab_size:
            raise ValueError(f"top-k rows of {self.vocab_size} tokens read as {num_classes}")
        return self.targets(columns)

    def dense(self, columns: Mapping[str, Any]) -> torch.Tensor:
        """Dense log-probabilities float32 [..., V] with the tail spread evenly over the
        V - k tokens outside the top k (a proper distribution: logsumexp is 0 to fp16 error)."""
        t = self.targets(columns)
        lead = tuple(t.ids.shape[:-1])
        rest = self.vocab_size - t.k
        fill = t.log_tail - (np.log(rest) if rest else 0.0)
        out = fill.clamp(min=-1e4)[..., None].expand(*lead, self.vocab_size).clone()
        return out.scatter_(-1, t.ids, t.logprobs)

    def bytes_per_sample(self, num_classes: int) -> int:
        """A cache manifest's payload bytes per sample: here per token (one position)."""
        return self.bytes_per_token()

    def bytes_per_token(self) -> int:
        """Payload bytes of one position (before Parquet's compression)."""
        return self.kept * (2 + _id_dtype(self.vocab_size).itemsize) + 4


def pool_codec(job: JobConfig, num_classes: int) -> LogitCodec | TokenTopKCodec:
    """How the teacher pool encodes its outputs for ``job``: per-token top-k when ``lm.topk`` is
    set (``num_classes``: the shared vocabulary), else dense float32 logits."""
    if job.lm is not None and job.lm.topk is not None:
        return TokenTopKCodec(job.lm.topk, num_classes)
    return LogitCodec()

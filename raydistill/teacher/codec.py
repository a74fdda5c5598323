"""How teacher logits are stored: dense fp32, dense fp16, or top-k with the tail mass kept.

Ray-free: columns in, columns out, as numpy arrays. ``fp16`` and ``topk`` store the teacher's
log-probabilities (``log_softmax`` of the logits, computed in float64), not its raw logits:
a classifier's logits carry an arbitrary per-sample offset (adding 500 to every logit changes
nothing the student learns from) and float16's absolute precision falls with magnitude, so raw
values would lose more the larger the offset. Log-probabilities are <= 0 with the top classes
near 0, where float16 is finest. Decoded values are log-probabilities, usable wherever logits
are: softmax(log p / T) = softmax(z / T) at every temperature, and argmax is unchanged.

The top-k codec keeps the k largest log-probabilities and one ``tail`` log-probability per
sample that every other class takes on decode, so that the decoded distribution at T=1 puts
exactly the teacher's remaining probability mass on the tail. The decoded values are dense
again, so the soft loss stays a proper distribution at any temperature (the tail is spread
evenly, which is the only approximation).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from raydistill.columns import TAIL as TAIL
from raydistill.columns import TEACHER_LOGITS as LOGITS
from raydistill.columns import TOPK_INDICES as TOPK_INDICES
from raydistill.columns import TOPK_VALUES as TOPK_VALUES

CodecKind = Literal["fp32", "fp16", "topk"]


def _logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


@dataclass(frozen=True)
class LogitCodec:
    """Encodes teacher logits [N, C] into storage columns and back.

    ``k`` is the number of classes kept by ``topk`` (ignored otherwise); ``fp16`` and ``topk``
    store log-probabilities in float16.
    """

    kind: CodecKind = "fp32"
    k: int = 16

    def columns(self) -> list[str]:
        return [LOGITS] if self.kind != "topk" else [TOPK_VALUES, TOPK_INDICES, TAIL]

    def encode(self, logits: np.ndarray) -> dict[str, np.ndarray]:
        """Columns for logits float [N, C] (fp32: the logits; fp16, topk: log-probabilities)."""
        logits = np.asarray(logits, dtype=np.float32)
        if self.kind == "fp32":
            return {LOGITS: logits}
        # float64: the offset is removed before any rounding to the stored precision
        log_p = logits.astype(np.float64)
        log_p -= _logsumexp(log_p)[:, None]
        if self.kind == "fp16":
            # the floor keeps a vanishing class finite in float16 (its probability is 0 either way)
            return {LOGITS: np.maximum(log_p, -1e4).astype(np.float16)}
        n, c = log_p.shape
        k = min(self.k, c)
        index = np.argpartition(-log_p, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(log_p, index, axis=1)
        tail_count = c - k
        if tail_count == 0:
            tail = np.full(n, -np.inf, dtype=np.float32)
        else:
            kept_mass = np.exp(_logsumexp(values))
            tail_mass = np.clip(1.0 - kept_mass, 1e-12, 1.0)
            # each tail class gets the log-probability tail_mass / tail_count
            tail = np.log(tail_mass / tail_count).astype(np.float32)
        index_type = np.int16 if c <= np.iinfo(np.int16).max else np.int32
        return {
            TOPK_VALUES: values.astype(np.float16),
            TOPK_INDICES: index.astype(index_type),
            TAIL: tail.astype(np.float32),
        }

    def decode(self, columns: Mapping[str, Any], num_classes: int) -> torch.Tensor:
        """Dense float32 [N, num_classes] from encoded columns (numpy or torch): the logits
        (fp32) or log-probabilities (fp16, topk), which give the same softmax at any T."""
        if self.kind != "topk":
            return torch.as_tensor(columns[LOGITS]).float()
        values = torch.as_tensor(columns[TOPK_VALUES]).float()
        index = torch.as_tensor(columns[TOPK_INDICES]).long()
        # A finite floor stands in for -inf when nothing was cut, keeping softmax NaN-free.
        tail = torch.as_tensor(columns[TAIL]).float().clamp(min=-1e4)
        dense = tail[:, None].expand(len(tail), num_classes).clone()
        return dense.scatter_(1, index, values)

    def bytes_per_sample(self, num_classes: int) -> int:
        """Storage bytes of one sample's encoded logits (payload, before compression)."""
        if self.kind == "fp32":
            return 4 * num_classes
        if self.kind == "fp16":
            return 2 * num_classes
        k = min(self.k, num_classes)
        index_bytes = 2 if num_classes <= np.iinfo(np.int16).max else 4
        return k * (2 + index_bytes) + 4

"""The forwards' numeric precision (``train.precision``), shared by the train steps and the
teacher pool."""

from __future__ import annotations

import contextlib

import torch


def autocast(
    precision: str, device: torch.device
) -> torch.autocast | contextlib.nullcontext[None]:
    """``bf16``: run what follows under ``torch.autocast`` in bfloat16 on ``device``'s type
    (matmuls in bfloat16, reductions such as softmax in float32; the backward follows the
    forward's dtypes and the weights stay float32); ``fp32``: as is, with no context at all
    (a disabled ``torch.autocast`` still sets and restores autocast state, at every step)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)

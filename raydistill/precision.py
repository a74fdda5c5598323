"""The forwards' numeric precision (``train.precision``), shared by the train steps and the
teacher pool."""

from __future__ import annotations

import torch


def autocast(precision: str, device: torch.device) -> torch.autocast:
    """``bf16``: run what follows under ``torch.autocast`` in bfloat16 on ``device``'s type
    (matmuls in bfloat16, reductions such as softmax in float32; the backward follows the
    forward's dtypes and the weights stay float32); ``fp32``: as is."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

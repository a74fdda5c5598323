"""How inputs reach a model and logits come back: devices, keyword inputs, ``.logits`` outputs,
and the key an adapter of a layer is stored under."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

Inputs = Tensor | Mapping[str, Any]
"""A batch as a model takes it: a tensor [N, ...] (``model(x)``) or keyword tensors
(``model(**x)``, e.g. ``input_ids`` and ``attention_mask``)."""


def as_logits(output: Any) -> Tensor:
    """A model's output as its logits [N, C]: the tensor itself, or its ``.logits``
    (Hugging Face outputs)."""
    logits = output.logits if hasattr(output, "logits") else output
    if not isinstance(logits, Tensor):
        raise TypeError(f"the model returned {type(output).__name__}, not logits [N, C]")
    return logits


def module_device(module: nn.Module) -> torch.device | None:
    """The device of the module's first parameter or buffer; None for a module without any."""
    for tensor in [*module.parameters(), *module.buffers()]:
        return tensor.device
    return None


def to_device(inputs: Inputs, device: torch.device | None) -> Inputs:
    """``inputs`` (a tensor, or the tensors of a mapping) on ``device``; unchanged for None."""
    if device is None:
        return inputs
    if isinstance(inputs, Mapping):
        return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    return inputs.to(device)


def adapter_key(student_layer: str) -> str:
    """The ``nn.ModuleDict`` key of a student layer's adapter (keys may not contain dots)."""
    return student_layer.replace(".", "__")

"""Scoring a trained model on a split: accuracy, size, per-sample CPU latency."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from raydistill.data.arrays import LabelledArrays
from raydistill.models.specs import count_parameters


@dataclass(frozen=True)
class ModelScore:
    """One row of the comparison table."""

    name: str
    accuracy: float  # share of correct predictions on the split, in [0, 1]
    parameters: int
    latency_ms: float  # median CPU latency of one sample (batch 1, one thread), milliseconds

    def as_dict(self) -> dict[str, float | int | str]:
        return {
            "name": self.name,
            "accuracy": self.accuracy,
            "parameters": self.parameters,
            "latency_ms": self.latency_ms,
        }


@torch.no_grad()
def predict(model: nn.Module, inputs: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class predictions [N] for inputs [N, ...]."""
    model.eval()
    out = [
        model(torch.from_numpy(np.array(inputs[i : i + batch_size], dtype=np.float32)))
        .argmax(-1)
        .numpy()
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(model: nn.Module, data: LabelledArrays) -> float:
    return float((predict(model, data.inputs) == data.labels).mean()) if len(data) else float("nan")


@torch.no_grad()
def latency_ms(model: nn.Module, example: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of one forward pass on one sample [1, ...], on one CPU thread."""
    model.eval()
    x = torch.from_numpy(np.array(example[None], dtype=np.float32))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            model(x)
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times) * 1000


def score(name: str, model: nn.Module, data: LabelledArrays) -> ModelScore:
    return ModelScore(
        name=name,
        accuracy=accuracy(model, data),
        parameters=count_parameters(model),
        latency_ms=latency_ms(model, data.inputs[0]),
    )

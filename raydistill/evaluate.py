"""Scoring a trained model on a split: accuracy (overall and per class), size, CPU latency at
batch 1 and throughput at batch 64."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from raydistill.data.arrays import LabelledArrays, model_tensor
from raydistill.models.specs import count_parameters

THROUGHPUT_BATCH = 64


@dataclass(frozen=True)
class ModelScore:
    """One row of the comparison table."""

    name: str
    accuracy: float  # share of correct predictions on the split, in [0, 1]
    parameters: int
    latency_ms: float  # median CPU latency of one sample (batch 1, one thread), milliseconds
    size_bytes: int = 0  # the weights as a file on disk (serialized state dict), bytes
    throughput: float = 0.0  # samples per second at batch THROUGHPUT_BATCH, one CPU thread
    per_class: tuple[float, ...] = field(default=())  # accuracy of each class, in [0, 1]

    @property
    def headline(self) -> float:
        """The task's figure of merit: accuracy."""
        return self.accuracy

    def as_dict(self) -> dict[str, float | int | str | list[float]]:
        return {
            "name": self.name,
            "accuracy": self.accuracy,
            "parameters": self.parameters,
            "latency_ms": self.latency_ms,
            "size_bytes": self.size_bytes,
            "throughput": self.throughput,
            "per_class": list(self.per_class),
        }


@torch.no_grad()
def predict(model: nn.Module, inputs: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class predictions [N] for inputs [N, ...]."""
    model.eval()
    out = [
        model(model_tensor(inputs[i : i + batch_size])).argmax(-1).numpy()
        for i in range(0, len(inputs), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def accuracy(model: nn.Module, data: LabelledArrays) -> float:
    return float((predict(model, data.inputs) == data.labels).mean()) if len(data) else float("nan")


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of correct predictions within each true class [num_classes]; NaN for a class
    absent from ``labels``."""
    correct = np.bincount(labels[predictions == labels], minlength=num_classes)
    total = np.bincount(labels, minlength=num_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, correct / np.maximum(total, 1), np.nan)


def weights_bytes(model: nn.Module) -> int:
    """Bytes the model's weights take as a file (``torch.save`` of its state dict)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


@torch.no_grad()
def median_call_ms(call: Callable[[], Any], runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of ``call()`` in milliseconds, on one CPU thread (the caller's thread
    count is restored)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(warmup):
            call()
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times) * 1000


def latency_ms(model: nn.Module, example: np.ndarray, runs: int = 50, warmup: int = 5) -> float:
    """Median wall time of one forward pass on one sample [1, ...], on one CPU thread."""
    model.eval()
    x = model_tensor(example[None])
    return median_call_ms(lambda: model(x), runs, warmup)


@torch.no_grad()
def throughput(
    model: nn.Module,
    inputs: np.ndarray,
    batch_size: int = THROUGHPUT_BATCH,
    budget_s: float = 1.0,
    max_runs: int = 20,
) -> float:
    """Samples per second of forward passes at ``batch_size`` (inputs [N, ...] repeated up to
    the batch), on one CPU thread: the median of at least 3 timed batches, more while the time
    ``budget_s`` (seconds) lasts."""
    model.eval()
    repeats = -(-batch_size // max(len(inputs), 1))
    batch = np.concatenate([inputs] * repeats)[:batch_size]
    x = model_tensor(batch)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model(x)  # warm-up
        times: list[float] = []
        while len(times) < 3 or (sum(times) < budget_s and len(times) < max_runs):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return batch_size / statistics.median(times)


def score(
    name: str, model: nn.Module, data: LabelledArrays | Iterable[LabelledArrays]
) -> ModelScore:
    """Accuracy and per-class accuracy on ``data`` (arrays, or batches of a streamed split:
    only per-class tallies are kept), parameters, weights size, latency at batch 1 and
    throughput at batch 64 (CPU, one thread) on the first rows."""
    batches = [data] if isinstance(data, LabelledArrays) else data
    correct = total = None
    first: np.ndarray | None = None
    for batch in batches:
        if total is None:
            correct = np.zeros(batch.num_classes, dtype=np.int64)
            total = np.zeros(batch.num_classes, dtype=np.int64)
        if not len(batch):
            continue
        if first is None:
            first = batch.inputs[:THROUGHPUT_BATCH]
        hits = predict(model, batch.inputs) == batch.labels
        correct += np.bincount(batch.labels[hits], minlength=len(total))
        total += np.bincount(batch.labels, minlength=len(total))
    if first is None or total is None or correct is None:
        raise ValueError(f"{name}: no rows to score")
    with np.errstate(invalid="ignore", divide="ignore"):
        per_class = np.where(total > 0, correct / np.maximum(total, 1), np.nan)
    return ModelScore(
        name=name,
        accuracy=float(correct.sum() / total.sum()),
        parameters=count_parameters(model),
        latency_ms=latency_ms(model, first[0]),
        size_bytes=weights_bytes(model),
        throughput=throughput(model, first),
        per_class=tuple(float(v) for v in per_class),
    )

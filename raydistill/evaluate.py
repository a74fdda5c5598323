"""Scoring a trained model on a split: accuracy (overall and per class) and the expected
calibration error (torchmetrics), size, CPU latency at batch 1 and throughput at batch 64."""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from raydistill.data.arrays import LabelledArrays, model_tensor
from raydistill.models.specs import count_parameters

THROUGHPUT_BATCH = 64
ECE_BINS = 15  # equal-width confidence bins of the expected calibration error


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
    # expected calibration error of the top-1 softmax confidence (ECE_BINS equal-width bins,
    # L1: the rows' share-weighted |accuracy - mean confidence| per bin), a fraction in [0, 1]
    ece: float = float("nan")
    # per confidence bin (ECE_BINS, equal width over [0, 1]): (rows, mean top-1 confidence,
    # accuracy), confidence and accuracy in [0, 1] (0.0 for an empty bin); the reliability diagram
    reliability: tuple[tuple[int, float, float], ...] = field(default=())

    @property
    def headline(self) -> float:
        """The task's figure of merit: accuracy."""
        return self.accuracy

    @property
    def mean_confidence(self) -> float:
        """Mean top-1 softmax confidence over the split's rows, in [0, 1] (NaN unbinned)."""
        rows = sum(n for n, _, _ in self.reliability)
        return sum(n * c for n, c, _ in self.reliability) / rows if rows else float("nan")

    def as_dict(self) -> dict[str, float | int | str | list[float]]:
        return {
            "name": self.name,
            "accuracy": self.accuracy,
            "parameters": self.parameters,
            "latency_ms": self.latency_ms,
            "size_bytes": self.size_bytes,
            "throughput": self.throughput,
            "per_class": list(self.per_class),
            "ece": self.ece,
            "reliability": [
                {"rows": n, "confidence": c, "accuracy": a} for n, c, a in self.reliability
            ],
        }


class ClassificationMetrics:
    """Test-split metrics gathered batch by batch (torchmetrics): top-1 accuracy, accuracy per
    true class, the expected calibration error and the reliability bins it is drawn from.

    ``update`` takes logits [N, C] (any float dtype) and labels [N] (int64, in [0, C)).
    """

    def __init__(self, num_classes: int, bins: int = ECE_BINS) -> None:
        # imported here: torchmetrics takes seconds to import, and only the driver scores
        from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

        # float64 states: accuracy is the exact ratio of the counts (as numpy's was before)
        self._top1 = MulticlassAccuracy(num_classes, average="micro").set_dtype(torch.float64)
        self._per_class = MulticlassAccuracy(num_classes, average=None).set_dtype(torch.float64)
        self._ece = MulticlassCalibrationError(num_classes, n_bins=bins, norm="l1")
        self._support = torch.zeros(num_classes, dtype=torch.int64)
        self._edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)
        self._bins = torch.zeros(3, bins, dtype=torch.float64)  # rows, sum of confidence, correct
        self.rows = 0

    def update(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        if not len(labels):
            return
        logits = logits.float()
        self._top1.update(logits, labels)
        self._per_class.update(logits, labels)
        # probabilities, not logits: torchmetrics would read logits that all fall in [0, 1] as
        # probabilities (and softmax other batches), so one split could mix the two
        probs = logits.softmax(-1)
        self._ece.update(probs, labels)
        self._support += torch.bincount(labels, minlength=len(self._support))
        confidence, predicted = probs.double().max(-1)
        # the bins torchmetrics' ECE uses, except that confidence 1.0 joins the top bin here
        # (torchmetrics gives it one of its own): ECE itself is torchmetrics'
        index = (torch.bucketize(confidence, self._edges, right=True) - 1).clamp(
            0, self._bins.shape[1] - 1
        )
        for row, values in enumerate(
            (torch.ones_like(confidence), confidence, (predicted == labels).double())
        ):
            self._bins[row].scatter_add_(0, index, values)
        self.rows += len(labels)

    def accuracy(self) -> float:
        """Share of rows whose top-1 prediction is the label, in [0, 1]."""
        return float(self._top1.compute())

    def per_class(self) -> tuple[float, ...]:
        """Accuracy within each true class [C], in [0, 1]; NaN for a class with no rows."""
        scores = self._per_class.compute()
        return tuple(
            float(v) if n > 0 else float("nan")
            for v, n in zip(scores.tolist(), self._support.tolist(), strict=True)
        )

    def ece(self) -> float:
        """Expected calibration error (L1, equal-width bins), a fraction in [0, 1]."""
        return float(self._ece.compute())

    def reliability(self) -> tuple[tuple[int, float, float], ...]:
        """Per confidence bin: (rows, mean top-1 confidence, accuracy); 0.0 for an empty bin."""
        rows, confidence, correct = self._bins
        filled = rows.clamp(min=1)
        return tuple(
            (int(n), float(c), float(a))
            for n, c, a in zip(
                rows.tolist(),
                (confidence / filled).tolist(),
                (correct / filled).tolist(),
                strict=True,
            )
        )


@torch.no_grad()
def batch_logits(
    model: nn.Module, inputs: np.ndarray, batch_size: int = 512
) -> Iterator[torch.Tensor]:
    """The model's outputs [B, C] on inputs [N, ...], ``batch_size`` rows at a time (eval mode)."""
    model.eval()
    for i in range(0, len(inputs), batch_size):
        yield model(model_tensor(inputs[i : i + batch_size]))


def predict(model: nn.Module, inputs: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class predictions [N] for inputs [N, ...]."""
    out = [b.argmax(-1).numpy() for b in batch_logits(model, inputs, batch_size)]
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def metrics_on(model: nn.Module, data: Iterable[LabelledArrays]) -> ClassificationMetrics | None:
    """:class:`ClassificationMetrics` of ``model`` over batches of a split (None without rows)."""
    metrics = None
    for batch in data:
        if metrics is None:
            metrics = ClassificationMetrics(batch.num_classes)
        labels = torch.from_numpy(np.asarray(batch.labels, dtype=np.int64))
        start = 0
        for out in batch_logits(model, batch.inputs):
            metrics.update(out, labels[start : start + len(out)])
            start += len(out)
    return metrics if metrics is not None and metrics.rows else None


def accuracy(model: nn.Module, data: LabelledArrays) -> float:
    """Top-1 accuracy on ``data``, in [0, 1]; NaN without rows."""
    metrics = metrics_on(model, [data])
    return metrics.accuracy() if metrics is not None else float("nan")


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Share of correct predictions within each true class [num_classes]; NaN for a class
    absent from ``labels``."""
    metrics = ClassificationMetrics(num_classes)
    # one-hot scores: their argmax is the prediction
    scores = torch.nn.functional.one_hot(torch.from_numpy(predictions), num_classes).double()
    metrics.update(scores, torch.from_numpy(labels))
    return np.array(metrics.per_class())


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
    """Accuracy, per-class accuracy and calibration (ECE, reliability bins) on ``data``
    (arrays, or batches of a streamed split: only the metrics' tallies are kept), parameters,
    weights size, latency at batch 1 and throughput at batch 64 (CPU, one thread) on the first
    rows."""
    batches = [data] if isinstance(data, LabelledArrays) else data
    first: list[np.ndarray] = []

    def noting_first(batches: Iterable[LabelledArrays]) -> Iterator[LabelledArrays]:
        for batch in batches:
            if not first and len(batch):
                first.append(batch.inputs[:THROUGHPUT_BATCH])
            yield batch

    metrics = metrics_on(model, noting_first(batches))
    if metrics is None:
        raise ValueError(f"{name}: no rows to score")
    return ModelScore(
        name=name,
        accuracy=metrics.accuracy(),
        parameters=count_parameters(model),
        latency_ms=latency_ms(model, first[0][0]),
        size_bytes=weights_bytes(model),
        throughput=throughput(model, first[0]),
        per_class=metrics.per_class(),
        ece=metrics.ece(),
        reliability=metrics.reliability(),
    )

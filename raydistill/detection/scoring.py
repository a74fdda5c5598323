"""Scoring a detector on a split: COCO mAP figures, size and CPU latency of one image."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from raydistill.detection.coco import CocoSplit
from raydistill.detection.data import _encode, rows_to_tensors
from raydistill.detection.metrics import coco_map, to_coco_results
from raydistill.evaluate import median_call_ms
from raydistill.models.specs import count_parameters


@dataclass(frozen=True)
class DetectionScore:
    """One row of the detection table: COCO AP figures are fractions in [0, 1]."""

    name: str
    stats: dict[str, float]
    parameters: int
    latency_ms: float  # median CPU time of one image (batch 1, one thread), milliseconds

    @property
    def headline(self) -> float:
        """The task's figure of merit: COCO mAP@[.5:.95]."""
        return self.stats["map"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.stats,
            "parameters": self.parameters,
            "latency_ms": self.latency_ms,
        }


def load_images(split: CocoSplit, image_size: int) -> dict[str, list[Any]]:
    """A split's rows decoded on the driver (what the Ray Data stage produces), for scoring."""
    rows = [_encode(r, image_size) for r in split.records]
    return {k: [r[k] for r in rows] for k in rows[0]}


@torch.no_grad()
def score_detector(
    name: str, model: nn.Module, split: CocoSplit, image_size: int, batch_size: int = 8
) -> DetectionScore:
    """COCO mAP on a split, parameter count and CPU latency of one image."""
    model.eval()
    rows = load_images(split, image_size)
    results = []
    for i in range(0, len(rows["image_id"]), batch_size):
        batch = {k: v[i : i + batch_size] for k, v in rows.items()}
        images, _, meta = rows_to_tensors(batch)
        results += to_coco_results(model(images), meta, split.label_to_category())
    stats = coco_map(split.ground_truth(), results)
    latency = _latency_ms(model, rows_to_tensors({k: v[:1] for k, v in rows.items()})[0])
    return DetectionScore(name, stats, count_parameters(model), latency)


def _latency_ms(model: nn.Module, image: list[torch.Tensor], runs: int = 10) -> float:
    """Median wall time of one forward pass on one image, on one CPU thread (milliseconds)."""
    model.eval()
    return median_call_ms(lambda: model(image), runs, warmup=1)


def image_latency_ms(model: nn.Module, split: CocoSplit, image_size: int) -> float:
    """CPU latency (ms, batch 1, one thread) of ``model`` on the split's first image."""
    first = CocoSplit(split.records[:1], split.categories)
    rows = load_images(first, image_size)
    return _latency_ms(model, rows_to_tensors(rows)[0])

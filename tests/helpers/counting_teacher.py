"""A teacher that records every sample it labels, wherever it runs (driver or Ray worker).

Each process appends its batch sizes to ``<count_dir>/<pid>.txt``; the test sums the files. Only
inference-mode forwards count (a teacher labelling data), not training forwards.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from raydistill.models.zoo import DigitsCNN


class CountingCNN(DigitsCNN):
    def __init__(self, count_dir: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.count_dir = Path(count_dir)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            with open(self.count_dir / f"{os.getpid()}.txt", "a") as f:
                f.write(f"{x.shape[0]}\n")
        return super().forward(x)


def counting_cnn(num_classes: int = 10, count_dir: str = ".", width: int = 32) -> CountingCNN:
    return CountingCNN(count_dir, num_classes=num_classes, width=width)


def samples_labelled(count_dir: Path) -> int:
    return sum(int(line) for f in count_dir.glob("*.txt") for line in f.read_text().split())


class SlowCountingCNN(CountingCNN):
    """A counting teacher that takes ``delay_s`` per labelled batch, so that a test can kill the
    actor while it is still labelling an epoch."""

    def __init__(self, count_dir: str, delay_s: float, **kwargs) -> None:
        super().__init__(count_dir, **kwargs)
        self.delay_s = delay_s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            time.sleep(self.delay_s)
        return super().forward(x)


def slow_counting_cnn(
    num_classes: int = 10, count_dir: str = ".", width: int = 8, delay_s: float = 0.1
) -> SlowCountingCNN:
    return SlowCountingCNN(count_dir, delay_s, num_classes=num_classes, width=width)

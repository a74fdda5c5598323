"""Metrics to TensorBoard while a stage trains (``output.tensorboard: true``).

Ray Train V2 has no TensorBoard integration of its own, so a Ray Train ``UserCallback`` does it:
it runs in the Train controller, which already writes the stage's checkpoints under the run
directory, and receives every epoch's report (rank 0's metrics are the stage's, summed over
workers). Events go to ``<run dir>/tensorboard/<stage>/``; ``tensorboard --logdir
runs/<name>/tensorboard`` shows all stages side by side.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from raydistill.rundir import TENSORBOARD_DIR as TENSORBOARD_DIR


def scalar_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The finite numbers of one epoch's report, without its epoch counter (the step)."""
    out = {}
    for key, value in metrics.items():
        if key == "epoch" or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class TensorBoardLogger(UserCallback):
    """Writes each epoch's scalars as TensorBoard events, step = epoch number (1-based, as in
    the progress lines). The writer is opened on first use so the callback stays picklable."""

    in_process = True  # after_report works outside Ray Train (train/in_process.py)

    def __init__(self, log_dir: Path | str) -> None:
        self.log_dir = str(log_dir)
        self._writer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {"log_dir": self.log_dir, "_writer": None}

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if not metrics or "epoch" not in metrics[0]:
            return
        if self._writer is None:
            from tensorboardX import SummaryWriter

            Path(self.log_dir).mkdir(parents=True, exist_ok=True)
            # a resumed stage (or a second copy of this callback) must not overwrite the file
            # of an earlier writer started in the same second on the same host
            suffix = f".{os.getpid()}.{id(self)}"
            self._writer = SummaryWriter(log_dir=self.log_dir, flush_secs=5, filename_suffix=suffix)
        step = int(metrics[0]["epoch"]) + 1
        for key, value in scalar_metrics(metrics[0]).items():
            self._writer.add_scalar(key, value, global_step=step)
        self._writer.flush()  # hands the events to the writer thread; on disk within seconds

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def tensorboard_dir(run_dir: Path, stage: str) -> Path:
    return Path(run_dir) / TENSORBOARD_DIR / stage

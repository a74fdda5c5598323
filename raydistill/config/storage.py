"""The ``cache`` and ``output`` sections: where the teacher cache and the run directory live."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from raydistill.config.base import Section


class CacheConfig(Section):
    """The offline teacher cache: Parquet rows of (input, label, teacher outputs) + a manifest."""

    path: Path | None = Field(None, description="null: <run directory>/teacher_cache")
    codec: Literal["fp32", "fp16", "topk"] = Field(
        "fp32", description="how teacher logits are stored (topk keeps the tail mass)"
    )
    k: int = Field(16, ge=1, description="logits kept per sample by the topk codec")


class OutputConfig(Section):
    """Where a run is written, and what it writes besides the model and its history."""

    storage_path: Path = Field(Path("runs"), description="runs go to storage_path/name/")
    keep_checkpoints: int = Field(2, ge=1, description="checkpoints Ray Train keeps per stage")
    report: bool = Field(
        True, description="write report.md and report.html (table, plots) at the end of train"
    )
    tensorboard: bool = Field(
        False, description="write each epoch's metrics as TensorBoard events (run dir/tensorboard)"
    )

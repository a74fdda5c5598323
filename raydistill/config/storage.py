"""The ``cache`` and ``output`` sections: where the teacher cache and the run directory live."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from raydistill.config.base import Section
from raydistill.config.tracking import TrackingConfig


class CacheConfig(Section):
    """The offline teacher cache: Parquet rows of (row key, label, teacher outputs) + a manifest.

    By default (``inputs: join``) the inputs stay in the source: training streams them from
    there and attaches each row's cached outputs by its key. ``inputs: copy`` stores the inputs
    too (a self-contained cache, read without the source).
    """

    path: Path | None = Field(None, description="null: <run directory>/teacher_cache")
    codec: Literal["fp32", "fp16", "topk"] = Field(
        "fp32", description="how teacher logits are stored (topk keeps the tail mass)"
    )
    k: int = Field(16, ge=1, description="logits kept per sample by the topk codec")
    inputs: Literal["join", "copy"] = Field(
        "join",
        description="join: the cache holds no inputs, training joins the outputs to the rows"
        " streamed from the source by row key; copy: the inputs are stored in the cache too",
    )


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
    tracking: TrackingConfig = Field(
        default_factory=TrackingConfig,
        description="experiment trackers (MLflow, Weights & Biases) every stage and trial logs to",
    )

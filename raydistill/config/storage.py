"""The ``cache`` and ``output`` sections: where the teacher cache and the run directory live."""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import Field

from raydistill.config.base import Section
from raydistill.config.tracking import TrackingConfig

# where a run on a storage URI keeps its local working copy (raydistill.remote)
CACHE_ENV = "RAYDISTILL_REMOTE_CACHE"
DEFAULT_CACHE = Path("~/.cache/raydistill/remote-runs")


def is_uri(path: str | Path) -> bool:
    """Whether ``path`` names a filesystem URI (``scheme://...``) rather than a local path."""
    return "://" in str(path) and not str(path).startswith("file://")


def _split_query(uri: str) -> tuple[str, str]:
    base, _, query = uri.partition("?")
    return base.rstrip("/"), f"?{query}" if query else ""


def run_uri(storage_path: str, name: str) -> str:
    """The URI of run ``name`` under ``storage_path`` (a query such as
    ``?endpoint_override=...`` stays at the end, where pyarrow reads it)."""
    base, query = _split_query(storage_path)
    return f"{base}/{name}{query}"


def hide_secrets(uri: str) -> str:
    """``uri`` as it may be printed: a ``user:secret@`` in it (pyarrow's S3 access key and
    secret) becomes ``***@``, and so do ``secret_key``/``session_token`` query values."""
    uri = re.sub(r"://[^/@]+@", "://***@", uri)
    return re.sub(r"((?:secret_key|session_token|access_key)=)[^&]*", r"\1***", uri)


def working_copy(uri: str) -> Path:
    """The local directory that holds a run at ``uri`` while a command works on it: the URI's
    scheme and path under the cache root (the query dropped)."""
    base, _ = _split_query(hide_secrets(uri))
    scheme, _, path = base.partition("://")
    path = path.split("@", 1)[1] if "@" in path.split("/", 1)[0] else path  # no user:key@
    root = Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE).expanduser()
    parts = [p for p in PurePosixPath(path).parts if p not in ("", "/", ".", "..")]
    return (root / scheme / Path(*parts)).resolve()


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

    storage_path: str = Field(
        "runs",
        description="runs go to storage_path/name/: a local directory, or a filesystem URI"
        " (s3://bucket/prefix, gs://bucket/prefix, any pyarrow.fs URI) that the run's files are"
        " uploaded to as they are made (docs/running.md#runs-on-object-storage)",
    )
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

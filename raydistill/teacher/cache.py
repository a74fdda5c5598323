"""The offline teacher cache: one teacher pass written as Parquet, read by train (and tune).

Layout of a cache directory::

    manifest.json          written last: a directory without it is an unfinished cache
    train/*.parquet        rows: input, label, row_id, encoded teacher outputs
    val/*.parquet

The manifest records what the cache was made from (teacher spec and weights hash, data
fingerprint, codec, feature layers) and every file with its size; a job whose key differs, or a
file that is missing or changed, is refused with a message saying what differs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, JobError
from raydistill.data.arrays import LabelledArrays
from raydistill.data.sources import training_datasets
from raydistill.teacher.codec import LogitCodec
from raydistill.teacher.pool import attach_teacher

MANIFEST = "manifest.json"
FORMAT = "raydistill.teacher_cache/1"
SPLITS = ("train", "val")
Log = Callable[[str], None]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def job_codec(job: JobConfig) -> LogitCodec:
    return LogitCodec(job.cache.codec, job.cache.k)


def cache_key(job: JobConfig, teacher_weights: Path, splits: dict[str, LabelledArrays]) -> dict:
    """What a cache must have been made from to serve this job."""
    return {
        "teacher": {
            "model": job.teacher.model,
            "args": job.teacher.args,
            "weights_sha256": file_sha256(teacher_weights),
        },
        "data": {k: splits[k].fingerprint() for k in SPLITS},
        "augment": job.data.augment.model_dump(mode="json") if job.data.augment else None,
        "seed": job.seed if job.data.augment else None,
        "codec": {"kind": job.cache.codec, "k": job.cache.k if job.cache.codec == "topk" else None},
        "feature_layers": job.pool_feature_layers,
        "feature_dtype": job.distill.feature_dtype if job.pool_feature_layers else None,
        "num_classes": splits["train"].num_classes,
        # token rows in the cache are the student's and (when it differs) the teacher's
        "text": (
            {
                **job.data.text.model_dump(mode="json"),
                "student_tokenizer": job.student.text_tokenizer,
                "teacher_tokenizer": job.teacher.text_tokenizer,
            }
            if job.data.text
            else None
        ),
    }


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise JobError(f"teacher cache {directory}: {MANIFEST} is corrupt ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise JobError(f"teacher cache {directory}: unknown format {manifest.get('format')!r}")
    return manifest


def _differences(want: dict, have: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(want) | set(have)):
        a, b = want.get(key), have.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key} (job: {a!r}, cache: {b!r})")
    return out


def verify_cache(directory: Path, key: dict) -> dict[str, Any]:
    """The manifest of a complete cache made for ``key``; a clear error otherwise."""
    manifest = read_manifest(directory)
    if manifest is None:
        raise JobError(f"teacher cache {directory} is missing or unfinished (no {MANIFEST})")
    diffs = _differences(key, manifest["key"])
    if diffs:
        raise JobError(
            f"teacher cache {directory} was made for another job: differs in "
            + "; ".join(diffs[:4])
            + ". Rebuild it with `raydistill cache JOB --fresh` or point cache.path elsewhere"
        )
    for entry in manifest["files"]:
        path = directory / entry["path"]
        if not path.is_file():
            raise JobError(f"teacher cache {directory}: file {entry['path']} is missing")
        if path.stat().st_size != entry["bytes"]:
            raise JobError(
                f"teacher cache {directory}: file {entry['path']} has changed "
                f"({path.stat().st_size} bytes, manifest says {entry['bytes']})"
            )
    return manifest


def write_cache(
    job: JobConfig,
    teacher_weights: Path,
    splits: dict[str, LabelledArrays],
    directory: Path,
    log: Log = print,
) -> dict[str, Any]:
    """Run the teacher pool once over train and val and write the cache; returns its manifest.

    Anything already in ``directory`` is replaced: callers decide when a cache is stale.
    """
    key = cache_key(job, teacher_weights, splits)
    # The manifest goes first: a rebuild killed while deleting or writing then leaves a
    # directory without one, which the next run rebuilds, never an old manifest over new files.
    (directory / MANIFEST).unlink(missing_ok=True)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    codec = job_codec(job)
    num_classes = splits["train"].num_classes
    started = time.perf_counter()
    rows: dict[str, int] = {}
    for split, ds in training_datasets(job, splits).items():
        ds = attach_teacher(ds, job, teacher_weights, num_classes, codec)
        ds.write_parquet(str(directory / split))
        views = job.data.augment.views if job.data.augment and split == "train" else 1
        rows[split] = len(splits[split]) * views
    elapsed = time.perf_counter() - started
    files = [
        {"path": str(p.relative_to(directory)), "bytes": p.stat().st_size}
        for p in sorted(directory.rglob("*.parquet"))
    ]
    passes = sum(rows.values())
    manifest = {
        "format": FORMAT,
        "key": key,
        "rows": rows,
        "teacher_forward_passes": passes,
        "logit_bytes_per_sample": codec.bytes_per_sample(num_classes),
        "parquet_bytes": sum(f["bytes"] for f in files),
        "seconds": round(elapsed, 2),
        "files": files,
    }
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(directory / MANIFEST)  # last and atomic: only now is the cache whole
    log(
        f"[cache] {passes} teacher forward passes in {elapsed:.1f}s -> {directory} "
        f"({job.cache.codec}: {manifest['logit_bytes_per_sample']} B/sample of logits, "
        f"{manifest['parquet_bytes'] / 1e6:.2f} MB of Parquet)"
    )
    return manifest


def ensure_cache(
    job: JobConfig,
    teacher_weights: Path,
    splits: dict[str, LabelledArrays],
    log: Log = print,
    fresh: bool = False,
) -> dict[str, Any]:
    """Build the job's cache when it is missing or unfinished; refuse one made for another job."""
    directory = job.cache_dir
    if not fresh and read_manifest(directory) is not None:
        manifest = verify_cache(directory, cache_key(job, teacher_weights, splits))
        log(f"[cache] reusing {directory} ({manifest['teacher_forward_passes']} rows)")
        return manifest
    if directory.exists() and not fresh:
        log(f"[cache] {directory} is unfinished (no {MANIFEST}; a killed run?): rebuilding")
    return write_cache(job, teacher_weights, splits, directory, log)


def read_cache(directory: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cached splits as Ray datasets (call :func:`verify_cache` first).

    A cache that fits comfortably in Ray's object store is read by this process with pyarrow
    and put there once: epochs (and every tune trial) then read memory, and no read tasks are
    spawned (on a small machine, starting their worker processes costs tens of seconds). A
    larger cache streams from disk every epoch.
    """
    import pyarrow.parquet as pq
    import ray
    import ray.data

    store = ray.available_resources().get("object_store_memory", 0.0)
    # Parquet compresses: budget a few times its size once decoded.
    if manifest is not None and 4 * manifest["parquet_bytes"] < 0.3 * store:
        return {split: ray.data.from_arrow(pq.read_table(directory / split)) for split in SPLITS}
    return {split: ray.data.read_parquet(str(directory / split)) for split in SPLITS}

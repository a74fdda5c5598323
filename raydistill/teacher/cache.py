"""The offline teacher cache: one teacher pass written as Parquet, read by train (and tune).

Layout of a cache directory::

    .raydistill-cache      build marker: raydistill made this directory (and may replace it)
    manifest.json          the cache's key and every file with its size, rows and sha256
    train/*.parquet        rows: input, label, row_id, encoded teacher outputs
    val/*.parquet

A cache is built in a sibling temporary directory (``.<name>.build-*``) and renamed into place
once its manifest is written, all under a file lock beside it (``.<name>.lock``): two jobs
sharing one ``cache.path`` never write into each other's build, and the second finds (and
checks) the first's cache. A job whose key differs, a listed file that is missing or whose
content changed, and a Parquet file the manifest does not list are refused with a message
saying what differs. raydistill replaces only a directory it made (marker or manifest) or an
empty one: ``cache.path`` pointing at a user's folder is refused, never deleted.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from raydistill.config import JobConfig, JobError
from raydistill.data.arrays import LabelledArrays
from raydistill.data.sources import training_rows
from raydistill.files import (
    atomic_write_json,
    check_owned_dir,
    file_sha256,
    read_json,
    remove_owned_dir,
)
from raydistill.progress import RowProgress
from raydistill.rundir import CACHE_BUILD_MARKER as BUILD_MARKER
from raydistill.rundir import CACHE_MANIFEST as MANIFEST
from raydistill.teacher.codec import LogitCodec
from raydistill.teacher.join import CachedOutputs, drop_inputs
from raydistill.teacher.parquet_files import write_parquet_files
from raydistill.teacher.pool import attach_teacher

FORMAT = "raydistill.teacher_cache/1"
SPLITS = ("train", "val")
Log = Callable[[str], None]
_WHAT = "teacher cache (cache.path)"


def job_codec(job: JobConfig) -> LogitCodec:
    """The classifier codec ``cache.codec`` and ``cache.k`` name."""
    return LogitCodec(job.cache.codec, job.cache.k)


def cache_codec(job: JobConfig, num_classes: int) -> Any:
    """How the job's task encodes the teacher outputs it caches (its ``cache_codec`` hook)."""
    from raydistill.tasks import get_task

    return get_task(job).cache_codec(job, num_classes)


def _num_classes(job: JobConfig, splits: dict[str, Any]) -> int:
    from raydistill.tasks import get_task

    return get_task(job).num_classes(splits)


def cache_key(job: JobConfig, teacher_weights: Path, splits: dict[str, LabelledArrays]) -> dict:
    """What a cache must have been made from to serve this job (the task adds its own
    entries: :meth:`~raydistill.tasks.base.Task.cache_key_parts`)."""
    from raydistill.tasks import get_task

    key = {
        "teacher": {
            "model": job.teacher.model,
            "args": job.teacher.args,
            "weights_sha256": file_sha256(teacher_weights),
        },
        "data": {k: splits[k].fingerprint() for k in SPLITS},
        "augment": job.data.augment.model_dump(mode="json") if job.data.augment else None,
        "seed": job.seed if job.data.augment else None,
        "codec": {"kind": job.cache.codec, "k": job.cache.k if job.cache.codec == "topk" else None},
        "inputs": job.cache.inputs,
        "feature_layers": job.pool_feature_layers,
        "feature_dtype": job.distill.feature_dtype if job.pool_feature_layers else None,
        "num_classes": _num_classes(job, splits),
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
    if job.train.precision != "fp32":  # the pool's forwards ran at it (absent: fp32, as before)
        key["teacher"]["precision"] = job.train.precision
    key.update(get_task(job).cache_key_parts(job, splits))
    return key


def _is_cache_marker(path: Path) -> bool:
    """The build marker, or a manifest of this format: what makes a directory a cache."""
    if path.is_symlink() or not path.is_file():
        return False
    if path.name == BUILD_MARKER:
        return True
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except Exception:  # someone else's manifest.json (a web app's) is not ours
        return False


def check_cache_dir(directory: Path) -> None:
    """Refuse a ``cache.path`` that exists and is not a cache raydistill made (nor empty):
    building there would replace a user's folder."""
    check_owned_dir(directory, [BUILD_MARKER, MANIFEST], _WHAT, _is_cache_marker)


_held = threading.local()  # cache paths this thread holds the lock of (the lock is reentrant)


@contextlib.contextmanager
def cache_lock(directory: Path, log: Log = print) -> Iterator[None]:
    """Hold the exclusive lock of one cache path (``flock`` on ``.<name>.lock`` beside it).

    Held across the check and the build, so of two builders (processes, or threads: each opens
    the file itself) the second waits and then sees the first's finished cache. Reentrant
    within one thread (``ensure_cache`` holds it around ``write_cache``).
    """
    directory = Path(directory)
    held: dict[str, int] = _held.__dict__.setdefault("paths", {})
    key = str(directory)
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    with open(directory.parent / f".{directory.name}.lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"[cache] {directory} is being built by another job: waiting for it")
            fcntl.flock(f, fcntl.LOCK_EX)
        held[key] = 1
        try:
            yield
        finally:
            del held[key]
            fcntl.flock(f, fcntl.LOCK_UN)


def read_manifest(directory: Path) -> dict[str, Any] | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    manifest = read_json(path, f"teacher cache {directory}: manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise JobError(f"teacher cache {directory}: unknown format {found!r} in {path}")
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


def parquet_rows(path: Path) -> int:
    """Rows of one Parquet file, from its footer."""
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def file_entry(directory: Path, path: Path) -> dict[str, Any]:
    """The manifest's record of one cache file: path relative to the cache, bytes, rows and
    sha256 of its content."""
    return {
        "path": path.relative_to(directory).as_posix(),
        "bytes": path.stat().st_size,
        "rows": parquet_rows(path),
        "sha256": file_sha256(path),
    }


def _listed_path(directory: Path, entry: dict[str, Any]) -> Path:
    relative = PurePosixPath(str(entry.get("path", "")))
    if (
        relative.is_absolute()
        or ".." in relative.parts
        or relative.parts[:1] not in [(s,) for s in SPLITS]
    ):
        raise JobError(f"teacher cache {directory}: manifest lists an odd path {str(relative)!r}")
    return directory / relative


def listed_files(directory: Path, manifest: dict[str, Any], split: str) -> list[Path]:
    """The Parquet files of ``split`` exactly as the manifest lists them (never a glob: a file
    another build left in the directory is not read)."""
    paths = [_listed_path(directory, e) for e in manifest["files"]]
    return [p for p in paths if p.relative_to(directory).parts[0] == split]


def _check_file(directory: Path, entry: dict[str, Any]) -> None:
    path = _listed_path(directory, entry)
    where = f"teacher cache {directory}: file {entry['path']}"
    if not path.is_file():
        raise JobError(f"{where} is missing")
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise JobError(f"{where} has changed ({size} bytes, manifest says {entry['bytes']})")
    if "sha256" not in entry or "rows" not in entry:
        raise JobError(
            f"{where} has no content hash in the manifest (an older raydistill made it): "
            "rebuild it with `raydistill cache JOB --fresh`"
        )
    if file_sha256(path) != entry["sha256"]:
        raise JobError(f"{where} has changed (its sha256 is not the manifest's)")
    try:
        rows = parquet_rows(path)
    except Exception as exc:
        raise JobError(f"{where} has changed (not readable as Parquet: {exc})") from None
    if rows != entry["rows"]:
        raise JobError(f"{where} has changed ({rows} rows, manifest says {entry['rows']})")


def verify_cache(directory: Path, key: dict) -> dict[str, Any]:
    """The manifest of a complete cache made for ``key``; a one-line error otherwise: another
    key, a listed file missing or changed (size, sha256, rows), rows that do not add up to the
    split's, or a Parquet file the manifest does not list (two builds mixed)."""
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
    listed = set()
    for entry in manifest["files"]:
        _check_file(directory, entry)
        listed.add(_listed_path(directory, entry))
    for split in SPLITS:
        rows = sum(e["rows"] for e in manifest["files"] if e["path"].split("/")[0] == split)
        if rows != manifest["rows"][split]:
            raise JobError(
                f"teacher cache {directory}: the {split} files hold {rows} rows, the manifest "
                f"says {manifest['rows'][split]}"
            )
    unlisted = sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*.parquet") if p not in listed
    )
    if unlisted:
        raise JobError(
            f"teacher cache {directory}: file {unlisted[0]} is not in the manifest "
            f"({len(unlisted)} unlisted; two builds mixed?): rebuild it with "
            "`raydistill cache JOB --fresh`"
        )
    return manifest


def _teacher_pass(
    job: JobConfig,
    teacher_weights: Path,
    splits: dict[str, LabelledArrays],
    directory: Path,
    log: Log = print,
) -> None:
    """Label train and val with the teacher pool and write them as ``directory/<split>/``,
    logging rows written of the total with their rate and ETA when the pass runs long."""
    from concurrent.futures import ThreadPoolExecutor

    from raydistill.tasks import get_task

    num_classes = _num_classes(job, splits)
    codec = cache_codec(job, num_classes)
    datasets = get_task(job).cache_datasets(job, splits)
    rows = training_rows(job, splits)
    progress = RowProgress("cache", "labelled and written", sum(rows[k] for k in datasets), log)
    writes = []
    for split, ds in datasets.items():
        ds = attach_teacher(ds, job, teacher_weights, num_classes, codec)
        if job.cache.inputs == "join":  # the inputs stay in the source (see teacher.join)
            ds = ds.map_batches(drop_inputs, batch_format="numpy")
        writes.append((ds, directory / split))
    # train and val at once: their pools start side by side, not one after the other
    with ThreadPoolExecutor(max_workers=len(writes)) as pool:
        futures = [pool.submit(write_parquet_files, ds, path, progress.add) for ds, path in writes]
        for done in futures:
            done.result()


def _remove_leftovers(directory: Path) -> None:
    """Builds and replaced caches a killed run left beside ``directory`` (call with the lock
    held: no other builder is using them)."""
    for pattern in (f".{directory.name}.build-*", f".{directory.name}.old-*"):
        for leftover in directory.parent.glob(pattern):
            with contextlib.suppress(JobError):  # not ours after all: left alone
                remove_owned_dir(leftover, [BUILD_MARKER, MANIFEST], _WHAT, _is_cache_marker)


def _move_into_place(build: Path, directory: Path) -> None:
    """Rename the finished build onto ``directory``; a cache there before is moved aside first
    (renames only: killed in between, there is no cache, never a half-replaced one)."""
    old = None
    if directory.exists():
        old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(directory, old)
    os.rename(build, directory)
    if old is not None:
        remove_owned_dir(old, [BUILD_MARKER, MANIFEST], _WHAT, _is_cache_marker)


def write_cache(
    job: JobConfig,
    teacher_weights: Path,
    splits: dict[str, LabelledArrays],
    directory: Path,
    log: Log = print,
) -> dict[str, Any]:
    """Run the teacher pool once over train and val and write the cache; returns its manifest.

    Anything already in ``directory`` is replaced (callers decide when a cache is stale), but
    only when raydistill made it (or it is empty); otherwise a one-line :class:`JobError`. The
    build runs in a sibling temporary directory under the cache's lock and is renamed into
    place once whole.
    """
    directory = Path(directory)
    check_cache_dir(directory)  # before the teacher pass: a user's folder fails at once
    key = cache_key(job, teacher_weights, splits)
    num_classes = _num_classes(job, splits)
    codec = cache_codec(job, num_classes)
    with cache_lock(directory, log):
        check_cache_dir(directory)
        _remove_leftovers(directory)
        build = Path(tempfile.mkdtemp(prefix=f".{directory.name}.build-", dir=directory.parent))
        try:
            (build / BUILD_MARKER).write_text(f"{FORMAT}: a teacher cache built by raydistill\n")
            started = time.perf_counter()
            _teacher_pass(job, teacher_weights, splits, build, log)
            elapsed = time.perf_counter() - started
            # the build directory is this pass's alone: every Parquet file in it is its own
            files = [file_entry(build, p) for p in sorted(build.rglob("*.parquet"))]
            rows = {
                split: sum(f["rows"] for f in files if f["path"].split("/")[0] == split)
                for split in SPLITS
            }
            passes = sum(rows.values())
            manifest = {
                "format": FORMAT,
                "key": key,
                "inputs": job.cache.inputs,
                "rows": rows,
                "teacher_forward_passes": passes,
                "logit_bytes_per_sample": codec.bytes_per_sample(num_classes),
                "parquet_bytes": sum(f["bytes"] for f in files),
                "seconds": round(elapsed, 2),
                "files": files,
            }
            atomic_write_json(build / MANIFEST, manifest)
            _move_into_place(build, directory)
        except BaseException:
            shutil.rmtree(build, ignore_errors=True)
            raise
    log(
        f"[cache] {passes} teacher forward passes in {elapsed:.1f}s -> {directory} "
        f"({key['codec']['kind']}: {manifest['logit_bytes_per_sample']} B/sample of logits, "
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
    """Build the job's cache when it is missing or unfinished; refuse one made for another job,
    and a ``cache.path`` that is not a cache at all. Check and build happen under the cache's
    lock: a second job sharing the path waits, then reuses (or refuses) the first's cache."""
    directory = job.cache_dir
    check_cache_dir(directory)
    with cache_lock(directory, log):
        if not fresh and read_manifest(directory) is not None:
            manifest = verify_cache(directory, cache_key(job, teacher_weights, splits))
            log(f"[cache] reusing {directory} ({manifest['teacher_forward_passes']} rows)")
            return manifest
        if directory.exists() and not fresh:
            log(f"[cache] {directory} is unfinished (no {MANIFEST}; a killed run?): rebuilding")
        return write_cache(job, teacher_weights, splits, directory, log)


def read_cache(directory: Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cached splits (call :func:`verify_cache` first), read from exactly the files the
    manifest lists: a joined cache's outputs per split (:class:`CachedOutputs`, joined onto the
    streamed rows by :func:`raydistill.teacher.join.join_outputs`), a copied cache's rows as
    Ray datasets.

    A cache that fits comfortably in Ray's object store is read by this process with pyarrow
    and put there once: epochs (and every tune trial) then read memory, and no read tasks are
    spawned (on a small machine, starting their worker processes costs tens of seconds). A
    larger cache streams from disk every epoch.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    import ray.data

    if manifest is None:
        manifest = read_manifest(directory)
        if manifest is None:
            raise JobError(f"teacher cache {directory} is missing or unfinished (no {MANIFEST})")
    files = {split: listed_files(directory, manifest, split) for split in SPLITS}
    if manifest["key"].get("inputs") == "join":  # outputs only: joined onto the streamed rows
        return {
            split: CachedOutputs.from_table(
                pa.concat_tables([pq.read_table(p) for p in paths]), f"teacher cache {directory}"
            )
            for split, paths in files.items()
        }
    store = ray.available_resources().get("object_store_memory", 0.0)
    # Parquet compresses: budget a few times its size once decoded.
    if 4 * manifest["parquet_bytes"] < 0.3 * store:
        return {
            split: ray.data.from_arrow(pa.concat_tables([pq.read_table(p) for p in paths]))
            for split, paths in files.items()
        }
    return {split: ray.data.read_parquet([str(p) for p in paths]) for split, paths in files.items()}

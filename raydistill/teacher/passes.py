"""How the teacher reaches the distilled student: one strategy per ``distill.teacher_pass``.

=============  =============================================================  ===============
strategy       what happens                                                   teacher passes
=============  =============================================================  ===============
``once``       the actor pool labels train and val once; rows are             one
               materialized in the object store for every epoch
``per_epoch``  the pool runs inside the lazy pipeline, so each epoch sees     one per epoch
               fresh teacher outputs
``cache``      ``raydistill cache`` (or the first train) writes the pool's    one, then none
               outputs as Parquet; train and tune join them to the streamed
               inputs by row key
``worker``     no pool: a frozen teacher copy runs inside every train         one per epoch
               worker (detection, where proposals must be shared)
=============  =============================================================  ===============

Tapped features wanted with ``features_from: worker`` add a frozen copy's per-epoch pass to any
strategy.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from raydistill.config import JobConfig
from raydistill.teacher.cache import ensure_cache, job_codec, read_cache, read_manifest
from raydistill.teacher.codec import LogitCodec
from raydistill.teacher.join import CachedOutputs, join_outputs
from raydistill.teacher.pool import attach_teacher
from raydistill.teacher.topk_codec import pool_codec

Log = Callable[[str], None]


@dataclass(frozen=True)
class Attached:
    """The student stage's datasets with the teacher's outputs in their rows, and the codec
    those outputs are encoded with."""

    datasets: dict[str, Any]
    codec: LogitCodec


class TeacherPass:
    """One way of running the teacher for a distilled stage."""

    name: ClassVar[str]

    def planned_passes(self, job: JobConfig, rows: int) -> int:
        """Samples the teacher will label for the stage (``rows``: one pass's rows)."""
        raise NotImplementedError

    def attach(
        self,
        job: JobConfig,
        datasets: dict[str, Any],
        teacher_weights: Path,
        splits: dict[str, Any],
        num_classes: int,
        log: Log,
        cached: dict[str, Any] | None = None,
    ) -> Attached:
        raise NotImplementedError


class PoolPerEpoch(TeacherPass):
    name = "per_epoch"

    def planned_passes(self, job: JobConfig, rows: int) -> int:
        return rows * job.train.epochs

    def attach(self, job, datasets, teacher_weights, splits, num_classes, log, cached=None):
        codec = pool_codec(job, num_classes)
        return Attached(
            {
                k: attach_teacher(ds, job, teacher_weights, num_classes, codec)
                for k, ds in datasets.items()
            },
            codec,
        )


class PoolOnce(PoolPerEpoch):
    name = "once"

    def planned_passes(self, job: JobConfig, rows: int) -> int:
        return rows

    def attach(self, job, datasets, teacher_weights, splits, num_classes, log, cached=None):
        held, limit = once_bytes(job, splits, num_classes), once_limit(job)
        if held > limit:
            log(
                f"[teacher] train and val rows take {held / 1e6:,.0f} MB, more than teacher_pass"
                f" once holds in the object store ({limit / 1e6:,.0f} MB, distill.once_max_mb):"
                f" the teacher pass is written through the cache at {job.cache_dir} instead"
            )
            return CachePass().attach(job, datasets, teacher_weights, splits, num_classes, log)
        lazy = super().attach(job, datasets, teacher_weights, splits, num_classes, log)
        started = time.perf_counter()
        materialized = materialize_together(lazy.datasets)
        labelled = sum(ds.count() for ds in materialized.values())
        log(
            f"[teacher] one pass over {labelled} rows in {time.perf_counter() - started:.1f}s "
            f"({job.scaling.teacher_pool.max_actors} actor(s) max)"
        )
        return Attached(materialized, lazy.codec)


def materialize_together(datasets: dict[str, Any]) -> dict[str, Any]:
    """Every dataset materialized at once, one thread each: train's and val's teacher pools
    start side by side (``planned_cpus`` budgets two), instead of val's pool starting only
    after train's pass (actor start-up, not inference, is most of a small pass)."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, len(datasets))) as pool:
        futures = {k: pool.submit(ds.materialize) for k, ds in datasets.items()}
        return {k: f.result() for k, f in futures.items()}


def once_bytes(job: JobConfig, splits: dict[str, Any], num_classes: int) -> int:
    """Bytes ``teacher_pass: once`` would hold: train (every view) and val rows with their
    fp32 logits."""
    views = job.data.augment.views if job.data.augment else 1
    logits = 4 * num_classes
    return sum(
        (splits[k].nbytes + logits * len(splits[k])) * (views if k == "train" else 1)
        for k in ("train", "val")
        if hasattr(splits[k], "nbytes")
    )


def once_limit(job: JobConfig) -> float:
    """``distill.once_max_mb`` in bytes, or half the object store of the Ray in use."""
    if job.distill.once_max_mb is not None:
        return job.distill.once_max_mb * 1e6
    import ray

    return 0.5 * ray.cluster_resources().get("object_store_memory", float("inf"))


class CachePass(TeacherPass):
    name = "cache"

    def planned_passes(self, job: JobConfig, rows: int) -> int:
        return 0 if read_manifest(job.cache_dir) is not None else rows

    def attach(self, job, datasets, teacher_weights, splits, num_classes, log, cached=None):
        if cached is None:  # tune reads the cache once for every trial and passes it here
            manifest = ensure_cache(job, teacher_weights, splits, log)
            cached = read_cache(job.cache_dir, manifest)
        if all(isinstance(v, CachedOutputs) for v in cached.values()):
            what = f"teacher cache {job.cache_dir}"
            cached = {k: join_outputs(ds, cached[k], what) for k, ds in datasets.items()}
        return Attached(cached, job_codec(job))


class WorkerCopy(TeacherPass):
    name = "worker"

    def planned_passes(self, job: JobConfig, rows: int) -> int:
        return rows * job.train.epochs

    def attach(self, job, datasets, teacher_weights, splits, num_classes, log, cached=None):
        return Attached(datasets, LogitCodec())


STRATEGIES: dict[str, TeacherPass] = {
    s.name: s for s in (PoolOnce(), PoolPerEpoch(), CachePass(), WorkerCopy())
}


def planned_teacher_passes(job: JobConfig, mode: str, rows: int) -> int:
    """Teacher forward passes (samples) of the distilled stage with strategy ``mode``, plus a
    frozen copy's per-worker passes when the workers compute the tapped features themselves."""
    passes = STRATEGIES[mode].planned_passes(job, rows)
    if mode != "worker" and job.distill.feature_layers and job.distill.features_from == "worker":
        passes += rows * job.train.epochs
    return passes

"""Teacher actors fed by plain actor calls: the one-pass teacher over splits in driver memory.

A Ray Data actor-pool stage costs, on a small split, far more than the teacher's forward: a
streaming executor per dataset, a pool per dataset whose actors start (Python, ``import
torch``, the model) only when the dataset runs, and a count afterwards. Here the actors are
started once (they may be started early, before the teacher's weights exist: they load them
at their first call), both splits' blocks go to the same actors, and the labelled blocks stay
in the object store as the materialized datasets' blocks. The actors keep the pool's promise:
teacher inference runs in its own processes, apart from the train workers, with the resources
``scaling.teacher_pool`` gives them (CPUs, GPUs, custom resources), ``min_actors`` to
``max_actors`` of them.

Rows come out exactly as the Ray Data pool writes them: the same batches (``batch_size``
rows) through the same :class:`~raydistill.teacher.pool.TeacherPredictor`, converted between
Arrow and numpy by Ray Data's own block accessors.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, TeacherPoolConfig
from raydistill.teacher.codec import LogitCodec


class TeacherPredictorActor:
    """One teacher actor (a Ray actor class: ``ray.remote`` is applied by
    :func:`start_actors`). Its constructor only imports torch and the model code; the
    teacher is built, with its weights, at the first :meth:`label` call of a given setup (a
    :class:`~raydistill.teacher.pool.TeacherPredictor`, or a
    :class:`~raydistill.teacher.pool.TeacherGenerator` when the setup holds ``generate``)."""

    def __init__(self) -> None:
        import torch  # noqa: F401  (the import is most of an actor's start-up: pay it now)

        from raydistill.teacher import pool  # noqa: F401

        self._setup: tuple | None = None
        self._predictor: Any = None

    def ready(self) -> bool:
        return True

    def label(self, setup: dict[str, Any], batch_size: int, table: Any) -> tuple[Any, int]:
        """``table`` (an Arrow block of rows) with the teacher's outputs added, ``batch_size``
        rows per forward; returns the block and its row count."""
        import pyarrow as pa
        from ray.data.block import BlockAccessor

        from raydistill.teacher.pool import TeacherGenerator, TeacherPredictor

        key = tuple(sorted((k, repr(v)) for k, v in setup.items()))
        if key != self._setup:
            # a setup with generation settings answers prompts (teacher_pass: generate)
            kind = TeacherGenerator if "generate" in setup else TeacherPredictor
            self._predictor, self._setup = kind(**setup), key
        parts = []
        for start in range(0, table.num_rows, batch_size):
            batch = BlockAccessor.for_block(table.slice(start, batch_size)).to_batch_format("numpy")
            parts.append(BlockAccessor.batch_to_block(self._predictor(batch)))
        out = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        return out, out.num_rows


def predictor_setup(
    job: JobConfig, weights: Path, num_classes: int, codec: LogitCodec | None
) -> dict[str, Any]:
    """The :class:`~raydistill.teacher.pool.TeacherPredictor` arguments of ``job``'s teacher
    (the same the Ray Data pool builds its actors with)."""
    return {
        "spec": job.teacher,
        "weights": str(weights),
        "num_classes": num_classes,
        "feature_layers": job.pool_feature_layers,
        "feature_dtype": job.distill.feature_dtype,
        "use_gpu": job.scaling.teacher_pool.num_gpus > 0,
        "codec": codec,
    }


@dataclass
class TeacherActors:
    """``max_actors`` teacher actors being started (or started); :meth:`label` uses those
    ready, never fewer than ``min_actors``."""

    pool: TeacherPoolConfig
    actors: list[Any]
    ready: list[Any] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)

    def label(
        self,
        setup: dict[str, Any],
        tables: list[Any],
        on_rows: Callable[[int], None] | None = None,
    ) -> tuple[list[Any], list[int], float]:
        """Label every Arrow block in ``tables`` (object refs or tables), in order; returns
        the labelled blocks' refs, their row counts and the seconds spent waiting for the
        first actors to start (0 when they were already up). ``on_rows`` is called with each
        block's rows as its labels come back (progress)."""
        import ray

        waiting = {a.ready.remote(): a for a in self.actors if a not in self.ready}
        waited = time.perf_counter()
        need = max(1, min(self.pool.min_actors, len(self.actors))) - len(self.ready)
        if need > 0:
            done, _ = ray.wait(list(waiting), num_returns=need)
            self._mark_ready(done, waiting)
        waited = time.perf_counter() - waited
        results: list[Any] = [None] * len(tables)
        busy: dict[Any, tuple[Any, int]] = {}  # row-count ref -> (actor, block index)
        idle, todo = list(self.ready), list(range(len(tables)))
        while todo or busy:
            while idle and todo:
                actor, i = idle.pop(0), todo.pop(0)
                block, rows = actor.label.options(num_returns=2).remote(
                    setup, self.pool.batch_size, tables[i]
                )
                results[i] = (block, rows)
                busy[rows] = (actor, i)
            done, _ = ray.wait(list(busy) + list(waiting), num_returns=1)
            for ref in done:
                if ref in waiting:  # one more actor came up: it takes the next block
                    self._mark_ready([ref], waiting)
                    idle.append(self.ready[-1])
                else:
                    rows = ray.get(ref)  # a teacher error surfaces here, with its traceback
                    idle.append(busy.pop(ref)[0])
                    if on_rows is not None:
                        on_rows(rows)
        return [r[0] for r in results], ray.get([r[1] for r in results]), waited

    def _mark_ready(self, refs: list[Any], waiting: dict[Any, Any]) -> None:
        import ray

        for ref in refs:
            ray.get(ref)  # an actor that failed to start raises here
            self.ready.append(waiting.pop(ref))

    def stop(self) -> None:
        """Kill the actors: their CPUs and GPUs go back to the train workers."""
        import ray

        for actor in self.actors:
            with contextlib.suppress(Exception):  # gone already (its Ray shut down)
                ray.kill(actor)
        self.actors, self.ready = [], []


def start_actors(pool: TeacherPoolConfig) -> TeacherActors:
    """Start ``pool.max_actors`` teacher actors with the pool's resources; returns at once
    (the actors come up in the background)."""
    import ray

    from raydistill.runtime import pool_max_actors

    remote = ray.remote(
        num_cpus=pool.num_cpus,
        num_gpus=pool.num_gpus,
        resources=pool.resources or None,
    )(TeacherPredictorActor)
    count = pool_max_actors(pool)
    return TeacherActors(pool, [remote.remote() for _ in range(max(1, count))])


def block_refs(ds: Any) -> list[Any]:
    """The Arrow blocks of ``ds`` (executed: transforms such as augmentation run first)."""
    return ds.to_arrow_refs()

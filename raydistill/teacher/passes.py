"""How the teacher reaches the distilled student: one strategy per ``distill.teacher_pass``.

=============  =============================================================  ===============
strategy       what happens                                                   teacher passes
=============  =============================================================  ===============
``once``       teacher actors label train and val once (in-memory splits:     one
               actor calls, :mod:`~raydistill.teacher.actors`; streamed:
               the Ray Data pool); rows are held in the object store for
               every epoch
``per_epoch``  the pool runs inside the lazy pipeline, so each epoch sees     one per epoch
               fresh teacher outputs
``cache``      ``raydistill cache`` (or the first train) writes the pool's    one, then none
               outputs as Parquet; train and tune join them to the streamed
               inputs by row key
``worker``     no pool: a frozen teacher copy runs inside every train         one per epoch
               worker (detection, where proposals must be shared)
``generate``   causal LMs: teacher actors answer the train prompts once       one, plus one
               (sequence-level KD); the student trains on the answers, with   decoding step
               or without their per-token logits; val keeps its references    per new token
               and is scored once
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

from raydistill.columns import INPUT, ROW_ID
from raydistill.config import JobConfig
from raydistill.data.sources import from_tables, training_rows
from raydistill.progress import RowProgress
from raydistill.runtime import pool_max_actors
from raydistill.teacher.actors import TeacherActors, block_refs, predictor_setup, start_actors
from raydistill.teacher.cache import cache_codec, ensure_cache, read_cache, read_manifest
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
    # the stage itself starts the teacher actor pool (its resources are checked first)
    uses_pool: ClassVar[bool] = False
    # the pool runs once over in-memory rows, so its actors may be started before the stage
    # (start_teacher_actors) and be up when it needs them
    starts_early: ClassVar[bool] = False

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
    uses_pool = True

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
    starts_early = True

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
        codec = pool_codec(job, num_classes)
        started = time.perf_counter()
        total = sum(v for k, v in training_rows(job, splits).items() if k in datasets)
        progress = RowProgress("teacher", "labelled", total, log)
        if all(in_memory(splits[k]) for k in datasets):
            materialized, rows, startup = label_in_memory(
                job, datasets, teacher_weights, num_classes, codec, progress.add
            )
            labelled = sum(rows.values())
        else:  # a streamed split: the Ray Data pool labels it as it is read
            lazy = super().attach(job, datasets, teacher_weights, splits, num_classes, log)
            materialized, startup = materialize_together(lazy.datasets, progress.add), None
            labelled = progress.done
        pool = job.scaling.teacher_pool
        note = f", {startup:.1f}s of it waiting for the actors to start" if startup else ""
        log(
            f"[teacher] one pass over {labelled} rows in {time.perf_counter() - started:.1f}s "
            f"({pool_max_actors(pool)} actor(s) max{note})"
        )
        return Attached(materialized, codec)


def in_memory(split: Any) -> bool:
    """A split held in driver memory (arrays), not streamed from files by a Ray Data reader."""
    return not hasattr(split, "dataset")


def start_teacher_actors(job: JobConfig) -> None:
    """Start the job's teacher actors now, in the background, for its ``teacher_pass: once``
    or ``generate`` (they load the teacher's weights at their first call): call this as early
    as the job allows, such as before the teacher stage trains, and the pass finds them started.
    Does nothing for another ``teacher_pass``, or when actors were started already."""
    global _EARLY
    strategy = STRATEGIES.get(job.distill.teacher_pass)
    early = strategy is not None and strategy.starts_early
    if not early or (_EARLY is not None and _EARLY[0] == _actors_key(job)):
        return
    stop_teacher_actors()
    _EARLY = (_actors_key(job), start_actors(job.scaling.teacher_pool))


def stop_teacher_actors() -> None:
    """Kill actors :func:`start_teacher_actors` started and no pass used."""
    global _EARLY
    if _EARLY is not None:
        _EARLY[1].stop()
        _EARLY = None


_EARLY: tuple[str, TeacherActors] | None = None


def _actors_key(job: JobConfig) -> str:
    """What early actors must match to serve ``job``: its pool and the Ray it runs on."""
    import ray

    return f"{ray.get_runtime_context().get_job_id()}:{job.scaling.teacher_pool!r}"


def label_in_memory(
    job: JobConfig,
    datasets: dict[str, Any],
    weights: Path,
    num_classes: int,
    codec: LogitCodec,
    on_rows: Callable[[int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, int], float]:
    """Every dataset's blocks labelled by one set of teacher actors (plain actor calls, no Ray
    Data pool); returns the materialized datasets, their rows and the seconds spent waiting for
    the actors to start (``on_rows``: called with each block's rows as they come back). The
    actors are killed afterwards."""
    import ray

    actors = _take_early(job) or start_actors(job.scaling.teacher_pool)
    try:
        blocks = {k: block_refs(ds) for k, ds in datasets.items()}  # while the actors start
        labelled, rows, waited = actors.label(
            predictor_setup(job, weights, num_classes, codec),
            [ref for refs in blocks.values() for ref in refs],
            on_rows,
        )
    finally:
        actors.stop()
    out, counts, at = {}, {}, 0
    for k, refs in blocks.items():  # the flat list back into splits, in order
        # the tables through this process (rows held in memory: small), not from_arrow_refs:
        # its remote metadata tasks start worker processes that slow the next stage's epochs
        out[k] = from_tables(ray.get(labelled[at : at + len(refs)]))
        counts[k], at = sum(rows[at : at + len(refs)]), at + len(refs)
    return out, counts, waited


def materialize_together(
    datasets: dict[str, Any], on_rows: Callable[[int], None] | None = None
) -> dict[str, Any]:
    """Every dataset materialized at once, one thread each: train's and val's teacher pools
    start side by side (``planned_cpus`` budgets two), instead of val's pool starting only
    after train's pass (actor start-up, not inference, is most of a small pass). ``on_rows``
    is called with the rows of each block as the pool hands it out (from those threads)."""
    from concurrent.futures import ThreadPoolExecutor

    def run(ds: Any) -> Any:
        return ds.materialize() if on_rows is None else materialize_counting(ds, on_rows)

    with ThreadPoolExecutor(max_workers=max(1, len(datasets))) as pool:
        futures = {k: pool.submit(run, ds) for k, ds in datasets.items()}
        return {k: f.result() for k, f in futures.items()}


def materialize_counting(ds: Any, on_rows: Callable[[int], None]) -> Any:
    """``ds`` run to its blocks, held in the object store like ``materialize``, calling
    ``on_rows`` with each block's rows (from its metadata: no block is fetched) as it comes."""
    import ray.data

    refs = []
    for bundle in ds.iter_internal_ref_bundles():
        refs.extend(bundle.block_refs)
        on_rows(bundle.num_rows() or 0)
    # an empty split has no block to rebuild a dataset from: Ray Data makes its empty one
    return ray.data.from_arrow_refs(refs) if refs else ds.materialize()


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
        return Attached(cached, cache_codec(job, num_classes))


class WorkerCopy(TeacherPass):
    name = "worker"

    def planned_passes(self, job: JobConfig, rows: int) -> int:
        return rows * job.train.epochs

    def attach(self, job, datasets, teacher_weights, splits, num_classes, log, cached=None):
        return Attached(datasets, LogitCodec())


class PoolGenerate(TeacherPass):
    """Sequence-level KD (``task: causal_lm``, ``lm.generate``): one set of teacher actors
    answers every train prompt (:class:`~raydistill.teacher.pool.TeacherGenerator`) and then
    scores the val rows as ``once`` does; the train rows become the teacher's answers. With
    ``lm.generate.logits`` the answers carry the teacher's per-token outputs too; without,
    they carry none and the step is next-token CE on them (the codec decodes to no teacher).
    The answers are written to ``<run dir>/generated.jsonl`` (ids and text) to be read."""

    name = "generate"
    uses_pool = starts_early = True

    def planned_passes(self, job: JobConfig, rows: int) -> int:
        return rows  # each train prompt answered (plus a decoding step per token), val scored

    def attach(self, job, datasets, teacher_weights, splits, num_classes, log, cached=None):
        from raydistill.data.lm_splits import lm_config, shared_tokenizer

        settings = lm_config(job).generate
        tokenizer, _ = shared_tokenizer(job)
        scoring = pool_codec(job, num_classes)
        setup = {
            **predictor_setup(job, teacher_weights, num_classes, scoring),
            "precision": job.train.precision,
        }
        generator = {
            k: setup[k] for k in ("spec", "weights", "num_classes", "use_gpu", "precision")
        }
        generator.update(
            generate=settings,
            seq_len=splits["train"].rows.shape[-1],
            eos_id=int(tokenizer.eos_token_id),
            pad_id=int(tokenizer.pad_token_id),
            seed=job.seed,
            codec=scoring if settings.logits else None,
        )
        started = time.perf_counter()
        actors = _take_early(job) or start_actors(job.scaling.teacher_pool)
        try:
            train = block_refs(datasets["train"])
            progress = RowProgress("teacher", "answered", len(splits["train"]), log)
            answered, _, waited = actors.label(generator, train, progress.add)
            val, val_rows, _ = actors.label(setup, block_refs(datasets["val"]))
        finally:
            actors.stop()
        import ray

        # fetched once, for the file and the datasets (LM rows are held in memory), and made
        # datasets as label_in_memory makes its own, without from_arrow_refs' remote tasks
        answers = ray.get(answered)
        out = {"train": from_tables(answers), "val": from_tables(ray.get(val))}
        written = job.run_dir / GENERATED
        count, tokens = write_generated(answers, tokenizer, written)
        log(
            f"[teacher] generated {count} answers ({tokens} target tokens) to "
            f"{len(splits['train'])} train prompts and scored {sum(val_rows)}"
            f" val rows (reference answers) in {time.perf_counter() - started:.1f}s "
            f"({waited:.1f}s waiting for the actors); answers in {written}"
        )
        codec = scoring if settings.logits else WhereShipped(scoring)
        return Attached(out, codec)


GENERATED = "generated.jsonl"


def write_generated(tables: list[Any], tokenizer: Any, path: Path) -> tuple[int, int]:
    """The generated rows of ``tables`` (Arrow tables) as JSON lines at ``path``: per row its
    ``row_id``, ``prompt_row_id``, prompt and answer ids and their text; returns the rows and
    their target tokens."""
    import json

    from ray.data.block import BlockAccessor

    from raydistill.data.lm_text import row_prompt
    from raydistill.teacher.pool import PROMPT_ROW

    path.parent.mkdir(parents=True, exist_ok=True)
    count = tokens = 0
    with path.open("w", encoding="utf-8") as out:
        for table in tables:
            table = table.select([INPUT, ROW_ID, PROMPT_ROW])
            batch = BlockAccessor.for_block(table).to_batch_format("numpy")
            for row, row_id, source in zip(
                batch[INPUT], batch[ROW_ID], batch[PROMPT_ROW], strict=True
            ):
                prompt = row_prompt(row, prompt_response=True)
                answer = row[0][row[2] == 1].tolist()  # the targets: answer and closing eos
                record = {
                    "row_id": int(row_id),
                    "prompt_row_id": int(source),
                    "prompt_ids": prompt.tolist(),
                    "answer_ids": answer,
                    "prompt": tokenizer.decode(prompt.tolist()),
                    "answer": tokenizer.decode(answer, skip_special_tokens=True),
                }
                out.write(json.dumps(record) + "\n")
                count, tokens = count + 1, tokens + len(answer)
    return count, tokens


@dataclass(frozen=True)
class WhereShipped:
    """A codec that decodes a batch carrying none of its columns to no teacher (None): the
    generated train rows without logits, next to val rows the pool scored with ``codec``."""

    codec: Any

    def columns(self) -> list[str]:
        return self.codec.columns()

    def decode(self, columns: Any, num_classes: int) -> Any:
        if not any(c in columns for c in self.codec.columns()):
            return None
        return self.codec.decode(columns, num_classes)

    def bytes_per_sample(self, num_classes: int) -> int:
        return self.codec.bytes_per_sample(num_classes)


def _take_early(job: JobConfig) -> TeacherActors | None:
    """Actors :func:`start_teacher_actors` started for ``job``, now the caller's to stop."""
    global _EARLY
    if _EARLY is not None and _EARLY[0] == _actors_key(job):
        actors, _EARLY = _EARLY[1], None
        return actors
    stop_teacher_actors()
    return None


STRATEGIES: dict[str, TeacherPass] = {
    s.name: s for s in (PoolOnce(), PoolPerEpoch(), CachePass(), WorkerCopy(), PoolGenerate())
}


def planned_teacher_passes(job: JobConfig, mode: str, rows: int) -> int:
    """Teacher forward passes (samples) of the distilled stage with strategy ``mode``, plus a
    frozen copy's per-worker passes when the workers compute the tapped features themselves."""
    passes = STRATEGIES[mode].planned_passes(job, rows)
    if mode != "worker" and job.distill.feature_layers and job.distill.features_from == "worker":
        passes += rows * job.train.epochs
    return passes

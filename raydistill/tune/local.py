"""Trials that train in their own process: the shared epoch loop inside the Tune trial.

A single-worker trial needs no worker group: starting a ``TorchTrainer`` (controller, worker
group, dataset executor) costs 30-40 s on a small machine, longer than many trials train. So a
trial with one worker runs :func:`raydistill.train.loop.run_epochs` in the trial function itself,
on rows already in memory, and reports every epoch straight to Tune. Trials of a job search
(:mod:`.trial`) and of the in-memory temperature search (:mod:`.in_memory`) both report through
:class:`TuneTrialContext`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raydistill.train.context import LocalShard, _say
from raydistill.train.in_process import InProcessContext
from raydistill.tune.results import EPOCHS_DONE


def tune_row(metrics: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """An epoch's metrics as Tune takes them: scalars only, with the scheduler's clock
    (``epochs_done``, 1-based) and ``extra`` (what the results table needs)."""
    row = {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}
    row[EPOCHS_DONE] = int(row["epoch"]) + 1
    row.update(extra)
    return row


def local_shards(datasets: dict[str, Any]) -> dict[str, Any]:
    """Ray datasets (or rows already in memory) as :class:`LocalShard` s: every column as one
    array [N, ...]. The cache a search reads is in the object store already, so this is a
    copy out of shared memory, not a pipeline run per epoch."""
    out: dict[str, Any] = {}
    for name, ds in datasets.items():
        if isinstance(ds, LocalShard):
            out[name] = ds
            continue
        parts: dict[str, list[np.ndarray]] = {}
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for column, values in batch.items():
                parts.setdefault(column, []).append(values)
        out[name] = LocalShard({k: np.concatenate(v) for k, v in parts.items()})
    return out


def shared_rows(cached: dict[str, Any], job: Any) -> dict[str, Any]:
    """The shared cache as the rows every in-process trial trains on, copied out of the
    object store once by the driver: a trial then starts without running a Ray Data
    pipeline of its own (its first one in a fresh process costs tens of seconds on a small
    machine). Only a cache already held in memory (Ray's ``MaterializedDataset`` s, which
    ``read_cache`` makes of a small copied cache), and only without augmented views (their
    split runs on Ray Data); otherwise ``cached`` as it is."""
    from ray.data.dataset import MaterializedDataset

    if job.data.augment is not None:
        return cached
    if not all(isinstance(v, MaterializedDataset) for v in cached.values()):
        return cached
    return local_shards(cached)


class TuneTrialContext(InProcessContext):
    """The loop's context inside a Tune trial: an :class:`InProcessContext` (rows in memory,
    one process, each epoch's state in ``stage_dir``) that also reports every epoch to Tune
    (``ray.tune.report``) with ``extra`` entries in the row. ``to_tune`` attaches the epoch's
    checkpoint to the Tune report too (PBT copies a good trial's checkpoint into a poor one).
    """

    def __init__(
        self,
        datasets: dict[str, Any],
        extra: dict[str, Any] | None = None,
        *,
        to_tune: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(datasets, **kwargs)
        self.extra = extra or {}
        self.to_tune = to_tune
        self._pending: tuple[dict[str, Any], Any] | None = None

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        from ray import tune

        super().report(metrics, state)
        given = None
        if self.to_tune:
            assert self.last_checkpoint is not None, "to_tune needs a stage_dir"
            given = tune.Checkpoint.from_directory(str(self.last_checkpoint))
        # Told to Tune after the loop's epoch line (the next say, or flush_report): a scheduler
        # that stops the trial does so inside tune.report, and the line would be lost.
        self._pending = (tune_row(metrics, self.extra), given)

    def flush_report(self) -> None:
        """Hand the epoch reported last to Tune, if it has not been yet."""
        from ray import tune

        pending, self._pending = self._pending, None
        if pending is not None:
            tune.report(pending[0], checkpoint=pending[1])

    def say(self, line: str) -> None:
        super().say(line)
        self.flush_report()


def in_process(job: Any) -> bool:
    """Whether a trial of ``job`` trains in its own process: one worker, no worker group."""
    return job.scaling.workers == 1


def trial_resources(job: Any) -> dict[str, float]:
    """What an in-process trial reserves: its one worker's (as Ray Train would)."""
    s = job.scaling
    out = {"CPU": s.cpus_per_worker, **s.resources_per_worker}
    if s.use_gpu:
        out.setdefault("GPU", 1.0)
    return out


def fit_in_process(
    job: Any,
    splits: dict[str, Any],
    teacher_weights: Path,
    label: str,
    extra: dict[str, Any],
    cached: dict[str, Any] | None = None,
    shapes: Any = None,
    resume_from: Path | None = None,
    to_tune: bool = False,
    started: float | None = None,
) -> int:
    """Train a trial's distilled student in this process, reporting every epoch to Tune;
    the stage's weights and history land in its run directory as a Ray Train run's do.

    It continues from the newer of ``resume_from`` (a ``state.pt`` directory: PBT) and the
    newest checkpoint in the stage directory (a restarted trial). ``to_tune`` attaches each
    epoch's checkpoint to its report; ``started`` (``time.perf_counter()`` when the trial
    function began) dates the set-up in the first line. Returns the epochs reported."""
    from raydistill.pipeline import student_stage
    from raydistill.rundir import stage_dir
    from raydistill.tasks import get_task
    from raydistill.train.loop import run_epochs
    from raydistill.train.stage import collect_stage
    from raydistill.train.state import final_state, latest_checkpoint, newest_state

    spec, datasets = student_stage(
        job, splits, "student", teacher_weights, print, label, cached, shapes
    )
    directory = stage_dir(job.run_dir, "student")
    start = newest_state([latest_checkpoint(directory), resume_from])
    on_epoch = None
    if job.output.tensorboard:
        from raydistill.tracking import TensorBoardLogger, tensorboard_dir

        writer = TensorBoardLogger(tensorboard_dir(job.run_dir, spec.name))
        on_epoch = lambda metrics: writer.after_report(None, [metrics], None)  # noqa: E731
    cuda = job.scaling.use_gpu and torch.cuda.is_available()
    ctx = TuneTrialContext(
        local_shards(datasets),
        extra,
        stage_dir=directory,
        keep=job.output.keep_checkpoints,
        to_tune=to_tune,
        resume=start[1] if start is not None else None,
        extras=get_task(job).loop_extras(job, splits),
        on_epoch=on_epoch,
        device=torch.device("cuda") if cuda else None,
    )
    ready = f" (set up in {time.perf_counter() - started:.1f} s)" if started is not None else ""
    _say(
        f"[{spec.name}] training {spec.model.model} for up to {spec.train.epochs} epochs "
        f"in the trial's process{ready}"
    )
    run_epochs(get_task(job), spec, ctx)
    ctx.flush_report()
    state = final_state(None, directory, resume_from)
    if state is None:
        raise RuntimeError(f"[{spec.name}] training finished without a checkpoint")
    collect_stage(spec, state, job.run_dir)
    return len(ctx.reports)

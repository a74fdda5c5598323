"""Trials that train in their own process: the shared epoch loop inside the Tune trial.

A single-worker trial needs no worker group: starting a ``TorchTrainer`` (controller, worker
group, dataset executor) costs 30-40 s on a small machine, longer than many trials train. So a
trial with one worker runs :func:`raydistill.train.loop.run_epochs` in the trial function itself,
on rows already in memory, and reports every epoch straight to Tune. Trials of a job search
(:mod:`.trial`) and of the in-memory temperature search (:mod:`.in_memory`) both report through
:class:`TuneTrialContext`.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from raydistill.train.context import LocalContext, LocalShard, _say
from raydistill.train.state import save_state, stage_checkpoints
from raydistill.tune.results import EPOCHS_DONE

CHECKPOINT_PREFIX = "checkpoint_"  # matches rundir.CHECKPOINT_GLOB, as Ray Train's do


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


class TuneTrialContext(LocalContext):
    """The loop's context inside a Tune trial: rows in memory, one process, every epoch
    reported to Tune (``ray.tune.report``) with ``extra`` entries in the row.

    With ``stage_dir`` every epoch's state is also written there as
    ``checkpoint_<epoch>/state.pt`` (the newest ``keep`` kept), as Ray Train would: a trial
    restarted after a failure, or a resumed search, continues from it. ``to_tune`` attaches
    that checkpoint to the Tune report too (PBT copies a good trial's checkpoint into a poor
    one). ``resume`` is a state to start from; ``on_epoch`` also sees each epoch's metrics (a
    TensorBoard writer). ``quiet`` drops the loop's progress lines.
    """

    def __init__(
        self,
        datasets: dict[str, Any],
        extra: dict[str, Any] | None = None,
        *,
        stage_dir: Path | None = None,
        keep: int | None = None,
        to_tune: bool = False,
        resume: dict[str, Any] | None = None,
        extras: dict[str, Any] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        device: torch.device | None = None,
        quiet: bool = False,
    ) -> None:
        super().__init__(datasets, resume=resume, keep_state=True, extras=extras)
        self.extra = extra or {}
        self.stage_dir = Path(stage_dir) if stage_dir is not None else None
        self.keep = keep
        self.to_tune = to_tune
        self.on_epoch = on_epoch
        self.quiet = quiet
        self._pending: tuple[dict[str, Any], Any] | None = None
        if device is not None:
            self.device = device

    def prepare_model(self, core: nn.Module) -> nn.Module:
        core.to(self.device)
        teacher = getattr(core, "teacher", None)
        if teacher is not None:  # not a submodule (see RayTrainContext.prepare_model)
            teacher.to(self.device)
        return core

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        from ray import tune

        self.reports.append(metrics)
        self.last_state = state
        checkpoint = self._save(int(metrics["epoch"]), state)
        if self.on_epoch is not None:
            self.on_epoch(metrics)
        given = None
        if self.to_tune:
            assert checkpoint is not None, "to_tune needs a stage_dir"
            given = tune.Checkpoint.from_directory(str(checkpoint))
        # Told to Tune after the loop's epoch line (the next say, or flush_report): a scheduler
        # that stops the trial does so inside tune.report, and the line would be lost.
        self._pending = (tune_row(metrics, self.extra), given)

    def flush_report(self) -> None:
        """Hand the epoch reported last to Tune, if it has not been yet."""
        from ray import tune

        pending, self._pending = self._pending, None
        if pending is not None:
            tune.report(pending[0], checkpoint=pending[1])

    def _save(self, epoch: int, state: dict[str, Any]) -> Path | None:
        if self.stage_dir is None:
            return None
        directory = self.stage_dir / f"{CHECKPOINT_PREFIX}{epoch:06d}"
        directory.mkdir(parents=True, exist_ok=True)
        save_state(directory, state)
        if self.keep is not None:  # this context's own, oldest first (their names sort by epoch)
            ours = [p for p in stage_checkpoints(self.stage_dir) if _own_checkpoint(p)]
            for old in ours[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        return directory

    def say(self, line: str) -> None:
        if not self.quiet:
            _say(line)
        self.flush_report()


def _own_checkpoint(path: Path) -> bool:
    return path.name.removeprefix(CHECKPOINT_PREFIX).isdigit()


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

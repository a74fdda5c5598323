"""One Tune trial: the job with the trial's parameters, trained in the trial or on Ray Train.

Each trial is a function trainable that builds the trial's job and trains its student stage,
reporting every epoch to Tune (the scheduler stops, and PBT exploits, trials on those). A trial
with one worker (``tune.workers_per_trial: 1``, the default) runs the shared epoch loop in its
own process on the rows the driver read (:mod:`.local`): it starts in a second or two. A trial
with more workers runs a ``TorchTrainer`` (Ray Tune cannot run one directly in 2.60:
``TuneError: Improper 'run'``), whose epochs reach Tune through :class:`EpochReporter`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, TuneConfig, job_from_dict
from raydistill.rundir import TRIALS_DIR as TRIALS_DIR
from raydistill.tune.local import fit_in_process
from raydistill.tune.local import tune_row as _tune_row
from raydistill.tune.results import TrialRow
from raydistill.tune.space import apply_params

TEACHER_PASSES = "teacher_forward_passes"


@dataclass(frozen=True)
class TrialContext:
    """What every trial shares (built once on the driver): the resolved base job as a dict
    with absolute paths, the teacher's weights and the shared cache."""

    base: dict[str, Any]
    teacher_weights: str
    tune_dir: str
    settings: TuneConfig
    # The cache's datasets, read (and held in the object store when small) once by the driver:
    # trials then start without reading Parquet or spawning read tasks of their own.
    cached: dict[str, Any] | None = None
    shapes: tuple[dict, dict] | None = None  # check_pair's feature shapes, measured once
    # trials train in their own process (one worker each, see .local), not on Ray Train
    in_process: bool = False

    def job(self, params: dict[str, Any], trial_id: str, generation: int = 0) -> JobConfig:
        """The job one trial trains: the base job with ``params`` set, the teacher fixed to
        the shared weights, and the shared cache read unless ``shared_teacher`` is off.
        ``generation`` > 0 (PBT: the trial continues from a checkpoint with new values) gives
        the training a run directory of its own, ``<trial>.g<generation>``."""
        raw = apply_params(self.base, params)
        raw["name"] = trial_id if generation == 0 else f"{trial_id}.g{generation}"
        raw["output"]["storage_path"] = str(Path(self.tune_dir) / TRIALS_DIR)
        raw["teacher"]["checkpoint"] = self.teacher_weights
        raw["distill"]["enabled"] = True
        if self.settings.shared_teacher:
            raw["distill"]["teacher_pass"] = "cache"
        elif raw["distill"]["teacher_pass"] == "cache":
            raw["distill"]["teacher_pass"] = "once"
        raw["train"]["baseline"] = False
        if self.settings.epochs is not None:
            raw["train"]["epochs"] = self.settings.epochs
        raw["scaling"] = self.settings.trial_scaling(raw["scaling"])
        raw.pop("tune", None)
        return job_from_dict(raw, f"trial {trial_id}")

    def alpha_of(self, row: TrialRow) -> str:
        """A trial's alpha schedule in words (the search plot's legend)."""
        return self.job(row.params, row.trial_id).distill.alpha.describe()


def _reporter(extra: dict[str, Any]) -> Any:
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReporter(TuneReportCallback):
        """Forwards rank 0's epoch metrics to Tune, plus what the scheduler and the results
        table need."""

        def after_report(self, run_context: Any, metrics: list[dict], checkpoint: Any) -> None:
            super().after_report(run_context, [_tune_row(metrics[0], extra)], checkpoint)

    return EpochReporter()


def _fit(
    context: TrialContext,
    job: JobConfig,
    splits: dict[str, Any],
    trial_id: str,
    reporter: Any,
    resume_from: Path | None = None,
) -> None:
    """Train the trial's student on the shared teacher pass, ``reporter`` telling Tune."""
    from raydistill.pipeline import fit_student

    fit_student(
        job,
        splits,
        "student",
        Path(context.teacher_weights),
        log=print,
        callbacks=[reporter],
        label=trial_id,
        cached=context.cached if job.distill.teacher_pass == "cache" else None,
        shapes=context.shapes,
        resume_from=resume_from,
    )


def _checkpoint_forwarder(queue: Any, extra: dict[str, Any]) -> Any:
    from ray.train import UserCallback

    class CheckpointForwarder(UserCallback):
        """Hands rank 0's epoch metrics and the epoch's Ray Train checkpoint to the trial
        function, which reports both to Tune (PBT copies a good trial's checkpoint into a poor
        one; Ray's TuneReportCallback forwards metrics only)."""

        def after_report(self, run_context: Any, metrics: list[dict], checkpoint: Any) -> None:
            path = checkpoint.path if checkpoint is not None else None
            queue.put((_tune_row(metrics[0], extra), path))

    return CheckpointForwarder()


def _next_generation(trials_dir: Path, trial_id: str) -> int:
    return 1 + sum(1 for _ in trials_dir.glob(f"{trial_id}.g*"))


def unreported_end(
    start: Path | None, reported: int, extra: dict[str, Any]
) -> dict[str, Any] | None:
    """The row a continued PBT generation still owes Tune, or None.

    A generation that continued from ``start`` (a ``state.pt`` directory) and reported nothing
    had nothing left to train: the state was a donor's last epoch. Tune, restoring the trial
    onto that checkpoint, had set the trial's last result to the donor's (the donor's trial id
    included), and the trial's own rows end at the epoch it was exploited at; so the state's
    last epoch is reported as this trial's, and the trial ends where its student does."""
    from raydistill.train.state import load_state

    if start is None or reported:
        return None
    return _tune_row(load_state(start)["history"][-1], extra)


def _fit_here(
    context: TrialContext,
    job: JobConfig,
    splits: dict[str, Any],
    trial_id: str,
    passes: int,
    started: float,
    **options: Any,
) -> int:
    """The trial's student trained in this process (:func:`fit_in_process`) from what every
    trial shares; ``options`` are its ``resume_from`` and ``to_tune``."""
    return fit_in_process(
        job,
        splits,
        Path(context.teacher_weights),
        trial_id,
        {TEACHER_PASSES: passes},
        context.cached if job.distill.teacher_pass == "cache" else None,
        context.shapes,
        started=started,
        **options,
    )


def _run_pbt_trial(
    config: dict[str, Any], context: TrialContext, trial_id: str, started: float
) -> None:
    """A PBT trial: it starts fresh, or (after an exploit, or a resumed search) continues from
    the Tune checkpoint it was handed, in a run directory of its own, with its new values; every
    epoch's checkpoint goes to Tune so that other trials can continue from it."""
    import queue as stdlib_queue
    import shutil
    import threading

    from ray import tune
    from ray.util.queue import Queue

    from raydistill.pipeline import planned_teacher_passes
    from raydistill.tasks import get_task
    from raydistill.train.state import STATE_FILE

    given = tune.get_checkpoint()
    generation = 0
    if given is not None:
        generation = _next_generation(Path(context.tune_dir) / TRIALS_DIR, trial_id)
    job = context.job(dict(config), trial_id, generation)
    start = None
    if given is not None:
        start = job.run_dir / "start"
        start.mkdir(parents=True, exist_ok=True)
        with given.as_directory() as directory:
            shutil.copy2(Path(directory) / STATE_FILE, start / STATE_FILE)
    splits = get_task(job).read_splits(job, lambda _: None)
    passes = planned_teacher_passes(job, splits)
    source = f", continuing from {given.path}" if given is not None else ""
    print(f"[{trial_id}] " + ", ".join(f"{k}={v}" for k, v in config.items()) + source)
    if context.in_process:
        reported = _fit_here(
            context, job, splits, trial_id, passes, started, resume_from=start, to_tune=True
        )
        _report_owed(start, reported, passes)
        return
    reports = Queue(actor_options={"num_cpus": 0})
    failures: list[BaseException] = []
    finished = threading.Event()

    def train() -> None:
        try:
            forwarder = _checkpoint_forwarder(reports, {TEACHER_PASSES: passes})
            _fit(context, job, splits, trial_id, forwarder, resume_from=start)
        except BaseException as exc:  # raised again in the trial's own thread below
            failures.append(exc)
        finally:
            finished.set()

    # Tune's report must come from the trial function's thread; the training runs beside it.
    # The forwarder's put returns once the item is queued, so when the training has ended
    # every epoch is in the queue.
    worker = threading.Thread(target=train, name=f"{trial_id}-train", daemon=True)
    worker.start()
    reported = 0
    while True:
        try:
            row, path = reports.get(timeout=0.5)
        except stdlib_queue.Empty:
            if finished.is_set() and reports.empty():
                break
            continue
        tune.report(row, checkpoint=tune.Checkpoint.from_directory(path) if path else None)
        reported += 1
    worker.join()
    if failures:
        raise failures[0]
    _report_owed(start, reported, passes)


def _report_owed(start: Path | None, reported: int, passes: int) -> None:
    from ray import tune

    owed = unreported_end(start, reported, {TEACHER_PASSES: passes})
    if owed is not None:
        assert start is not None
        tune.report(owed, checkpoint=tune.Checkpoint.from_directory(str(start)))


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable: ``config`` holds the trial's sampled job fields."""
    started = time.perf_counter()
    from ray import tune

    from raydistill.pipeline import planned_teacher_passes
    from raydistill.runtime import quiet_data
    from raydistill.tasks import get_task
    from raydistill.train.stage import finished_stage, latest_checkpoint, stage_dir
    from raydistill.train.state import load_state

    quiet_data()  # this process's Data context is what the trial's datasets carry
    trial_id = tune.get_context().get_trial_id()
    if context.settings.scheduler == "pbt":
        _run_pbt_trial(config, context, trial_id, started)
        return
    job = context.job(dict(config), trial_id)
    splits = get_task(job).read_splits(job, lambda _: None)
    passes = planned_teacher_passes(job, splits)  # 0 when the shared cache is read
    # A search resumed after its driver died restarts the trials Tune had not seen end. Their
    # Ray Train runs resume from their own checkpoints; Tune is first told the epochs it
    # missed (or, if the training ended, all of them), so its scheduler and table see them.
    done = finished_stage(job.run_dir, "student")
    previous = latest_checkpoint(stage_dir(job.run_dir, "student"))
    history = done.history if done else load_state(previous)["history"] if previous else []
    for metrics in history:
        tune.report(_tune_row(metrics, {TEACHER_PASSES: 0}))
    if done is not None:
        print(f"[{trial_id}] already trained: reported its {done.epochs_run} epochs to Tune")
        return
    print(f"[{trial_id}] " + ", ".join(f"{k}={v}" for k, v in config.items()))
    if context.in_process:
        _fit_here(context, job, splits, trial_id, passes, started)
        return
    _fit(context, job, splits, trial_id, _reporter({TEACHER_PASSES: passes}))

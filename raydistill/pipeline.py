"""One job end to end, for every task: teacher stage, distilled student, baseline, and the table.

The task (:mod:`raydistill.tasks`) says how to read the data, which datasets a model reads and
how a model is scored; the teacher-pass strategy (:mod:`raydistill.teacher.passes`) says how the
teacher reaches the student; the run directory's layout is :mod:`raydistill.rundir`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig
from raydistill.data.sources import split_views
from raydistill.files import atomic_write_text, remove_owned_dir
from raydistill.fingerprint import (
    check_unchanged,
    read_fingerprint,
    record_fingerprint,
    stage_inputs,
    stages_to_retrain,
)
from raydistill.remote import open_run, remote_run, sync, temporary_output_warning
from raydistill.results import (
    RunSummary,
    evaluate_checkpoint,
    score_run,
    summarize_run,
    write_summary,
)
from raydistill.rundir import (
    JOB_FILE,
    METRICS_FILE,
    STAGE_MARKERS,
    SUMMARY_FILE,
    stage_dir,
    teacher_weights_path,
)
from raydistill.runtime import check_pool_resources, ray_session, started_here
from raydistill.tasks import get_task
from raydistill.tasks.base import Shapes, Splits
from raydistill.tasks.classification import make_balancer
from raydistill.tasks.summary import STAGE_NAMES
from raydistill.teacher.cache import ensure_cache
from raydistill.teacher.codec import LogitCodec
from raydistill.teacher.passes import (
    STRATEGIES,
    in_memory,
    start_teacher_actors,
    stop_teacher_actors,
)
from raydistill.teacher.passes import planned_teacher_passes as _planned
from raydistill.tracking.reach import check_trackers
from raydistill.tracking.session import (
    job_tracking,
    log_reused_stage,
    run_results,
    run_scores,
    tracked_stage,
)
from raydistill.train.spec import Role, StageSpec
from raydistill.train.stage import StageResult, finished_stage, run_stage

Log = Callable[[str], None]

__all__ = [
    "JOB_FILE",
    "METRICS_FILE",
    "STAGE_NAMES",
    "SUMMARY_FILE",
    "RunSummary",
    "check_pair",
    "evaluate_checkpoint",
    "fit_student",
    "fit_teacher",
    "make_balancer",
    "planned_teacher_passes",
    "prepare_run_dir",
    "run_cache",
    "run_job",
    "run_teacher",
    "student_stage",
    "summarize_run",
    "teacher_pass_rows",
    "teacher_weights_path",
]


def prepare_run_dir(
    job: JobConfig, fresh: bool, log: Log, fresh_stages: tuple[str, ...] | list[str] = ()
) -> Path:
    """Create (or with ``fresh`` wipe and recreate) the run directory, remove the stages
    ``fresh_stages`` retrain, and record the resolved job (an earlier, different version is
    kept as ``job.<n>.yaml``)."""
    run_dir = job.run_dir
    remote = remote_run(job)
    if fresh and remote is not None and remote.holds_run():
        log(f"--fresh: removing {remote.uri}")
        remote.remove_all()
    if fresh and run_dir.exists():
        log(f"--fresh: removing {run_dir}")
        # only a run directory raydistill made (its job.yaml) is deleted, never a user's folder
        remove_owned_dir(run_dir, [JOB_FILE], "run directory")
    for role in stages_to_retrain(fresh_stages):
        directory = stage_dir(run_dir, role)
        if directory.exists():
            log(f"--fresh-stage: removing {directory}")
            remove_owned_dir(directory, STAGE_MARKERS, "stage directory")
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir / JOB_FILE
    resolved = job.to_yaml()
    if job_file.exists() and job_file.read_text() != resolved:
        n = 1
        while (kept := run_dir / f"job.{n}.yaml").exists():
            n += 1
        job_file.rename(kept)
        log(f"note: the run's earlier job is kept as {kept}")
    atomic_write_text(job_file, resolved)
    sync(job)  # the job, and the stages --fresh-stage removed
    return run_dir


def _check_stages(
    job: JobConfig,
    splits: Splits,
    roles: list[str],
    fresh: bool,
    fresh_stages: tuple[str, ...] | list[str],
    allow_changed: bool,
    log: Log,
) -> None:
    """Before anything is written or Ray starts: stages trained with other settings are
    refused (unless retrained, or kept with ``allow_changed``)."""
    if fresh:
        return
    kept = [r for r in roles if r not in stages_to_retrain(fresh_stages)]
    check_unchanged(job, splits, kept, teacher_weights_path(job), allow_changed, log)


def _already_trained(job: JobConfig, role: Role, log: Log) -> StageResult | None:
    """A stage an earlier run finished: reused before any data or teacher work is done."""
    done = finished_stage(job.run_dir, role)
    if done is not None:
        log(f"[{role}] already trained ({done.weights}); use --fresh to retrain")
        log_reused_stage(job, role, done.history)
    return done


def _train(
    spec: StageSpec,
    datasets: dict,
    splits: Splits,
    log: Log,
    callbacks: list[Any] | None = None,
    resume_from: Path | None = None,
) -> StageResult:
    log(
        f"[{spec.name}] training {spec.model.model} for up to {spec.train.epochs} epochs "
        f"on {_workers(spec.job)}"
    )
    if spec.job.output.tensorboard:
        from raydistill.tracking import TensorBoardLogger, tensorboard_dir

        events = tensorboard_dir(spec.job.run_dir, spec.name)
        callbacks = [*(callbacks or []), TensorBoardLogger(events)]
        log(f"[{spec.name}] TensorBoard events: {events}")
    loop_config = get_task(spec.job).loop_extras(spec.job, splits)
    if resume_from is not None:
        loop_config["resume_from"] = str(resume_from)
    with tracked_stage(spec.job, spec.role) as tracked:
        callbacks = [*(callbacks or []), *tracked.callbacks]
        result = run_stage(spec, datasets, spec.job.run_dir, callbacks, loop_config=loop_config)
        tracked.finished(result.history)
    sync(spec.job, spec.role)  # the stage's weights and history
    return result


def _workers(job: JobConfig) -> str:
    s = job.scaling
    if s.workers == 1:
        return "1 worker"
    count = str(s.workers) if isinstance(s.workers, int) else f"{s.min_workers}-{s.max_workers}"
    return f"{count} workers"


def teacher_pass_rows(job: JobConfig, splits: Splits) -> int:
    """Rows of one teacher pass: every augmented view of train, and val."""
    task = get_task(job)
    views = job.data.augment.views if job.data.augment is not None else 1
    return task.split_rows(splits["train"]) * views + task.split_rows(splits["val"])


def planned_teacher_passes(job: JobConfig, splits: Splits) -> int:
    """Teacher forward passes (samples) the distilled student stage of ``job`` will run (see
    :mod:`raydistill.teacher.passes`)."""
    return _planned(job, get_task(job).teacher_pass(job), teacher_pass_rows(job, splits))


def fit_teacher(job: JobConfig, splits: Splits, log: Log) -> Path:
    """Train the teacher unless the job names its checkpoint or an earlier run trained it."""
    if job.teacher.checkpoint is not None:
        log(f"[teacher] using checkpoint {job.teacher.checkpoint}")
        return Path(job.teacher.checkpoint)
    if (done := _already_trained(job, "teacher", log)) is not None:
        return done.weights
    task = get_task(job)
    spec = StageSpec(
        role="teacher",
        job=job,
        model=job.teacher,
        train=job.teacher_train(),
        num_classes=task.num_classes(splits),
        distill=False,
        balancer=task.balancer(job, splits, log),
    )
    datasets = task.datasets(job, splits, job.teacher, distill=False)
    _record(job, "teacher", splits, None)
    return _train(spec, datasets, splits, log).weights


def _record(job: JobConfig, role: Role, splits: Splits, teacher_weights: Path | None) -> None:
    """The stage's fingerprint, unless an earlier run of it recorded one (a stage continued
    with --allow-changed keeps what it was started with, and notes the change)."""
    inputs = stage_inputs(job, role, splits, teacher_weights)
    old = read_fingerprint(job.run_dir, role)
    if old is not None and old != inputs:
        inputs = {**old, "continued_with": inputs}
    record_fingerprint(job.run_dir, role, inputs)
    sync(job, role)


def check_pair(job: JobConfig, teacher_weights: Path | None, train: Any) -> Shapes:
    """The task's dry forward of teacher and student on ``train`` (the training split):
    outputs must match; returns the tapped feature shapes (no batch dim) that size adapters."""
    return get_task(job).check_pair(job, teacher_weights, {"train": train}, lambda _: None)


def fit_student(
    job: JobConfig,
    splits: Splits,
    role: Role,
    teacher_weights: Path | None,
    log: Log,
    callbacks: list[Any] | None = None,
    label: str | None = None,
    cached: dict[str, Any] | None = None,
    shapes: Shapes | None = None,
    resume_from: Path | None = None,
) -> StageResult:
    """Train the student, distilled (``role='student'``) or alone (``role='baseline'``).

    ``callbacks`` go to the stage's Ray Train run; ``label`` prefixes its progress lines;
    ``cached`` are the teacher cache's datasets already read (tune reads them once for every
    trial) for a job with ``teacher_pass: cache``; ``shapes`` is the task's ``check_pair``
    result when the caller already ran it; ``resume_from`` is a checkpoint directory
    (``state.pt``) to continue from (a PBT trial continuing another trial's training)."""
    if (done := _already_trained(job, role, log)) is not None:
        return done
    spec, datasets = student_stage(job, splits, role, teacher_weights, log, label, cached, shapes)
    return _train(spec, datasets, splits, log, callbacks, resume_from)


def student_stage(
    job: JobConfig,
    splits: Splits,
    role: Role,
    teacher_weights: Path | None,
    log: Log,
    label: str | None = None,
    cached: dict[str, Any] | None = None,
    shapes: Shapes | None = None,
) -> tuple[StageSpec, dict[str, Any]]:
    """The student stage :func:`fit_student` trains, its spec and (lazy) datasets, with its
    fingerprint recorded; for a caller that runs the epoch loop itself (an in-process tune
    trial). The arguments are :func:`fit_student`'s."""
    task = get_task(job)
    distill = role == "student"
    datasets = task.datasets(job, splits, job.student, distill=distill)
    if role == "baseline" and job.data.labelled_fraction is not None:
        datasets = task.labelled_only(job, datasets)
    codec = LogitCodec()
    if not distill:
        shapes = ({}, {})
    else:
        assert teacher_weights is not None
        if shapes is None:
            shapes = task.check_pair(job, teacher_weights, splits, log)
        strategy = STRATEGIES[task.teacher_pass(job)]
        if strategy.uses_pool:
            check_pool_resources(job, log)
        attached = strategy.attach(
            job, datasets, teacher_weights, splits, task.num_classes(splits), log, cached
        )
        datasets, codec = attached.datasets, attached.codec
        if job.data.augment is not None:
            datasets = split_views(datasets, job.data.augment)
    spec = StageSpec(
        role=role,
        job=job,
        model=job.student,
        train=job.train,
        num_classes=task.num_classes(splits),
        distill=distill,
        student_shapes=shapes[0],
        teacher_shapes=shapes[1],
        codec=codec,
        balancer=task.balancer(job, splits, log),
        teacher_weights=str(teacher_weights) if distill else None,
        label=label,
    )
    _record(job, role, splits, teacher_weights)
    return spec, datasets


def preflight(job: JobConfig, splits: Splits) -> None:
    """Checks that need neither Ray nor a run directory, run before either exists so that bad
    input leaves nothing behind: the student (with its ``checkpoint``) builds, and a distilled
    student's outputs match the teacher's (whose ``checkpoint``, when given, must fit it)."""
    task = get_task(job)
    if job.distill.enabled:
        task.check_pair(job, job.teacher.checkpoint, splits, lambda _: None)
    else:
        task.check_student(job, splits)


def _start(
    job: JobConfig, command: str, log: Log, fresh: bool = False
) -> tuple[JobConfig, Splits]:
    """The job as its task runs it and its splits, after the task's checks; nothing is
    written before these pass. A run on a storage URI is checked writable here, and (unless
    ``fresh``) what the URI holds is fetched into its working copy (a resumed run)."""
    task = get_task(job)
    task.require(command)
    task.check_job(job)
    job = task.prepare(job)
    splits = task.read_splits(job, log)
    open_run(job, fresh)
    if (warning := temporary_output_warning(job)) is not None:
        log(warning)
    return job, splits


def run_teacher(
    job: JobConfig,
    fresh: bool = False,
    log: Log = print,
    fresh_stages: tuple[str, ...] | list[str] = (),
    allow_changed: bool = False,
) -> Path:
    """``raydistill teacher``: train (or find) the teacher; returns its weights file."""
    # unreadable data fails before the run dir exists
    job, splits = _start(job, "teacher", log, fresh)
    _check_stages(job, splits, ["teacher"], fresh, fresh_stages, allow_changed, log)
    job = check_trackers(job, log)
    prepare_run_dir(job, fresh, log, fresh_stages)
    with job_tracking(job, "teacher", log), ray_session(job):
        weights = fit_teacher(job, splits, log)
    sync(job)
    return weights


def run_cache(job: JobConfig, fresh: bool = False, log: Log = print) -> dict:
    """``raydistill cache``: the teacher (trained if needed) runs once over train and val and
    its outputs are written as Parquet; returns the cache manifest. ``fresh`` rebuilds only the
    cache."""
    get_task(job).cache_codec(job, 1)  # what the task cannot cache, before anything is read
    job, splits = _start(job, "cache", log)
    preflight(job, splits)
    job = check_trackers(job, log)
    prepare_run_dir(job, False, log)
    with job_tracking(job, "cache", log), ray_session(job):
        weights = fit_teacher(job, splits, log)
        manifest = ensure_cache(job, weights, splits, log, fresh=fresh)
    sync(job)
    return manifest


def _start_teacher_early(job: JobConfig, splits: Splits) -> None:
    """Start the teacher actors of a once (or generate) pass over in-memory splits now, so
    that their process start and imports overlap the teacher stage instead of delaying the
    student's (they load the weights at their first call). Only on a Ray this process started, whose
    CPUs are budgeted for them (:func:`raydistill.runtime.planned_cpus`), for a CPU pool (a
    GPU actor would hold its GPU while the teacher trains), and when the student still has to
    be trained."""
    if (
        not STRATEGIES[get_task(job).teacher_pass(job)].starts_early
        or job.scaling.teacher_pool.num_gpus > 0
        or not started_here()
        or not all(in_memory(splits[k]) for k in ("train", "val"))
        or finished_stage(job.run_dir, "student") is not None
    ):
        return
    start_teacher_actors(job)


def run_job(
    job: JobConfig,
    fresh: bool = False,
    log: Log = print,
    fresh_stages: tuple[str, ...] | list[str] = (),
    allow_changed: bool = False,
) -> RunSummary:
    """``raydistill train``: teacher stage if needed, the student (distilled unless
    ``distill.enabled`` is false), the baseline when ``train.baseline``, then the test table
    (the task's: accuracy for classification, COCO mAP for detection).

    A stage an earlier run trained (or started) with other settings is refused before Ray
    starts, naming the changed keys, unless ``fresh_stages`` retrains it or ``allow_changed``
    keeps it (see :mod:`raydistill.fingerprint`)."""
    job, splits = _start(job, "train", log, fresh)
    preflight(job, splits)
    roles: list[Role] = ["student"] if job.distill.enabled else ["baseline"]
    if job.distill.enabled and job.train.baseline:
        roles.append("baseline")
    _check_stages(job, splits, ["teacher", *roles], fresh, fresh_stages, allow_changed, log)
    job = check_trackers(job, log)  # an unreachable tracker fails here, before Ray starts
    run_dir = prepare_run_dir(job, fresh, log, fresh_stages)
    remote = remote_run(job)
    where = f"{remote.uri} (working copy {run_dir})" if remote is not None else run_dir
    log(f"{get_task(job).describe_data(job, splits)}; run directory {where}")
    with job_tracking(job, "train", log) as tracking:
        summary = _train_stages(job, splits, roles, log)
        if tracking is not None:
            tracking.log_files(run_results(run_dir), run_scores(run_dir))
    if remote is not None:
        remote.sync()  # the summary, the report and ray.log
        log(f"run uploaded to {remote.uri}")
    return summary


def _train_stages(job: JobConfig, splits: Splits, roles: list[Role], log: Log) -> RunSummary:
    """:func:`run_job`'s stages, the test table and the report."""
    run_dir = job.run_dir
    summary = RunSummary(run_dir, task=job.task, labelled_fraction=job.data.labelled_fraction)
    with ray_session(job):
        try:
            if "student" in roles:
                _start_teacher_early(job, splits)
            teacher_weights = None
            if job.distill.enabled or teacher_weights_path(job).is_file():
                teacher_weights = fit_teacher(job, splits, log)
            for role in roles:
                summary.stages[role] = fit_student(job, splits, role, teacher_weights, log)
        finally:
            stop_teacher_actors()  # started early and not used (the student was trained)
    if teacher_weights is not None and "teacher" not in summary.stages:
        if done := finished_stage(run_dir, "teacher"):
            summary.stages["teacher"] = done
    summary.scores = score_run(job, splits, teacher_weights, summary.stages)
    write_summary(summary)
    if job.output.report:
        from raydistill.report import write_report

        files = write_report(run_dir, summary)
        log(f"report: {files.markdown} and {files.html}")
    return summary

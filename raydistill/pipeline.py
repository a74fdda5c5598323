"""One job end to end, for every task: teacher stage, distilled student, baseline, and the table.

The task (:mod:`raydistill.tasks`) says how to read the data, which datasets a model reads and
how a model is scored; the teacher-pass strategy (:mod:`raydistill.teacher.passes`) says how the
teacher reaches the student; the run directory's layout is :mod:`raydistill.rundir`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, JobError, load_job
from raydistill.data.sources import split_views
from raydistill.files import atomic_write_json, atomic_write_text, remove_owned_dir
from raydistill.fingerprint import (
    check_unchanged,
    read_fingerprint,
    record_fingerprint,
    stage_inputs,
    stages_to_retrain,
)
from raydistill.models.specs import build_model, load_weights
from raydistill.rundir import (
    JOB_FILE,
    METRICS_FILE,
    STAGE_MARKERS,
    SUMMARY_FILE,
    stage_dir,
    weights_file,
)
from raydistill.runtime import ray_session
from raydistill.tasks import get_task
from raydistill.tasks.base import Shapes, Splits, SummaryTable
from raydistill.tasks.classification import make_balancer
from raydistill.tasks.summary import STAGE_NAMES
from raydistill.teacher.cache import ensure_cache
from raydistill.teacher.codec import LogitCodec
from raydistill.teacher.passes import STRATEGIES
from raydistill.teacher.passes import planned_teacher_passes as _planned
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
    "summarize_run",
    "teacher_pass_rows",
    "teacher_weights_path",
]


@dataclass
class RunSummary:
    """What a run produced: its directory, the stages it trained and the test-split scores
    (``ModelScore`` for classification, ``DetectionScore`` for detection: the task's rows)."""

    run_dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)
    scores: list[Any] = field(default_factory=list)
    task: str = "classification"

    def score(self, name: str) -> Any:
        return next(s for s in self.scores if s.name == name)

    def comparison(self, detailed: bool = False) -> SummaryTable:
        from raydistill.tasks import task_named

        epochs = {role: stage.epochs_run for role, stage in self.stages.items()}
        return task_named(self.task).table(self.scores, epochs, detailed=detailed)

    def table(self) -> str:
        """The comparison as a Markdown table, then the trade-off in words."""
        table = self.comparison()
        rows = [
            "| " + " | ".join(table.header) + " |",
            "|---|" + "---:|" * (len(table.header) - 1),
            *("| " + " | ".join(row) + " |" for row in table.rows),
        ]
        return "\n".join(rows + [""] + [f"- {n}" for n in table.notes])

    def notes(self) -> list[str]:
        """The trade-off in words: size, speed and points against the teacher and baseline."""
        return self.comparison().notes


def prepare_run_dir(
    job: JobConfig, fresh: bool, log: Log, fresh_stages: tuple[str, ...] | list[str] = ()
) -> Path:
    """Create (or with ``fresh`` wipe and recreate) the run directory, remove the stages
    ``fresh_stages`` retrain, and record the resolved job (an earlier, different version is
    kept as ``job.<n>.yaml``)."""
    run_dir = job.run_dir
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


def teacher_weights_path(job: JobConfig, run_dir: Path | None = None) -> Path:
    """The teacher's weights: the job's checkpoint, or the teacher stage's output in
    ``run_dir`` (default: the job's run directory)."""
    if job.teacher.checkpoint is not None:
        return Path(job.teacher.checkpoint)
    return weights_file(run_dir or job.run_dir, "teacher")


def _already_trained(job: JobConfig, role: Role, log: Log) -> StageResult | None:
    """A stage an earlier run finished: reused before any data or teacher work is done."""
    done = finished_stage(job.run_dir, role)
    if done is not None:
        log(f"[{role}] already trained ({done.weights}); use --fresh to retrain")
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
        f"on {_workers(spec.job)} workers"
    )
    if spec.job.output.tensorboard:
        from raydistill.tracking import TensorBoardLogger, tensorboard_dir

        events = tensorboard_dir(spec.job.run_dir, spec.name)
        callbacks = [*(callbacks or []), TensorBoardLogger(events)]
        log(f"[{spec.name}] TensorBoard events: {events}")
    loop_config = get_task(spec.job).loop_extras(spec.job, splits)
    if resume_from is not None:
        loop_config["resume_from"] = str(resume_from)
    return run_stage(spec, datasets, spec.job.run_dir, callbacks, loop_config=loop_config)


def _workers(job: JobConfig) -> str:
    s = job.scaling
    return str(s.workers) if isinstance(s.workers, int) else f"{s.min_workers}-{s.max_workers}"


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
    task = get_task(job)
    distill = role == "student"
    datasets = task.datasets(job, splits, job.student, distill=distill)
    codec = LogitCodec()
    if not distill:
        shapes = ({}, {})
    else:
        assert teacher_weights is not None
        if shapes is None:
            shapes = task.check_pair(job, teacher_weights, splits, log)
        strategy = STRATEGIES[task.teacher_pass(job)]
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
    return _train(spec, datasets, splits, log, callbacks, resume_from)


def _quiet(_: str) -> None:
    """A log that drops its lines (checks whose findings a later stage reports)."""


def preflight(job: JobConfig, splits: Splits) -> None:
    """Checks that need neither Ray nor a run directory, run before either exists so that bad
    input leaves nothing behind: the student (with its ``checkpoint``) builds, and a distilled
    student's outputs match the teacher's (whose ``checkpoint``, when given, must fit it)."""
    task = get_task(job)
    if job.distill.enabled:
        task.check_pair(job, job.teacher.checkpoint, splits, _quiet)
    else:
        task.check_student(job, splits)


def _start(job: JobConfig, command: str, log: Log) -> tuple[JobConfig, Splits]:
    """The job as its task runs it and its splits, after the task's checks; nothing is
    written before these pass."""
    task = get_task(job)
    task.require(command)
    task.check_job(job)
    job = task.prepare(job)
    return job, task.read_splits(job, log)


def run_teacher(
    job: JobConfig,
    fresh: bool = False,
    log: Log = print,
    fresh_stages: tuple[str, ...] | list[str] = (),
    allow_changed: bool = False,
) -> Path:
    """``raydistill teacher``: train (or find) the teacher; returns its weights file."""
    job, splits = _start(job, "teacher", log)  # unreadable data fails before the run dir exists
    _check_stages(job, splits, ["teacher"], fresh, fresh_stages, allow_changed, log)
    prepare_run_dir(job, fresh, log, fresh_stages)
    with ray_session(job):
        return fit_teacher(job, splits, log)


def run_cache(job: JobConfig, fresh: bool = False, log: Log = print) -> dict:
    """``raydistill cache``: the teacher (trained if needed) runs once over train and val and
    its outputs are written as Parquet; returns the cache manifest. ``fresh`` rebuilds only the
    cache."""
    job, splits = _start(job, "cache", log)
    preflight(job, splits)
    prepare_run_dir(job, False, log)
    with ray_session(job):
        weights = fit_teacher(job, splits, log)
        return ensure_cache(job, weights, splits, log, fresh=fresh)


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
    job, splits = _start(job, "train", log)
    preflight(job, splits)
    roles: list[Role] = ["student"] if job.distill.enabled else ["baseline"]
    if job.distill.enabled and job.train.baseline:
        roles.append("baseline")
    _check_stages(job, splits, ["teacher", *roles], fresh, fresh_stages, allow_changed, log)
    run_dir = prepare_run_dir(job, fresh, log, fresh_stages)
    log(f"{get_task(job).describe_data(job, splits)}; run directory {run_dir}")
    summary = RunSummary(run_dir, task=job.task)
    with ray_session(job):
        teacher_weights = None
        if job.distill.enabled or teacher_weights_path(job).is_file():
            teacher_weights = fit_teacher(job, splits, log)
        for role in roles:
            summary.stages[role] = fit_student(job, splits, role, teacher_weights, log)
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


def score_run(
    job: JobConfig, splits: Splits, teacher_weights: Path | None, stages: dict[str, StageResult]
) -> list[Any]:
    """Test-split scores in table order: the teacher (when it has weights), then the distilled
    student and the baseline among ``stages``."""
    task = get_task(job)
    num_classes = task.num_classes(splits)
    test = splits["test"]
    scores = []
    if teacher_weights is not None:
        teacher = build_model(job.teacher, num_classes, load=False)
        load_weights(teacher, teacher_weights, what="the teacher")
        scores.append(task.score(job, STAGE_NAMES["teacher"], teacher, job.teacher, test))
    for role in ("student", "baseline"):
        if role in stages:
            student = build_model(job.student, num_classes, load=False)
            load_weights(student, stages[role].weights, what=f"the {role}")
            scores.append(task.score(job, STAGE_NAMES[role], student, job.student, test))
    return scores


def read_run_job(run_dir: Path, command: str) -> JobConfig:
    """The job a run directory recorded, as its task runs it."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / JOB_FILE).is_file():
        raise JobError(f"{run_dir}: not a run directory (no {JOB_FILE}; run raydistill train)")
    job = load_job(run_dir / JOB_FILE)
    task = get_task(job)
    task.require(command)
    return task.prepare(job)


def summarize_run(run_dir: Path) -> tuple[JobConfig, RunSummary]:
    """The job and the test-split table of a run directory as an earlier run left it (its
    finished stages are scored again, on this machine)."""
    run_dir = Path(run_dir).resolve()
    job = read_run_job(run_dir, "report")
    summary = RunSummary(run_dir, task=job.task)
    for role in ("teacher", "student", "baseline"):
        if (done := finished_stage(run_dir, role)) is not None:
            summary.stages[role] = done
    teacher = teacher_weights_path(job, run_dir)
    splits = get_task(job).read_splits(job, _quiet)
    summary.scores = score_run(job, splits, teacher if teacher.is_file() else None, summary.stages)
    return job, summary


def evaluate_checkpoint(
    job: JobConfig, checkpoint: Path | None = None, split: str = "test", model: str = "student"
) -> Any:
    """``raydistill evaluate``: score a weights file (default: this run's ``model``) on a split;
    returns the task's score row."""
    task = get_task(job)
    task.require("evaluate")
    job = task.prepare(job)
    spec = job.student if model == "student" else job.teacher
    if checkpoint is None:
        student_weights = weights_file(job.run_dir, "student")
        checkpoint = teacher_weights_path(job) if model == "teacher" else student_weights
    if not Path(checkpoint).is_file():
        raise JobError(f"no weights at {checkpoint}: train the job first or pass --checkpoint")
    splits = task.read_splits(job, _quiet)
    if split not in splits:
        raise JobError(f"unknown split '{split}' (one of {sorted(splits)})")
    num_classes = task.num_classes(splits)
    weights = load_weights(build_model(spec, num_classes, load=False), Path(checkpoint), model)
    name = f"{model} ({Path(checkpoint).name}, {split})"
    return task.score(job, name, weights, spec, splits[split])


def write_summary(summary: RunSummary) -> None:
    atomic_write_text(summary.run_dir / SUMMARY_FILE, summary.table() + "\n")
    atomic_write_json(
        summary.run_dir / METRICS_FILE,
        {
            "test": [s.as_dict() for s in summary.scores],
            "epochs": {k: v.epochs_run for k, v in summary.stages.items()},
        },
    )

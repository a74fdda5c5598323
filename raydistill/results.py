"""What a run produced: the test-split scores of its stages, the comparison table, and
scoring a checkpoint again (``raydistill evaluate``, ``raydistill report``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from raydistill.config import JobConfig, JobError, ModelSpec, load_job
from raydistill.files import atomic_write_json, atomic_write_text
from raydistill.models.specs import build_model, load_weights
from raydistill.rundir import (
    JOB_FILE,
    METRICS_FILE,
    SUMMARY_FILE,
    teacher_weights_path,
    weights_file,
)
from raydistill.tasks import get_task
from raydistill.tasks.base import Splits, SummaryTable
from raydistill.tasks.summary import STAGE_NAMES
from raydistill.train.stage import StageResult, finished_stage


@dataclass
class RunSummary:
    """What a run produced: its directory, the stages it trained and the test-split scores
    (``ModelScore`` for classification, ``DetectionScore`` for detection: the task's rows)."""

    run_dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)
    scores: list[Any] = field(default_factory=list)
    task: str = "classification"
    labelled_fraction: float | None = None  # data.labelled_fraction: the students' labelled share

    def score(self, name: str) -> Any:
        return next(s for s in self.scores if s.name == name)

    def comparison(self, detailed: bool = False) -> SummaryTable:
        from raydistill.tasks import task_named

        epochs = {role: stage.epochs_run for role, stage in self.stages.items()}
        table = task_named(self.task).table(self.scores, epochs, detailed=detailed)
        share = self.labelled_fraction
        if share is not None and any(s.name == STAGE_NAMES["baseline"] for s in self.scores):
            table.notes.append(
                f"labels on {share:.0%} of the training rows (data.labelled_fraction): the "
                "baseline trained on those alone; the distilled student on those and the "
                "teacher's soft targets on every row; the teacher on every label"
            )
        return table

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


def _quiet(_: str) -> None:
    """A log that drops its lines (checks whose findings a later stage reports)."""


def score_run(
    job: JobConfig, splits: Splits, teacher_weights: Path | None, stages: dict[str, StageResult]
) -> list[Any]:
    """Test-split scores in table order: the teacher (when it has weights), then the distilled
    student and the baseline among ``stages`` (measured against the teacher too, for tasks
    that score against it)."""
    task = get_task(job)
    test = splits["test"]
    models = stage_models(job, task.num_classes(splits), teacher_weights, stages)
    teacher = models.get(STAGE_NAMES["teacher"], (None, None))[0]
    scores = []
    for name, (model, spec) in models.items():
        if model is teacher:
            scores.append(task.score(job, name, model, spec, test))
        else:
            scores.append(task.score_against(job, name, model, spec, test, teacher))
    return scores


def stage_models(
    job: JobConfig,
    num_classes: int,
    teacher_weights: Path | None,
    stages: dict[str, StageResult],
) -> dict[str, tuple[nn.Module, ModelSpec]]:
    """Table name -> (model in eval mode, its spec) of the teacher (when it has weights), then
    the distilled student and the baseline among ``stages``."""
    out: dict[str, tuple[nn.Module, ModelSpec]] = {}
    if teacher_weights is not None:
        teacher = build_model(job.teacher, num_classes, load=False)
        load_weights(teacher, teacher_weights, what="the teacher")
        out[STAGE_NAMES["teacher"]] = (teacher.eval(), job.teacher)
    for role in ("student", "baseline"):
        if role in stages:
            student = build_model(job.student, num_classes, load=False)
            load_weights(student, stages[role].weights, what=f"the {role}")
            out[STAGE_NAMES[role]] = (student.eval(), job.student)
    return out


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
    job, splits, summary, teacher = _finished(run_dir)
    summary.scores = score_run(job, splits, teacher, summary.stages)
    return job, summary


def run_models(run_dir: Path) -> tuple[JobConfig, Splits, dict[str, nn.Module]]:
    """The job, its splits and the trained models (table name -> model in eval mode) of a run
    directory's finished stages."""
    job, splits, summary, teacher = _finished(run_dir)
    models = stage_models(job, get_task(job).num_classes(splits), teacher, summary.stages)
    return job, splits, {name: model for name, (model, _) in models.items()}


def _finished(run_dir: Path) -> tuple[JobConfig, Splits, RunSummary, Path | None]:
    run_dir = Path(run_dir).resolve()
    job = read_run_job(run_dir, "report")
    summary = RunSummary(run_dir, task=job.task, labelled_fraction=job.data.labelled_fraction)
    for role in ("teacher", "student", "baseline"):
        if (done := finished_stage(run_dir, role)) is not None:
            summary.stages[role] = done
    teacher = teacher_weights_path(job, run_dir)
    splits = get_task(job).read_splits(job, _quiet)
    return job, splits, summary, teacher if teacher.is_file() else None


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
    teacher_file = teacher_weights_path(job)
    if model == "teacher" or not task.scores_with_teacher or not teacher_file.is_file():
        return task.score(job, name, weights, spec, splits[split])
    teacher = build_model(job.teacher, num_classes, load=False)
    load_weights(teacher, teacher_file, what="the teacher")
    return task.score_against(job, name, weights, spec, splits[split], teacher.eval())


def write_summary(summary: RunSummary) -> None:
    atomic_write_text(summary.run_dir / SUMMARY_FILE, summary.table() + "\n")
    atomic_write_json(
        summary.run_dir / METRICS_FILE,
        {
            "test": [s.as_dict() for s in summary.scores],
            "epochs": {k: v.epochs_run for k, v in summary.stages.items()},
        },
    )

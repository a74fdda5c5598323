"""One job end to end: teacher stage, distilled student, baseline, and the comparison table."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from raydistill.config import JobConfig, JobError, load_job
from raydistill.data.arrays import LabelledArrays, model_tensor
from raydistill.data.balance import ClassBalancer
from raydistill.data.sources import load_splits, split_views, training_datasets
from raydistill.data.text import for_model
from raydistill.distill.taps import feature_shapes
from raydistill.evaluate import ModelScore, score
from raydistill.models.hf import check_tokenizer_fits
from raydistill.models.specs import build_model, load_weights
from raydistill.runtime import ray_session
from raydistill.teacher.cache import ensure_cache, job_codec, read_cache, read_manifest
from raydistill.teacher.codec import LogitCodec
from raydistill.teacher.pool import attach_teacher
from raydistill.train.spec import Role, StageSpec
from raydistill.train.stage import (
    WEIGHTS_FILE,
    StageResult,
    finished_stage,
    run_stage,
    stage_dir,
)

Log = Callable[[str], None]
JOB_FILE = "job.yaml"
STAGE_NAMES = {
    "teacher": "teacher",
    "student": "student (distilled)",
    "baseline": "baseline (student alone)",
}
SUMMARY_FILE = "summary.md"
METRICS_FILE = "metrics.json"


@dataclass
class RunSummary:
    """What a run produced: its directory, the stages it trained and the test-split scores."""

    run_dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)
    scores: list[ModelScore] = field(default_factory=list)

    def score(self, name: str) -> ModelScore:
        return next(s for s in self.scores if s.name == name)

    def table(self) -> str:
        """The comparison as a Markdown table."""
        rows = [
            "| model | test accuracy | parameters | latency / sample (CPU, batch 1) | epochs |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in self.scores:
            stage = self.stages.get(s.name.split(" ")[0])
            epochs = str(stage.epochs_run) if stage else "-"
            rows.append(
                f"| {s.name} | {100 * s.accuracy:.2f}% | {s.parameters:,} | "
                f"{s.latency_ms:.3f} ms | {epochs} |"
            )
        return "\n".join(rows + [""] + [f"- {n}" for n in self.notes()])

    def notes(self) -> list[str]:
        """The trade-off in words: size, speed and points against the teacher and baseline."""
        names = {s.name: s for s in self.scores}
        notes = []
        teacher, student = names.get("teacher"), names.get("student (distilled)")
        alone = names.get("baseline (student alone)")
        if teacher and student:
            notes.append(
                f"student: {teacher.parameters / student.parameters:.1f}x fewer parameters, "
                f"{teacher.latency_ms / student.latency_ms:.1f}x faster per sample, "
                f"{100 * (student.accuracy - teacher.accuracy):+.2f} points vs the teacher"
            )
        if student and alone:
            notes.append(
                f"distillation bought {100 * (student.accuracy - alone.accuracy):+.2f} points "
                "over the same student trained alone"
            )
        return notes


def prepare_run_dir(job: JobConfig, fresh: bool, log: Log) -> Path:
    """Create (or with ``fresh`` wipe and recreate) the run directory; record the resolved job."""
    run_dir = job.run_dir
    if fresh and run_dir.exists():
        log(f"--fresh: removing {run_dir}")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    job_file = run_dir / JOB_FILE
    resolved = job.to_yaml()
    if job_file.exists() and job_file.read_text() != resolved:
        log(f"note: {job_file} differs from this job; resuming with the new settings")
    job_file.write_text(resolved)
    return run_dir


def teacher_weights_path(job: JobConfig, run_dir: Path | None = None) -> Path:
    """The teacher's weights: the job's checkpoint, or the teacher stage's output in
    ``run_dir`` (default: the job's run directory)."""
    if job.teacher.checkpoint is not None:
        return Path(job.teacher.checkpoint)
    return stage_dir(run_dir or job.run_dir, "teacher") / WEIGHTS_FILE


def make_balancer(job: JobConfig, train: LabelledArrays, log: Log = print) -> ClassBalancer | None:
    """The job's class balancer, from counts given in the job or counted once here."""
    cfg = job.data.balance
    if cfg is None:
        return None
    counts = (
        np.asarray(cfg.counts)
        if cfg.counts is not None
        else np.bincount(train.labels, minlength=train.num_classes)
    )
    if len(counts) != train.num_classes:
        raise JobError(f"data.balance.counts: {len(counts)} counts for {train.num_classes} classes")
    balancer = ClassBalancer.from_counts(counts, cfg.keep_ratio, cfg.repeat_rare, cfg.target)
    expected = balancer.expected_counts(counts)
    log(
        f"[balance] class counts {counts.tolist()} -> expected per epoch "
        f"{[round(x) for x in expected.tolist()]} (target {balancer.target:.0f})"
    )
    return balancer


def _already_trained(job: JobConfig, role: Role, log: Log) -> StageResult | None:
    """A stage an earlier run finished: reused before any data or teacher work is done."""
    done = finished_stage(job.run_dir, role)
    if done is not None:
        log(f"[{role}] already trained ({done.weights}); use --fresh to retrain")
    return done


def _train(
    spec: StageSpec,
    datasets: dict,
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
    loop_config = {"resume_from": str(resume_from)} if resume_from is not None else None
    return run_stage(spec, datasets, spec.job.run_dir, callbacks, loop_config=loop_config)


def _workers(job: JobConfig) -> str:
    s = job.scaling
    return str(s.workers) if isinstance(s.workers, int) else f"{s.min_workers}-{s.max_workers}"


def teacher_pass_rows(job: JobConfig, splits: dict[str, LabelledArrays]) -> int:
    """Rows of one teacher pass: every augmented view of train, and val."""
    views = job.data.augment.views if job.data.augment is not None else 1
    return len(splits["train"]) * views + len(splits["val"])


def planned_teacher_passes(job: JobConfig, splits: dict[str, LabelledArrays]) -> int:
    """Teacher forward passes (samples) the distilled student stage of ``job`` will run:
    none when it reads a finished cache, one pass with ``once``, one per epoch with
    ``per_epoch`` (fewer if it stops early), plus a frozen copy's per-worker passes when the
    workers compute features themselves."""
    rows = teacher_pass_rows(job, splits)
    mode = job.distill.teacher_pass
    if mode == "cache":
        passes = 0 if read_manifest(job.cache_dir) is not None else rows
    else:
        passes = rows * (job.train.epochs if mode == "per_epoch" else 1)
    if job.distill.feature_layers and job.distill.features_from == "worker":
        passes += rows * job.train.epochs
    return passes


def fit_teacher(job: JobConfig, splits: dict[str, LabelledArrays], log: Log) -> Path:
    """Train the teacher unless the job names its checkpoint or an earlier run trained it."""
    if job.teacher.checkpoint is not None:
        log(f"[teacher] using checkpoint {job.teacher.checkpoint}")
        return Path(job.teacher.checkpoint)
    if (done := _already_trained(job, "teacher", log)) is not None:
        return done.weights
    spec = StageSpec(
        role="teacher",
        job=job,
        model=job.teacher,
        train=job.teacher_train(),
        num_classes=splits["train"].num_classes,
        distill=False,
        balancer=make_balancer(job, splits["train"], log),
    )
    return _train(spec, training_datasets(job, splits, job.teacher, distill=False), log).weights


def check_pair(
    job: JobConfig, teacher_weights: Path | None, train: LabelledArrays
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """One dry forward of teacher and student on the first training row (each as it reads it:
    text rows through its own tokenizer): outputs must match; feature shapes (without the batch
    dim) size the adapters. Without ``teacher_weights`` the teacher keeps its initial weights
    (shapes do not depend on them)."""
    num_classes = train.num_classes
    teacher = build_model(job.teacher, num_classes, load=False)
    if teacher_weights is not None:
        load_weights(teacher, teacher_weights, what="the teacher")
    student = build_model(job.student, num_classes)
    for side, model in (("teacher", teacher), ("student", student)):
        tokenizer = getattr(job, side).text_tokenizer
        if tokenizer is not None:
            check_tokenizer_fits(model, tokenizer, side)
    first = train.take(np.arange(1))
    x_t = model_tensor(for_model(job, job.teacher, first).inputs)
    x = model_tensor(for_model(job, job.student, first).inputs)
    with torch.no_grad():
        t_out, s_out = teacher.eval()(x_t), student.eval()(x)
    if t_out.shape != s_out.shape:
        raise JobError(
            f"teacher outputs {tuple(t_out.shape)} but student outputs {tuple(s_out.shape)} "
            "for one sample: both must predict the same classes"
        )
    pairs = job.distill.feature_layers
    if not pairs:
        return {}, {}
    try:
        s_shapes = feature_shapes(student, [p.student for p in pairs], x)
        t_shapes = feature_shapes(teacher, [p.teacher for p in pairs], x_t)
    except KeyError as exc:
        raise JobError(f"distill.feature_layers: {exc.args[0]}") from None
    return s_shapes, t_shapes


def fit_student(
    job: JobConfig,
    splits: dict[str, LabelledArrays],
    role: Role,
    teacher_weights: Path | None,
    log: Log,
    callbacks: list[Any] | None = None,
    label: str | None = None,
    cached: dict[str, Any] | None = None,
    shapes: tuple[dict, dict] | None = None,
    resume_from: Path | None = None,
) -> StageResult:
    """Train the student, distilled (``role='student'``) or alone (``role='baseline'``).

    ``callbacks`` go to the stage's Ray Train run; ``label`` prefixes its progress lines;
    ``cached`` are the teacher cache's datasets already read (tune reads them once for every
    trial) for a job with ``teacher_pass: cache``; ``shapes`` is :func:`check_pair`'s result
    when the caller already ran it; ``resume_from`` is a checkpoint directory (``state.pt``)
    to continue from (a PBT trial continuing another trial's training)."""
    if (done := _already_trained(job, role, log)) is not None:
        return done
    num_classes = splits["train"].num_classes
    distill = role == "student"
    datasets = training_datasets(job, splits, distill=distill)
    codec = LogitCodec()
    if not distill:
        shapes = ({}, {})
    else:
        assert teacher_weights is not None
        if shapes is None:
            shapes = check_pair(job, teacher_weights, splits["train"])
        if job.distill.teacher_pass == "cache":
            if cached is None:
                manifest = ensure_cache(job, teacher_weights, splits, log)
                cached = read_cache(job.cache_dir, manifest)
            datasets, codec = cached, job_codec(job)
        else:
            datasets = {
                k: attach_teacher(ds, job, teacher_weights, num_classes)
                for k, ds in datasets.items()
            }
        if job.distill.teacher_pass == "once":
            started = time.perf_counter()
            datasets = {k: ds.materialize() for k, ds in datasets.items()}
            rows = sum(ds.count() for ds in datasets.values())
            log(
                f"[teacher] one pass over {rows} rows in {time.perf_counter() - started:.1f}s "
                f"({job.scaling.teacher_pool.max_actors} actor(s) max)"
            )
        if job.data.augment is not None:
            datasets = split_views(datasets, job.data.augment)
    spec = StageSpec(
        role=role,
        job=job,
        model=job.student,
        train=job.train,
        num_classes=num_classes,
        distill=distill,
        student_shapes=shapes[0],
        teacher_shapes=shapes[1],
        codec=codec,
        balancer=make_balancer(job, splits["train"], log),
        teacher_weights=str(teacher_weights) if distill else None,
        label=label,
    )
    return _train(spec, datasets, log, callbacks, resume_from)


def preflight(job: JobConfig, splits: dict[str, LabelledArrays]) -> None:
    """Checks that need neither Ray nor a run directory, run before either exists so that bad
    input leaves nothing behind: the student (with its ``checkpoint``) builds, and a distilled
    student's outputs match the teacher's (whose ``checkpoint``, when given, must fit it)."""
    num_classes = splits["train"].num_classes
    if job.distill.enabled:
        check_pair(job, job.teacher.checkpoint, splits["train"])
    else:
        build_model(job.student, num_classes)


def require_classification(job: JobConfig, command: str) -> None:
    """Commands that do not handle other tasks yet say so in one line."""
    if job.task != "classification":
        raise JobError(
            f"`raydistill {command}` does not support task: {job.task} yet; `raydistill train` "
            "runs every stage of it and writes its table to summary.md and metrics.json"
        )


def run_teacher(job: JobConfig, fresh: bool = False, log: Log = print) -> Path:
    """``raydistill teacher``: train (or find) the teacher; returns its weights file."""
    require_classification(job, "teacher")
    splits = load_splits(job.data)  # unreadable data fails before the run directory exists
    prepare_run_dir(job, fresh, log)
    with ray_session(job):
        return fit_teacher(job, splits, log)


def run_cache(job: JobConfig, fresh: bool = False, log: Log = print) -> dict:
    """``raydistill cache``: the teacher (trained if needed) runs once over train and val and
    its outputs are written as Parquet; returns the cache manifest. ``fresh`` rebuilds only the
    cache."""
    require_classification(job, "cache")
    splits = load_splits(job.data)
    preflight(job, splits)
    prepare_run_dir(job, False, log)
    with ray_session(job):
        weights = fit_teacher(job, splits, log)
        return ensure_cache(job, weights, splits, log, fresh=fresh)


def run_job(job: JobConfig, fresh: bool = False, log: Log = print) -> RunSummary:
    """``raydistill train``: teacher stage if needed, the student (distilled unless
    ``distill.enabled`` is false), the baseline when ``train.baseline``, then the test table.
    A ``task: detection`` job returns a :class:`~raydistill.detection.pipeline.DetectionSummary`
    (COCO mAP instead of accuracy)."""
    if job.task == "detection":
        from raydistill.detection.pipeline import run_detection_job

        return run_detection_job(job, fresh, log)  # type: ignore[return-value]
    splits = load_splits(job.data)
    preflight(job, splits)
    run_dir = prepare_run_dir(job, fresh, log)
    log(
        f"data: {job.data.source}: "
        + ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        + f" rows, {splits['train'].num_classes} classes; run directory {run_dir}"
    )
    summary = RunSummary(run_dir)
    roles: list[Role] = ["student"] if job.distill.enabled else ["baseline"]
    if job.distill.enabled and job.train.baseline:
        roles.append("baseline")
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
    job: JobConfig,
    splits: dict[str, LabelledArrays],
    teacher_weights: Path | None,
    stages: dict[str, StageResult],
) -> list[ModelScore]:
    """Test-split scores in table order: the teacher (when it has weights), then the distilled
    student and the baseline among ``stages``."""
    num_classes = splits["train"].num_classes
    test = splits["test"]
    scores = []
    if teacher_weights is not None:
        teacher = build_model(job.teacher, num_classes, load=False)
        load_weights(teacher, teacher_weights, what="the teacher")
        scores.append(score(STAGE_NAMES["teacher"], teacher, for_model(job, job.teacher, test)))
    for role in ("student", "baseline"):
        if role in stages:
            student = build_model(job.student, num_classes, load=False)
            load_weights(student, stages[role].weights, what=f"the {role}")
            scores.append(score(STAGE_NAMES[role], student, for_model(job, job.student, test)))
    return scores


def summarize_run(run_dir: Path) -> tuple[JobConfig, RunSummary]:
    """The job and the test-split table of a run directory as an earlier run left it (its
    finished stages are scored again, on this machine)."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / JOB_FILE).is_file():
        raise JobError(f"{run_dir}: not a run directory (no {JOB_FILE}; run raydistill train)")
    job = load_job(run_dir / JOB_FILE)
    require_classification(job, "report")
    summary = RunSummary(run_dir)
    for role in ("teacher", "student", "baseline"):
        if (done := finished_stage(run_dir, role)) is not None:
            summary.stages[role] = done
    teacher = teacher_weights_path(job, run_dir)
    summary.scores = score_run(
        job, load_splits(job.data), teacher if teacher.is_file() else None, summary.stages
    )
    return job, summary


def evaluate_checkpoint(
    job: JobConfig, checkpoint: Path | None = None, split: str = "test", model: str = "student"
) -> ModelScore:
    """``raydistill evaluate``: score a weights file (default: this run's ``model``) on a split."""
    require_classification(job, "evaluate")
    spec = job.student if model == "student" else job.teacher
    if checkpoint is None:
        student_weights = stage_dir(job.run_dir, "student") / WEIGHTS_FILE
        checkpoint = teacher_weights_path(job) if model == "teacher" else student_weights
    if not Path(checkpoint).is_file():
        raise JobError(f"no weights at {checkpoint}: train the job first or pass --checkpoint")
    splits = load_splits(job.data)
    if split not in splits:
        raise JobError(f"unknown split '{split}' (one of {sorted(splits)})")
    num_classes = splits["train"].num_classes
    weights = load_weights(build_model(spec, num_classes, load=False), Path(checkpoint), model)
    rows = for_model(job, spec, splits[split])
    return score(f"{model} ({Path(checkpoint).name}, {split})", weights, rows)


def write_summary(summary: RunSummary) -> None:
    (summary.run_dir / SUMMARY_FILE).write_text(summary.table() + "\n")
    (summary.run_dir / METRICS_FILE).write_text(
        json.dumps(
            {
                "test": [s.as_dict() for s in summary.scores],
                "epochs": {k: v.epochs_run for k, v in summary.stages.items()},
            },
            indent=1,
        )
    )

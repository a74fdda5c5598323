"""``raydistill check-teacher``: is this teacher worth distilling from, before a student trains?

Three classic selection rules, measured on this machine:

1. **Headroom.** A student rarely reaches its teacher, so the teacher should clearly beat the
   accuracy the student must reach (``student.target``). The rule of thumb "teacher >= 1.2x the
   target" cannot hold for accuracies above 83%, so it is applied to errors: the teacher should
   make at most 1/1.2 of the errors the target allows, i.e. reach
   ``1 - (1 - target) / 1.2``.
2. **Inference cost.** A teacher much slower than the student (over ~5x per sample) bottlenecks
   online distillation; the cache (``distill.teacher_pass: cache``) or more teacher actors help.
3. **Feature layers.** Every layer named in ``distill.feature_layers`` must exist on its side and
   the pair must have an adapter; the shapes and the adapter that training will build are shown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from raydistill.config import JobConfig, JobError
from raydistill.distill.adapters import build_adapter
from raydistill.evaluate import THROUGHPUT_BATCH
from raydistill.models.specs import build_model, count_parameters, load_weights
from raydistill.pipeline import teacher_pass_rows, teacher_weights_path
from raydistill.tasks import get_task
from raydistill.tasks.base import Splits

HEADROOM = 1.2  # the teacher should make at most 1/HEADROOM of the errors the target allows
MAX_SLOWDOWN = 5.0  # teacher seconds per sample over the student's before warning


def required_teacher_accuracy(target: float, headroom: float = HEADROOM) -> float:
    """The accuracy a teacher needs for a student ``target`` (both in [0, 1]): at most
    ``1/headroom`` of the target's error rate."""
    if not 0 < target <= 1:
        raise ValueError(f"target accuracy must be in (0, 1], got {target}")
    return 1 - (1 - target) / headroom


@dataclass(frozen=True)
class FeatureCheck:
    """One ``distill.feature_layers`` pair: shapes without the batch dim, and its adapter."""

    student_layer: str
    teacher_layer: str
    student_shape: tuple[int, ...]
    teacher_shape: tuple[int, ...]
    adapter: str | None  # e.g. "ConvAdapter(channels 16->64, resize=none to 4x4)"
    adapter_parameters: int
    error: str | None = None


@dataclass
class TeacherCheck:
    """What ``raydistill check-teacher`` measured; ``warnings`` break a rule of thumb,
    ``problems`` would make training fail."""

    teacher_parameters: int
    student_parameters: int
    split: str
    teacher_accuracy: float | None  # None: the teacher has no weights yet
    teacher_weights: Path
    target: float | None
    teacher_latency_ms: float
    student_latency_ms: float
    teacher_throughput: float  # samples/s at batch throughput_batch, one CPU thread
    student_throughput: float
    pass_rows: int  # rows of one teacher pass (train views + val)
    actors: int
    teacher_pass: str
    measure: str = "accuracy"  # what teacher_accuracy is (the task's headline: accuracy, mAP)
    unit: str = "samples"
    throughput_batch: int = THROUGHPUT_BATCH  # the batch throughputs were measured at
    features: list[FeatureCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def slowdown(self) -> float:
        """Teacher time per sample over the student's, at batch THROUGHPUT_BATCH."""
        return self.student_throughput / self.teacher_throughput

    @property
    def required_accuracy(self) -> float | None:
        return None if self.target is None else required_teacher_accuracy(self.target)

    @property
    def pass_seconds(self) -> float:
        """Estimated seconds of one teacher pass with the pool's ``max_actors`` (one CPU
        thread each, at the measured batch-64 throughput)."""
        return self.pass_rows / (self.teacher_throughput * self.actors)

    def lines(self) -> list[str]:
        """The findings as plain lines, for a terminal or a CI log."""
        sizes = f"teacher {self.teacher_parameters:,}, student {self.student_parameters:,}"
        out = [f"parameters: {sizes}"]
        if self.teacher_accuracy is None:
            out.append(
                f"{self.measure}: the teacher has no weights yet ({self.teacher_weights}); "
                "train it with `raydistill teacher JOB` to check it"
            )
        else:
            line = f"{self.measure} ({self.split}): teacher {100 * self.teacher_accuracy:.2f}%"
            if self.target is None:
                line += "; set student.target (e.g. --set student.target=0.95) to check headroom"
            else:
                need = self.required_accuracy
                assert need is not None
                verdict = "ok" if self.teacher_accuracy >= need else "LOW"
                line += (
                    f"; student target {100 * self.target:.2f}% needs a teacher >= "
                    f"{100 * need:.2f}% ({HEADROOM}x fewer errors): {verdict}"
                )
            out.append(line)
        one = self.unit.removesuffix("s")
        out.append(
            f"inference (CPU, 1 thread): teacher {self.teacher_latency_ms:.3f} ms/{one} at "
            f"batch 1, {self.teacher_throughput:,.0f} {self.unit}/s at batch "
            f"{self.throughput_batch}; student {self.student_latency_ms:.3f} ms, "
            f"{self.student_throughput:,.0f}/s; teacher {self.slowdown:.1f}x slower per {one}: "
            + ("ok" if self.slowdown <= MAX_SLOWDOWN else "SLOW")
        )
        out.append(
            f"one teacher pass: {self.pass_rows:,} rows, about {self.pass_seconds:.1f} s with "
            f"{self.actors} actor(s) (teacher_pass: {self.teacher_pass})"
        )
        for f in self.features:
            head = f"feature pair {f.student_layer} -> {f.teacher_layer}"
            if f.error is not None:
                out.append(f"{head}: {f.error}")
            else:
                out.append(
                    f"{head}: student {f.student_shape}, teacher {f.teacher_shape} -> "
                    f"{f.adapter}, {f.adapter_parameters:,} parameters"
                )
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"error: {p}" for p in self.problems]
        return out


def _feature_checks(
    job: JobConfig, weights: Path | None, splits: Splits
) -> tuple[list[FeatureCheck], list[str]]:
    """The driver's dry forward (the one training runs), then each pair's adapter."""
    try:
        s_shapes, t_shapes = get_task(job).check_pair(job, weights, splits, lambda _: None)
    except JobError as exc:
        return [], [str(exc)]
    checks, problems = [], []
    for pair in job.distill.feature_layers:
        s, t = s_shapes[pair.student], t_shapes[pair.teacher]
        try:
            adapter = build_adapter(s, t)
        except ValueError as exc:
            problems.append(f"distill.feature_layers {pair.student} -> {pair.teacher}: {exc}")
            checks.append(FeatureCheck(pair.student, pair.teacher, s, t, None, 0, str(exc)))
            continue
        extra = adapter.extra_repr()
        described = f"{type(adapter).__name__}({extra})" if extra else type(adapter).__name__
        params = sum(p.numel() for p in adapter.parameters())
        checks.append(FeatureCheck(pair.student, pair.teacher, s, t, described, params))
    return checks, problems


def check_teacher(job: JobConfig, split: str = "val") -> TeacherCheck:
    """``raydistill check-teacher``: measure the job's teacher against the student (no Ray).

    The teacher's accuracy is measured on ``split`` when it has weights (the job's checkpoint
    or a trained teacher stage); costs and feature shapes are measured either way.
    """
    task = get_task(job)
    task.require("check-teacher")
    task.check_job(job)
    job = task.prepare(job)
    splits = task.read_splits(job, lambda _: None)
    if split not in splits:
        raise JobError(f"unknown split '{split}' (one of {sorted(splits)})")
    num_classes = task.num_classes(splits)
    data = splits[split]
    weights_file = teacher_weights_path(job)
    weights = weights_file if weights_file.is_file() else None
    teacher = build_model(job.teacher, num_classes, load=False)
    if weights is not None:
        load_weights(teacher, weights, what="the teacher")
    student = build_model(job.student, num_classes)
    teacher_speed = task.speed(job, teacher, job.teacher, data)
    student_speed = task.speed(job, student, job.student, data)
    measured = task.score(job, "teacher", teacher, job.teacher, data) if weights else None
    result = TeacherCheck(
        teacher_parameters=count_parameters(teacher),
        student_parameters=count_parameters(student),
        split=split,
        teacher_accuracy=measured.headline if measured is not None else None,
        teacher_weights=weights_file,
        target=job.student.target,
        teacher_latency_ms=teacher_speed[0],
        student_latency_ms=student_speed[0],
        teacher_throughput=teacher_speed[1],
        student_throughput=student_speed[1],
        pass_rows=teacher_pass_rows(job, splits),
        actors=job.scaling.teacher_pool.planned_max_actors,
        teacher_pass=task.teacher_pass(job),
        measure=task.headline_name,
        unit=task.unit,
        throughput_batch=teacher_speed[2],
    )
    result.features, result.problems = _feature_checks(job, weights, splits)
    target, measured = job.student.target, result.teacher_accuracy
    if target is not None and measured is not None:
        need = required_teacher_accuracy(target)
        if measured < need:
            result.warnings.append(
                f"the teacher ({100 * measured:.2f}% on {split}) leaves little headroom over the "
                f"student target {100 * target:.2f}% (wanted >= {100 * need:.2f}%): train a "
                "stronger teacher or lower the target"
            )
    if result.slowdown > MAX_SLOWDOWN:
        pool = job.scaling.teacher_pool
        hint = (
            "with teacher_pass: per_epoch it runs every epoch and will bottleneck training; "
            if job.distill.teacher_pass == "per_epoch"
            else "online passes would bottleneck training; "
        )
        result.warnings.append(
            f"the teacher is {result.slowdown:.1f}x slower per sample than the student (over "
            f"{MAX_SLOWDOWN:g}x): {hint}run it once into the cache (distill.teacher_pass: cache,"
            f" `raydistill cache`) or add teacher actors (scaling.teacher_pool.max_actors, "
            f"now {pool.max_actors})"
        )
    return result

"""What one training stage needs on every worker (picklable, built on the driver)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from raydistill.config import JobConfig, ModelSpec, TrainConfig
from raydistill.data.balance import ClassBalancer
from raydistill.teacher.codec import LogitCodec

Role = Literal["teacher", "student", "baseline"]


@dataclass(frozen=True)
class StageSpec:
    """One stage of a job: train the teacher, the distilled student, or the student alone.

    ``student_shapes``/``teacher_shapes`` are the tapped feature shapes (no batch dim) measured
    by one dry forward on the driver, so every worker builds identical adapters.
    """

    role: Role
    job: JobConfig
    model: ModelSpec
    train: TrainConfig
    num_classes: int
    distill: bool
    student_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    teacher_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    codec: LogitCodec = field(default_factory=LogitCodec)  # how teacher logits arrive in rows
    balancer: ClassBalancer | None = None  # resamples each training batch toward balance
    teacher_weights: str | None = None  # for a frozen teacher copy in each worker
    label: str | None = None  # prefix of progress lines (a tune trial's id); default: role

    @property
    def name(self) -> str:
        return self.label or self.role

    @property
    def feature_pairs(self) -> list[tuple[str, str]]:
        if not self.distill:
            return []
        return [(p.student, p.teacher) for p in self.job.distill.feature_layers]

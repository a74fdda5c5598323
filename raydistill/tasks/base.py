"""The task interface: what differs between classification, detection and cross-modal jobs.

A task answers, for one job, what the shared pipeline (:mod:`raydistill.pipeline`) and the shared
epoch loop (:mod:`raydistill.train.loop`) ask: how to read and check the data, which Ray datasets
a model reads, how to build the stage's trainable module, one train step, evaluation on the
validation shard, and how to score a model on the test split. Neither the pipeline nor the loop
ever asks which task it runs.

Driver side (plain Python, before and after Ray Train): ``prepare``, ``read_splits``,
``check_job``, ``describe_data``, ``num_classes``, ``balancer``, ``check_student``,
``check_pair``, ``datasets``, ``loop_extras``, ``score``, ``speed``, ``example_inputs``,
``output_difference``, ``table``, ``data_fingerprint``; the teacher cache's ``cache_datasets``,
``cache_codec`` and ``cache_key_parts``; scoring against the teacher (``score_against``,
``score_line``) and the report's ``samples``.
Worker side (inside every Ray Train worker, or Ray-free in tests and in-memory searches):
``build_core``, ``train_batches``, ``step``, ``validate``, ``epoch_line``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from torch import Tensor, nn

from raydistill.config import JobConfig, JobError, ModelSpec

if TYPE_CHECKING:
    from raydistill.train.context import LoopContext
    from raydistill.train.spec import StageSpec

Log = Callable[[str], None]
Splits = dict[str, Any]  # "train", "val", "test" -> the task's split objects
Shapes = tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]  # student, teacher

# Every command a job can be given; a task lists those it runs (its capabilities).
COMMANDS = (
    "validate",
    "teacher",
    "cache",
    "train",
    "tune",
    "evaluate",
    "report",
    "export",
    "check-teacher",
)


@dataclass
class StepOutput:
    """One train step's result.

    ``total`` is the scalar loss to back-propagate; ``parts`` its named terms as floats (logged
    per epoch as ``train_<name>``, sample-weighted; ``loss`` is the total); ``n`` the samples
    the step trained on; ``where`` names the batch's rows for a non-finite-loss report (or
    returns that name when called: built only when needed);
    ``counts`` per-class label counts [C] of the step (summed into the epoch's
    ``class_counts``), when the task has them.
    """

    total: Tensor
    parts: dict[str, float]
    n: int
    where: str | Callable[[], str]
    counts: Tensor | None = None


@dataclass(frozen=True)
class SummaryTable:
    """A comparison table as the report and ``summary.md`` show it (cells already formatted)."""

    header: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: list[str] = field(default_factory=list)


class Task:
    """Base class of every task; subclasses fill in the hooks. One instance serves every job."""

    name: ClassVar[str]
    commands: ClassVar[frozenset[str]] = frozenset(COMMANDS)
    # why a command is refused, for those not in ``commands`` (one line each)
    refusals: ClassVar[dict[str, str]] = {}
    # the validation metric keep_best and early stopping watch unless the job says, and those
    # a job may name (train.monitor)
    monitor: ClassVar[str] = "val_acc"
    monitors: ClassVar[frozenset[str]] = frozenset({"val_acc", "val_ce"})
    # distill.teacher_pass modes this task's student stage can run
    teacher_passes: ClassVar[frozenset[str]] = frozenset({"once", "per_epoch", "cache"})
    # a short word for one sample in progress lines ("samples", "images")
    unit: ClassVar[str] = "samples"
    # the formats `raydistill export` writes for this task's models
    export_formats: ClassVar[tuple[str, ...]] = ("torchscript", "onnx", "safetensors", "hf")
    # what a score's ``headline`` (a fraction) is called
    headline_name: ClassVar[str] = "accuracy"
    # the report's training-curve panels: (title, train metric or None, val metric or None)
    curves: ClassVar[tuple[tuple[str, str | None, str | None], ...]] = (
        ("objective", "train_loss", "val_loss"),
    )
    # the named terms of StepOutput.parts, in a fixed order (every rank sums the same ones)
    loss_parts: ClassVar[tuple[str, ...]] = ("loss",)
    # whether steps count labels per class (StepOutput.counts -> the epoch's class_counts)
    counts: ClassVar[bool] = False
    # whether the student can learn from labels on a share of the rows (data.labelled_fraction)
    labelled_share: ClassVar[bool] = False
    # whether a student's score measures it against the teacher too (``score_against`` is given
    # the teacher's model: `raydistill evaluate` loads the teacher's weights for it)
    scores_with_teacher: ClassVar[bool] = False
    # whether the report shows model outputs side by side (``samples``)
    report_samples: ClassVar[bool] = False

    # ------------------------------------------------------------------ capabilities

    def require(self, command: str) -> None:
        """Refuse ``command`` in one line when this task does not run it."""
        if command not in self.commands:
            why = self.refusals.get(command, "not supported for this task yet")
            raise JobError(f"`raydistill {command}` does not run task: {self.name}: {why}")

    # ------------------------------------------------------------------ driver side

    def prepare(self, job: JobConfig) -> JobConfig:
        """The job as its stages run it (defaults a task fills into the model specs)."""
        return job

    def check_job(self, job: JobConfig) -> None:
        """Refuse settings this task would otherwise ignore (one line naming the key)."""
        for key, train in (("train", job.train), ("teacher.train", job.teacher_train())):
            if train.monitor not in ("auto", *self.monitors):
                raise JobError(
                    f"{key}.monitor: task {self.name} validates with "
                    f"{', '.join(sorted(self.monitors))}, not {train.monitor}"
                )
        if job.data.labelled_fraction is not None and not self.labelled_share:
            raise JobError(f"data.labelled_fraction: task {self.name} trains on every row's labels")
        if self.teacher_pass(job) not in self.teacher_passes:
            raise JobError(
                f"distill.teacher_pass: task {self.name} runs "
                f"{' or '.join(sorted(self.teacher_passes))}, not {self.teacher_pass(job)}"
            )

    def teacher_pass(self, job: JobConfig) -> str:
        """How the teacher reaches the distilled student (a :mod:`raydistill.teacher.passes`
        strategy name)."""
        return job.distill.teacher_pass

    def read_splits(self, job: JobConfig, log: Log = print) -> Splits:
        raise NotImplementedError

    def describe_data(self, job: JobConfig, splits: Splits) -> str:
        """One line saying what was read (sizes, classes)."""
        raise NotImplementedError

    def num_classes(self, splits: Splits) -> int:
        return int(splits["train"].num_classes)

    def data_fingerprint(self, splits: Splits) -> str:
        """A hash of the rows every split holds: equal rows, equal fingerprint."""
        digest = hashlib.sha256()
        for name in sorted(splits):
            digest.update(f"{name}:{self.split_fingerprint(splits[name])};".encode())
        return digest.hexdigest()

    def split_fingerprint(self, split: Any) -> str:
        raise NotImplementedError

    def split_rows(self, split: Any) -> int:
        """Rows (samples) of one split."""
        return len(split)

    def balancer(self, job: JobConfig, splits: Splits, log: Log = print) -> Any:
        """The class balancer each training batch is resampled with, or None."""
        return None

    def check_student(self, job: JobConfig, splits: Splits) -> None:
        """The student (with its ``checkpoint``) builds."""
        raise NotImplementedError

    def check_pair(
        self, job: JobConfig, teacher_weights: Path | None, splits: Splits, log: Log = print
    ) -> Shapes:
        """One dry forward of both models; returns the tapped feature shapes (no batch dim)
        that size the adapters. Without ``teacher_weights`` the teacher keeps its initial
        weights (shapes do not depend on them)."""
        raise NotImplementedError

    def datasets(
        self, job: JobConfig, splits: Splits, model: ModelSpec, distill: bool
    ) -> dict[str, Any]:
        """Ray datasets of train (or one per augmented view) and val, as ``model`` reads them."""
        raise NotImplementedError

    def labelled_only(self, job: JobConfig, datasets: dict[str, Any]) -> dict[str, Any]:
        """``datasets`` cut to the training rows ``data.labelled_fraction`` labels (a stage
        that learns from labels alone: the baseline); tasks with ``labelled_share``."""
        raise NotImplementedError

    def cache_datasets(self, job: JobConfig, splits: Splits) -> dict[str, Any]:
        """The train and val Ray datasets the teacher cache's pass labels (with ``row_id``)."""
        from raydistill.data.sources import training_datasets

        return training_datasets(job, splits)

    def cache_codec(self, job: JobConfig, num_classes: int) -> Any:
        """How the teacher cache encodes the teacher's outputs (what train then decodes)."""
        from raydistill.teacher.cache import job_codec

        return job_codec(job)

    def cache_key_parts(self, job: JobConfig, splits: Splits) -> dict[str, Any]:
        """Entries this task adds to (or replaces in) the teacher cache's key: whatever else
        a cache must have been made with to serve the job."""
        return {}

    def loop_extras(self, job: JobConfig, splits: Splits) -> dict[str, Any]:
        """Entries of every worker's loop config beyond the stage spec (picklable)."""
        return {}

    def score(
        self, job: JobConfig, name: str, model: nn.Module, spec: ModelSpec, split: Any
    ) -> Any:
        """A model's test-split row: an object with ``name``, ``headline`` (the task's main
        figure as a fraction), ``parameters``, ``latency_ms`` and ``as_dict()``."""
        raise NotImplementedError

    def score_against(
        self,
        job: JobConfig,
        name: str,
        model: nn.Module,
        spec: ModelSpec,
        split: Any,
        teacher: nn.Module | None,
    ) -> Any:
        """``score``, plus what compares the model with ``teacher`` (None: no teacher, or the
        row is the teacher's own) for tasks with ``scores_with_teacher``."""
        return self.score(job, name, model, spec, split)

    def score_line(self, score: Any) -> str:
        """`raydistill evaluate`'s one line about a score row."""
        import math

        from raydistill.evaluate import ECE_BINS

        # a classifier's score carries its calibration; a detector's has none to show
        ece = getattr(score, "ece", float("nan"))
        calibration = f", ECE {100 * ece:.2f}% ({ECE_BINS} bins)" if math.isfinite(ece) else ""
        return (
            f"{score.name}: {self.headline_name} {100 * score.headline:.2f}%{calibration}, "
            f"{score.parameters:,} parameters, {score.latency_ms:.3f} ms per "
            f"{self.unit.removesuffix('s')} (CPU, batch 1)"
        )

    def samples(self, job: JobConfig, splits: Splits, models: dict[str, nn.Module]) -> Any:
        """The report's outputs side by side (a :class:`SummaryTable`) of ``models`` (table
        name -> model in eval mode) on a few test rows, for tasks with ``report_samples``."""
        return None

    def speed(
        self, job: JobConfig, model: nn.Module, spec: ModelSpec, split: Any
    ) -> tuple[float, float, int]:
        """CPU cost of ``model`` on one thread: (milliseconds per sample at batch 1, samples
        per second at the returned batch size, that batch size)."""
        raise NotImplementedError

    def example_inputs(self, job: JobConfig, spec: ModelSpec, split: Any, rows: int) -> Any:
        """A few rows of ``split`` as ``spec``'s model reads them (export checks)."""
        raise NotImplementedError

    def output_difference(self, model: nn.Module, loaded: nn.Module, inputs: Any) -> float:
        """The largest absolute difference between two models' outputs on ``inputs`` (an
        export loaded back against the model it was written from)."""
        raise NotImplementedError

    def table(
        self, scores: list[Any], epochs: dict[str, int], detailed: bool = False
    ) -> SummaryTable:
        """The comparison of scored models (``epochs``: epochs run per stage); ``detailed``:
        the report's wider version."""
        raise NotImplementedError

    # ------------------------------------------------------------------ worker side

    def build_core(self, spec: StageSpec) -> nn.Module:
        """The stage's trainable module: ``.student`` (the model whose weights are kept),
        ``.teacher`` (a frozen copy or None), ``set_epoch``, ``temperature`` and ``alpha``."""
        raise NotImplementedError

    def train_batches(
        self, shard: Any, spec: StageSpec, epoch: int, rank: int, seed: int
    ) -> Iterator[Any]:
        raise NotImplementedError

    def step(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, batch: Any, ctx: LoopContext
    ) -> StepOutput:
        raise NotImplementedError

    def validate(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, shard: Any, ctx: LoopContext
    ) -> dict[str, float]:
        """Validation metrics over every worker's shard (the same values on each)."""
        raise NotImplementedError

    def epoch_line(self, spec: StageSpec, metrics: dict[str, Any]) -> str:
        """The task's part of the per-epoch progress line."""
        raise NotImplementedError


def batch_rows(values: np.ndarray | Tensor | list[Any], most: int = 8) -> str:
    """The first ``most`` ids of a batch, for error messages."""
    listed = [int(v) for v in values[:most]]
    return f"{listed}{'...' if len(values) > most else ''}"

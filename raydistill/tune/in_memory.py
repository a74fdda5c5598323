"""Temperature search over models and tensors held in memory, with no job file.

The classic convenience for a notebook: a trained teacher, a student and tensors. The teacher
labels train and val ONCE on the driver; its logits travel to every trial through Ray's object
store, and each trial (a Ray Tune function trainable) trains its own copy of the student with
:class:`~raydistill.distill.distiller.Distiller` in plain PyTorch, reporting every epoch so
that ASHA can stop poor trials. For distributed trials over a data pipeline, use a job
(``TemperatureSearch("jobs/x.yaml")``, ``raydistill tune``).
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from raydistill.columns import INPUT, LABEL, TEACHER_LOGITS
from raydistill.config import job_from_dict
from raydistill.distill.distiller import Distiller, as_logits
from raydistill.files import atomic_write_text
from raydistill.rundir import RESULTS_MD
from raydistill.tasks.classification import ClassificationTask
from raydistill.train.context import LocalShard
from raydistill.train.loop import run_epochs
from raydistill.train.spec import StageSpec
from raydistill.tune.local import TuneTrialContext
from raydistill.tune.results import TrialRow, ranked, reported_rows, results_markdown
from raydistill.tune.schedulers import build_scheduler

Pair = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class InMemorySettings:
    """What an in-memory search may set (keywords of ``TemperatureSearch``)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-3
    max_concurrent_trials: int = 2
    cpus_per_trial: float = 1.0
    scheduler: str = "asha"
    grace_period: int = 2
    reduction_factor: float = 2.0
    metric: str = "val_acc"
    mode: str = "max"
    seed: int = 0
    storage_path: str = "runs"
    name: str = "temperature-search"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.max_concurrent_trials < 1:
            raise ValueError("epochs, batch_size and max_concurrent_trials must be >= 1")
        if not self.lr > 0 or not self.cpus_per_trial > 0:
            raise ValueError("lr and cpus_per_trial must be > 0")
        if self.scheduler not in ("asha", "fifo"):
            raise ValueError(f"scheduler: asha or fifo, got {self.scheduler!r}")
        if self.metric not in ("val_acc", "val_loss", "val_ce") or self.mode not in ("max", "min"):
            raise ValueError("metric: val_acc, val_loss or val_ce; mode: max or min")


def settings_from(keywords: dict[str, Any]) -> InMemorySettings:
    """The keywords as settings; an unknown one is named with the known ones."""
    known = set(InMemorySettings.__dataclass_fields__)
    unknown = sorted(set(keywords) - known)
    if unknown:
        raise ValueError(
            f"unknown setting(s) {', '.join(unknown)} for a search over models in memory "
            f"(known: {', '.join(sorted(known))})"
        )
    return InMemorySettings(**keywords)


def check_pair(pair: Any, what: str) -> Pair:
    """``(inputs [N, ...], labels [N] int64)`` as tensors of one length."""
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ValueError(f"{what}: give (inputs, labels), got {type(pair).__name__}")
    inputs, labels = (torch.as_tensor(t) for t in pair)
    if len(inputs) != len(labels) or len(inputs) == 0:
        raise ValueError(
            f"{what}: inputs and labels need one non-zero length, got {len(inputs)} and "
            f"{len(labels)}"
        )
    if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise ValueError(f"{what}: labels must be class ids (integers), got {labels.dtype}")
    return inputs.float() if inputs.is_floating_point() else inputs, labels.long()


@torch.no_grad()
def label_once(teacher: nn.Module, inputs: Tensor, batch_size: int) -> Tensor:
    """The teacher's logits [N, C] for ``inputs``: the one teacher pass of the search."""
    teacher.eval()
    out = [
        as_logits(teacher(inputs[i : i + batch_size])) for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(out).float()


class InMemoryTask(ClassificationTask):
    """Classification whose student is a module held in memory (each trial trains a deep
    copy of it), not a model spec."""

    def __init__(self, student: nn.Module) -> None:
        self.student = student

    def build_core(self, spec: StageSpec) -> Distiller:
        return Distiller.from_config(
            spec.job.distill, copy.deepcopy(self.student), total_epochs=spec.train.epochs
        )


def trial_spec(config: dict[str, Any], settings: InMemorySettings, num_classes: int) -> StageSpec:
    """The stage one trial runs: the settings as a job whose models live in memory."""
    job = job_from_dict(
        {
            "name": settings.name,
            "seed": settings.seed,
            "teacher": {"model": "memory:teacher"},
            "student": {"model": "memory:student"},
            "data": {"shuffle_buffer": 1},
            "distill": {"temperature": config["temperature"], "alpha": config["alpha"]},
            "train": {
                "epochs": settings.epochs,
                "batch_size": settings.batch_size,
                "lr": settings.lr,
                "optimizer": "adamw",
            },
        },
        "in-memory search",
    )
    return StageSpec(
        role="student",
        job=job,
        model=job.student,
        train=job.train,
        num_classes=num_classes,
        distill=True,
    )


def train_trial(
    config: dict[str, Any],
    *,
    student: nn.Module,
    train: Pair,
    val: Pair,
    teacher_logits: Pair,
    settings: InMemorySettings,
) -> None:
    """One trial (a Tune function trainable): ``config`` holds ``temperature`` and ``alpha``;
    ``teacher_logits`` are the teacher's logits for train and val, made once. It runs the
    shared epoch loop in this process, reporting every epoch to Tune."""
    num_classes = int(teacher_logits[0].shape[1])
    spec = trial_spec(config, settings, num_classes)

    def rows(pair: Pair, logits: Tensor) -> LocalShard:
        inputs, labels = pair
        return LocalShard(
            {INPUT: inputs.numpy(), LABEL: labels.numpy(), TEACHER_LOGITS: logits.numpy()}
        )

    ctx = TuneTrialContext(
        {"train": rows(train, teacher_logits[0]), "val": rows(val, teacher_logits[1])},
        quiet=True,
    )
    run_epochs(InMemoryTask(student), spec, ctx)
    ctx.flush_report()


@dataclass
class InMemoryResult:
    """The trials of an in-memory search and its cost."""

    tune_dir: Path
    rows: list[TrialRow]
    best: TrialRow
    teacher_forward_passes: int
    seconds: float
    metric: str
    mode: str

    def table(self) -> str:
        """The results as Markdown, best first."""
        return results_markdown(self.rows, self.metric, self.mode)


def search_in_memory(
    teacher: nn.Module,
    student: nn.Module,
    train: Any,
    val: Any,
    space: dict[str, Any],
    trials: int,
    settings: InMemorySettings,
    log: Any = print,
) -> InMemoryResult:
    """Run ``trials`` trials of ``space`` (``temperature`` and ``alpha`` as Ray Tune domains)."""
    import ray
    from ray import tune
    from ray.tune.search.basic_variant import BasicVariantGenerator

    train, val = check_pair(train, "train"), check_pair(val, "val")
    started = time.perf_counter()
    logits = (
        label_once(teacher, train[0], settings.batch_size),
        label_once(teacher, val[0], settings.batch_size),
    )
    passes = len(train[0]) + len(val[0])
    log(f"[tune] the teacher labelled {passes} samples once; {trials} trial(s) share them")
    started_ray = not ray.is_initialized()
    if started_ray:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        cpus = math.ceil(settings.max_concurrent_trials * settings.cpus_per_trial + 1)
        ray.init(num_cpus=max(os.cpu_count() or 1, cpus), include_dashboard=False)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(
                train_trial,
                student=student,
                train=train,
                val=val,
                teacher_logits=logits,
                settings=settings,
            ),
            {"CPU": settings.cpus_per_trial},
        )
        storage = Path(settings.storage_path).expanduser().resolve()
        grid = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric=settings.metric,
                mode=settings.mode,
                num_samples=trials,
                scheduler=build_scheduler(settings, settings.epochs),
                search_alg=BasicVariantGenerator(
                    random_state=settings.seed, max_concurrent=settings.max_concurrent_trials
                ),
            ),
            run_config=tune.RunConfig(
                name=f"{settings.name}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=str(storage),
                verbose=0,
            ),
        ).fit()
    finally:
        if started_ray:
            ray.shutdown()
    rows = reported_rows(grid, settings.metric, settings.mode, settings.epochs)
    result = InMemoryResult(
        tune_dir=Path(grid.experiment_path),
        rows=rows,
        best=ranked(rows, settings.mode)[0],
        teacher_forward_passes=passes,
        seconds=time.perf_counter() - started,
        metric=settings.metric,
        mode=settings.mode,
    )
    atomic_write_text(result.tune_dir / RESULTS_MD, result.table() + "\n")
    return result

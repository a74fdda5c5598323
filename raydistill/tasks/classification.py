"""Classification: images, tensors or text rows with one class label each.

Rows are ``input`` (float32 [*shape] or packed tokens int64 [2, L]), ``label`` and ``row_id``;
a distilled stage's rows also carry the teacher's logits (and tapped features). The objective
is :class:`~raydistill.distill.distiller.Distiller`'s (hard CE, soft KD/DKD, feature terms);
the figure of merit is accuracy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from raydistill.columns import INPUT, LABEL, LABELLED, ROW_ID, TEACHER_INPUT, feature_column
from raydistill.config import JobConfig, JobError, ModelSpec
from raydistill.data.arrays import LabelledArrays, model_tensor
from raydistill.data.balance import ClassBalancer, balance_rng
from raydistill.data.keys import labelled_mask
from raydistill.data.sources import (
    labelled_part,
    labelled_rows,
    load_splits,
    training_datasets,
)
from raydistill.data.stream import StreamedSplit, describe_streamed
from raydistill.data.text import for_model
from raydistill.distill.distiller import Distiller
from raydistill.distill.taps import feature_shapes
from raydistill.evaluate import THROUGHPUT_BATCH, ModelScore, latency_ms, score, throughput
from raydistill.models.hf import check_tokenizer_fits
from raydistill.models.specs import build_model, load_weights
from raydistill.tasks.base import Log, Shapes, Splits, StepOutput, SummaryTable, Task, batch_rows
from raydistill.tasks.summary import STAGE_NAMES, comparison_notes, epochs_cell, human_bytes, ratio

if TYPE_CHECKING:
    from raydistill.train.context import LoopContext
    from raydistill.train.spec import StageSpec


class ClassificationTask(Task):
    """Images, tensors and text (``data.text``): accuracy is the figure of merit."""

    name: ClassVar[str] = "classification"
    loss_parts: ClassVar[tuple[str, ...]] = ("loss", "soft", "hard", "feature")
    counts: ClassVar[bool] = True
    labelled_share: ClassVar[bool] = True
    curves: ClassVar[tuple[tuple[str, str | None, str | None], ...]] = (
        ("objective", "train_loss", "val_loss"),
        ("cross entropy with labels", "train_hard", "val_ce"),
        ("validation accuracy", None, "val_acc"),
    )

    # ------------------------------------------------------------------ driver side

    def read_splits(self, job: JobConfig, log: Log = print) -> Splits:
        return load_splits(job.data)

    def describe_data(self, job: JobConfig, splits: Splits) -> str:
        if isinstance(splits["train"], StreamedSplit):
            line = f"data: {job.data.source}: {describe_streamed(splits)}"
        else:
            sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
            line = f"data: {job.data.source}: {sizes} rows, {self.num_classes(splits)} classes"
        share = job.data.labelled_fraction
        if share is None:
            return line
        known = labelled_rows(splits["train"], share, job.data.split.seed)
        count = f"{known} train rows" if known is not None else f"~{share:.0%} of train rows"
        return (
            f"{line}; the student sees labels on {count} (data.labelled_fraction {share:g}), "
            "the teacher on all"
        )

    def split_fingerprint(self, split: Any) -> str:
        return split.fingerprint()

    def balancer(self, job: JobConfig, splits: Splits, log: Log = print) -> ClassBalancer | None:
        return make_balancer(job, splits["train"], log)

    def check_student(self, job: JobConfig, splits: Splits) -> None:
        build_model(job.student, self.num_classes(splits))

    def check_pair(
        self, job: JobConfig, teacher_weights: Path | None, splits: Splits, log: Log = print
    ) -> Shapes:
        """One dry forward of teacher and student on the first training row (each as it reads
        it: text rows through its own tokenizer): outputs must match; feature shapes size the
        adapters."""
        train = splits["train"]
        num_classes = train.num_classes
        teacher = build_model(job.teacher, num_classes, load=False)
        if teacher_weights is not None:
            load_weights(teacher, teacher_weights, what="the teacher")
        student = build_model(job.student, num_classes)
        for side, model in (("teacher", teacher), ("student", student)):
            tokenizer = getattr(job, side).text_tokenizer
            if tokenizer is not None:
                check_tokenizer_fits(model, tokenizer, side)
        first = train.head(1)
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

    def datasets(
        self, job: JobConfig, splits: Splits, model: ModelSpec, distill: bool
    ) -> dict[str, Any]:
        return training_datasets(job, splits, model, distill=distill)

    def labelled_only(self, job: JobConfig, datasets: dict[str, Any]) -> dict[str, Any]:
        share = job.data.labelled_fraction
        assert share is not None
        return labelled_part(datasets, share, job.data.split.seed)

    def score(
        self, job: JobConfig, name: str, model: nn.Module, spec: ModelSpec, split: Any
    ) -> ModelScore:
        return score(name, model, (for_model(job, spec, b) for b in split.iter_arrays()))

    def speed(
        self, job: JobConfig, model: nn.Module, spec: ModelSpec, split: Any
    ) -> tuple[float, float, int]:
        inputs = for_model(job, spec, split.head(THROUGHPUT_BATCH)).inputs
        return latency_ms(model, inputs[0]), throughput(model, inputs), THROUGHPUT_BATCH

    def example_inputs(self, job: JobConfig, spec: ModelSpec, split: Any, rows: int) -> Any:
        return for_model(job, spec, split.head(rows)).inputs

    @torch.no_grad()
    def output_difference(self, model: nn.Module, loaded: nn.Module, inputs: Any) -> float:
        x = model_tensor(inputs)
        return float((loaded.eval()(x) - model.eval()(x)).abs().max())

    def table(
        self, scores: list[Any], epochs: dict[str, int], detailed: bool = False
    ) -> SummaryTable:
        notes = comparison_notes(scores, "points", digits=2, per="sample")
        if detailed:
            return _detailed_table(scores, epochs, notes)
        rows = [
            [
                s.name,
                f"{100 * s.accuracy:.2f}%",
                f"{s.parameters:,}",
                f"{s.latency_ms:.3f} ms",
                epochs_cell(epochs, s.name),
            ]
            for s in scores
        ]
        return SummaryTable(
            ["model", "test accuracy", "parameters", "latency / sample (CPU, batch 1)", "epochs"],
            rows,
            notes=notes,
        )

    # ------------------------------------------------------------------ worker side

    def build_core(self, spec: StageSpec) -> Distiller:
        """Student plus adapters sized from the driver's shapes; a frozen teacher copy when the
        workers compute the teacher's features themselves."""
        distiller = Distiller.from_config(
            spec.job.distill,
            build_model(spec.model, spec.num_classes),
            self._worker_teacher(spec),
            total_epochs=spec.train.epochs,
            feature_layers=spec.feature_pairs or None,
        )
        if spec.feature_pairs:
            distiller.build_adapters(
                student_shapes=spec.student_shapes, teacher_shapes=spec.teacher_shapes
            )
        return distiller

    def _worker_teacher(self, spec: StageSpec) -> nn.Module | None:
        if not (spec.feature_pairs and spec.job.distill.features_from == "worker"):
            return None
        assert spec.teacher_weights is not None
        teacher = build_model(spec.job.teacher, spec.num_classes, load=False)
        return load_weights(teacher, Path(spec.teacher_weights), what="the teacher")

    def train_batches(
        self, shard: Any, spec: StageSpec, epoch: int, rank: int, seed: int
    ) -> Iterator[dict[str, torch.Tensor]]:
        _hold_labelled(shard, spec)
        for step, raw in enumerate(_batches(shard, spec, seed)):
            yield _rows_for_epoch(raw, spec, epoch, rank, step)

    def step(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, batch: Any, ctx: LoopContext
    ) -> StepOutput:
        labels = batch[LABEL]
        logits, feats = module(batch[INPUT])
        t_logits, t_feats = _teacher_side(spec, core, batch)
        out = core.loss(
            logits, labels, t_logits, feats if t_feats else None, t_feats, _labelled(spec, batch)
        )
        ids = batch.get(ROW_ID)
        return StepOutput(
            total=out.total,
            parts=out.as_floats(),
            n=len(labels),
            # formatted only for a non-finite loss: every step pays for it otherwise
            where=lambda: f"batch rows {batch_rows(ids) if ids is not None else '?'}",
            counts=torch.bincount(labels.cpu(), minlength=spec.num_classes),
        )

    def validate(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, shard: Any, ctx: LoopContext
    ) -> dict[str, float]:
        """Objective, cross entropy with the labels and accuracy, summed over every worker."""
        module.eval()
        sums = torch.zeros(4, dtype=torch.float64)  # loss*n, ce*n, correct, n
        with torch.no_grad():
            for batch in _batches(shard, spec, None):
                logits, feats = module(batch[INPUT])
                t_logits, t_feats = _teacher_side(spec, core, batch)
                out = core.loss(logits, batch[LABEL], t_logits, feats if t_feats else None, t_feats)
                n = len(batch[LABEL])
                sums += torch.tensor(
                    [
                        out.total.item() * n,
                        out.hard.item() * n,
                        (logits.argmax(-1) == batch[LABEL]).sum().item(),
                        n,
                    ],
                    dtype=torch.float64,
                )
        loss, ce, correct, n = ctx.all_sum(sums).tolist()
        n = max(n, 1.0)
        return {"val_loss": loss / n, "val_ce": ce / n, "val_acc": correct / n}

    def epoch_line(self, spec: StageSpec, m: dict[str, Any]) -> str:
        kd = f" T={m['temperature']:.2f} alpha={m['alpha']:.2f}" if spec.distill else ""
        return f"val_loss {m['val_loss']:.4f} val_acc {m['val_acc']:.4f}{kd}"


def _teacher_side(
    spec: StageSpec, core: Distiller, batch: dict[str, torch.Tensor]
) -> tuple[torch.Tensor | None, dict[str, torch.Tensor] | None]:
    """Teacher logits from the row; features from the row or the worker's frozen teacher."""
    if not spec.distill:
        return None, None
    logits = spec.codec.decode(batch, spec.num_classes).to(batch[LABEL].device)
    if not spec.feature_pairs:
        return logits, None
    if core.teacher is not None:
        return logits, core.teacher_outputs(batch.get(TEACHER_INPUT, batch[INPUT]))[1]
    return logits, {t: batch[feature_column(t)].float() for _, t in spec.feature_pairs}


def _labelled(spec: StageSpec, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """bool [N]: the batch's rows whose labels a student stage learns from
    (``data.labelled_fraction``); None when every row's label counts (and for the teacher)."""
    share = spec.job.data.labelled_fraction
    if share is None or spec.role == "teacher":
        return None
    held = batch.get(LABELLED)
    if held is not None:  # computed once for the rows a worker holds (_hold_labelled)
        return held.to(batch[LABEL].device)
    mask = labelled_mask(batch[ROW_ID].cpu().numpy(), share, spec.job.data.split.seed)
    return torch.from_numpy(mask).to(batch[LABEL].device)


def _hold_labelled(shard: Any, spec: StageSpec) -> None:
    """A student stage's rows held in memory get their labelled mask once per stage, as a
    column (:meth:`~raydistill.train.shards.InMemoryShard.derive`), instead of hashing every
    batch's row ids at every step; a streamed shard's batches are hashed as they come."""
    share = spec.job.data.labelled_fraction
    derive = getattr(shard, "derive", None)
    if share is None or spec.role == "teacher" or derive is None:
        return
    seed = spec.job.data.split.seed
    derive(LABELLED, (share, seed), lambda rows: labelled_mask(rows[ROW_ID], share, seed))


def _batches(shard: Any, spec: StageSpec, seed: int | None) -> Any:
    shuffle = spec.job.data.shuffle_buffer if seed is not None else 0
    return shard.iter_torch_batches(
        batch_size=spec.train.batch_size,
        local_shuffle_buffer_size=shuffle or None,
        local_shuffle_seed=seed if shuffle else None,
    )


def _rows_for_epoch(
    batch: dict[str, torch.Tensor], spec: StageSpec, epoch: int, rank: int, step: int
) -> dict[str, torch.Tensor]:
    """The batch resampled by the class balancer (as it came without one)."""
    if spec.balancer is None:
        return batch
    rng = balance_rng(spec.job.seed, epoch, rank, step)
    # a draw is used even when it has as many rows as the batch: those are other rows (repeats
    # of rare classes in place of dropped frequent ones), not the batch as it came
    index = spec.balancer.select(batch[LABEL].cpu().numpy(), rng)
    if len(index) == 0:  # every rank must step each time, or DDP's all-reduce hangs
        index = np.zeros(1, dtype=np.int64)
    picked = torch.from_numpy(index).to(batch[LABEL].device)
    return {k: v[picked] for k, v in batch.items()}


def make_balancer(job: JobConfig, train: LabelledArrays, log: Log = print) -> ClassBalancer | None:
    """The job's class balancer, from counts given in the job or counted once here."""
    cfg = job.data.balance
    if cfg is None:
        return None
    counts = np.asarray(cfg.counts) if cfg.counts is not None else train.class_counts()
    if len(counts) != train.num_classes:
        raise JobError(f"data.balance.counts: {len(counts)} counts for {train.num_classes} classes")
    balancer = ClassBalancer.from_counts(counts, cfg.keep_ratio, cfg.repeat_rare, cfg.target)
    expected = balancer.expected_counts(counts)
    log(
        f"[balance] class counts {counts.tolist()} -> expected per epoch "
        f"{[round(x) for x in expected.tolist()]} (target {balancer.target:.0f})"
    )
    return balancer


def _detailed_table(
    scores: list[ModelScore], epochs: dict[str, int], notes: list[str]
) -> SummaryTable:
    """The report's table: accuracy, points vs the teacher, parameters, size on disk, latency at
    batch 1, throughput at batch 64, and the speedups over the teacher."""
    teacher = next((s for s in scores if s.name == STAGE_NAMES["teacher"]), None)
    rows = [
        [
            s.name,
            f"{100 * s.accuracy:.2f}%",
            f"{100 * (s.accuracy - teacher.accuracy):+.2f}" if teacher else "-",
            f"{s.parameters:,}",
            human_bytes(s.size_bytes),
            f"{s.latency_ms:.3f} ms",
            f"{s.throughput:,.0f}/s",
            ratio(teacher.latency_ms / s.latency_ms) if teacher else "-",
            ratio(s.throughput / teacher.throughput) if teacher else "-",
            epochs_cell(epochs, s.name),
        ]
        for s in scores
    ]
    header = [
        "model",
        "test accuracy",
        "vs teacher (points)",
        "parameters",
        "size on disk",
        "latency / sample (batch 1)",
        f"throughput (batch {THROUGHPUT_BATCH})",
        "speedup (batch 1)",
        f"speedup (batch {THROUGHPUT_BATCH})",
        "epochs",
    ]
    names = {s.name: s for s in scores}
    student = names.get(STAGE_NAMES["student"])
    if teacher and student and student.size_bytes:
        notes = [
            *notes,
            f"student on disk: {human_bytes(student.size_bytes)}, "
            f"{teacher.size_bytes / student.size_bytes:.1f}x smaller than the teacher; "
            f"{student.throughput / teacher.throughput:.1f}x the teacher's throughput at batch "
            f"{THROUGHPUT_BATCH}",
        ]
    caption = (
        "Accuracy on the job's test split. Size: the weights as a file. Latency: median of one "
        f"sample; throughput: batches of {THROUGHPUT_BATCH}; both on one CPU thread of the "
        "machine that wrote this report. Speedups are over the teacher."
    )
    return SummaryTable(header, rows, caption, notes)

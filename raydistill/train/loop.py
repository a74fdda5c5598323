"""The Ray Train loop run by every worker: DDP student (+ adapters), Distiller loss, checkpoints."""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from raydistill.data.balance import balance_rng
from raydistill.data.sources import INPUT, LABEL, ROW_ID, view_dataset_name
from raydistill.data.text import TEACHER_INPUT
from raydistill.distill.cross_modal import CrossModalDistiller
from raydistill.distill.distiller import Distiller
from raydistill.models.specs import build_model, load_weights
from raydistill.teacher.pool import feature_column
from raydistill.train.optim import BestTracker, build_lr_scheduler, build_optimizer, rebase_lr
from raydistill.train.spec import StageSpec
from raydistill.train.state import report_epoch, restore

PROGRESS_EVERY_S = 30.0  # inside an epoch, a progress line at most this often (seconds)


class StepProgress:
    """Plain progress lines inside long epochs, for terminals and CI logs alike.

    Short epochs print nothing here (the per-epoch line says it all); an epoch running longer
    than ``every_s`` seconds gets a line every ``every_s`` with the step, the samples this
    worker has trained on, its samples/s and, from the second epoch on, the epoch's ETA (the
    previous epoch's sample count at the current rate).
    """

    def __init__(self, name: str, total_epochs: int, every_s: float = PROGRESS_EVERY_S) -> None:
        self.name, self.total_epochs, self.every_s = name, total_epochs, every_s
        self.previous_samples: int | None = None
        self.epoch, self.started, self.last, self.samples = 0, 0.0, 0.0, 0

    def start(self, epoch: int, now: float) -> None:
        self.epoch, self.started, self.last, self.samples = epoch, now, now, 0

    def update(self, step: int, samples: int, now: float, schedule: str = "") -> str | None:
        """Count a step's ``samples``; the line to print when one is due (``now`` in seconds,
        ``schedule`` e.g. ``" T=4.00 alpha=0.90"``)."""
        self.samples += samples
        if now - self.last < self.every_s:
            return None
        self.last = now
        rate = self.samples / max(now - self.started, 1e-9)
        eta = ""
        if self.previous_samples:
            left = max(self.previous_samples - self.samples, 0)
            eta = f", epoch eta {math.ceil(left / rate)}s"
        return (
            f"[{self.name}] epoch {self.epoch + 1}/{self.total_epochs} step {step + 1}: "
            f"{self.samples} samples, {rate:.0f} samples/s (worker 0){schedule}{eta}"
        )

    def finish(self) -> None:
        self.previous_samples = self.samples


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, step and batch rows."""


def build_distiller(spec: StageSpec) -> Distiller:
    """The trainable module of a stage: its model plus adapters sized from the driver's shapes."""
    d = spec.job.distill
    teacher = None
    if spec.feature_pairs and d.features_from == "worker":
        assert spec.teacher_weights is not None
        teacher = build_model(spec.job.teacher, spec.num_classes, load=False)
        load_weights(teacher, Path(spec.teacher_weights), what="the teacher")
    student = build_model(spec.model, spec.num_classes)
    common: dict[str, Any] = {
        "temperature": d.temperature,
        "alpha": d.alpha,
        "feature_weight": d.feature_weight,
        "feature_grad_scale": d.feature_grad_scale,
        "weighting": d.weighting,
        "total_epochs": spec.train.epochs,
        "method": d.method,
        "dkd_alpha": d.dkd.alpha,
        "dkd_beta": d.dkd.beta,
        "feature_loss": d.feature_loss,
    }
    distiller: Distiller
    if spec.job.task == "cross_modal" and spec.feature_pairs:
        distiller = CrossModalDistiller(
            teacher,
            student,
            d.modal_mapping or "linear",
            feature_layers=spec.feature_pairs,
            **common,
        )
    else:
        distiller = Distiller(
            student,
            teacher,
            feature_layers=spec.feature_pairs or None,
            attention_p=d.attention_p,
            **common,
        )
    if spec.feature_pairs:
        distiller.build_adapters(
            student_shapes=spec.student_shapes, teacher_shapes=spec.teacher_shapes
        )
    return distiller


def _all_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


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


def _batches(shard: Any, spec: StageSpec, seed: int | None) -> Any:
    shuffle = spec.job.data.shuffle_buffer if seed is not None else 0
    return shard.iter_torch_batches(
        batch_size=spec.train.batch_size,
        local_shuffle_buffer_size=shuffle or None,
        local_shuffle_seed=seed if shuffle else None,
    )


def _train_dataset_name(spec: StageSpec, epoch: int) -> str:
    """An augmented job trains epoch ``e`` on view ``e % views`` (its own dataset)."""
    augment = spec.job.data.augment
    return "train" if augment is None else view_dataset_name(epoch % augment.views)


def _rows_for_epoch(
    batch: dict[str, torch.Tensor], spec: StageSpec, epoch: int, rank: int, step: int
) -> dict[str, torch.Tensor]:
    """The batch resampled by the class balancer (as it came without one)."""
    index = np.arange(len(batch[LABEL]))
    if spec.balancer is not None:
        rng = balance_rng(spec.job.seed, epoch, rank, step)
        index = index[spec.balancer.select(batch[LABEL].cpu().numpy()[index], rng)]
    if len(index) == len(batch[LABEL]):
        return batch
    if len(index) == 0:  # every rank must step each time, or DDP's all-reduce hangs
        index = np.zeros(1, dtype=np.int64)
    picked = torch.from_numpy(index).to(batch[LABEL].device)
    return {k: v[picked] for k, v in batch.items()}


def _validate(module: torch.nn.Module, core: Distiller, spec: StageSpec, shard: Any) -> dict:
    """Validation metrics summed over every worker's shard."""
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
    loss, ce, correct, n = _all_sum(sums).tolist()
    n = max(n, 1.0)
    return {"val_loss": loss / n, "val_ce": ce / n, "val_acc": correct / n}


def _say(message: str) -> None:
    """One line to the worker's stdout, which Ray forwards to the driver. Train V2 patches
    ``print`` to tee into its logger as well, which shows every line twice; writing to the
    original stream avoids the patch."""
    sys.__stdout__.write(message + "\n")
    sys.__stdout__.flush()


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report and checkpoint at INFO (one logger is named after its file);
    the loop prints its own line per epoch instead."""
    from ray.train.v2._internal.execution import context, storage

    for name in ("ray.train", storage.__name__, context.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point handed to ``TorchTrainer``; ``config['spec']`` is a :class:`StageSpec`."""
    import ray.train
    import ray.train.torch

    spec: StageSpec = config["spec"]
    train = spec.train
    _quiet_ray_train_reports()
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(spec.job.seed)

    core = build_distiller(spec)
    module = ray.train.torch.prepare_model(core)
    if core.teacher is not None:  # not a submodule, so prepare_model did not move it
        core.teacher.to(ray.train.torch.get_device())
    optimizer = build_optimizer(train, module.parameters())
    scheduler = build_lr_scheduler(train, optimizer)
    resumed = restore(config, core, optimizer, scheduler)
    rebase_lr(optimizer, scheduler, train.lr)
    tracker = (
        BestTracker(**resumed.tracker)
        if resumed.tracker
        else BestTracker.for_train(train.early_stopping)
    )
    history, best_student, start_epoch = resumed.history, resumed.best_student, resumed.start_epoch
    if start_epoch and rank == 0:
        _say(f"[{spec.name}] resumed from the checkpoint of epoch {start_epoch}")

    val_shard = ray.train.get_dataset_shard("val")
    stopped_early = False
    progress = StepProgress(spec.name, train.epochs)
    for epoch in range(start_epoch, train.epochs):
        if stopped_early:
            break
        core.set_epoch(epoch)
        module.train()
        started = time.perf_counter()
        sums = torch.zeros(5, dtype=torch.float64)  # loss, soft, hard, feature (x n), n
        seed = spec.job.seed * 1_000_003 + epoch * 101 + rank
        class_counts = torch.zeros(spec.num_classes, dtype=torch.float64)
        progress.start(epoch, started)
        schedule = f" T={core.temperature:.2f} alpha={core.alpha:.2f}" if spec.distill else ""
        train_shard = ray.train.get_dataset_shard(_train_dataset_name(spec, epoch))
        for step, raw in enumerate(_batches(train_shard, spec, seed)):
            batch = _rows_for_epoch(raw, spec, epoch, rank, step)
            class_counts += torch.bincount(batch[LABEL].cpu(), minlength=spec.num_classes)
            logits, feats = module(batch[INPUT])
            t_logits, t_feats = _teacher_side(spec, core, batch)
            out = core.loss(logits, batch[LABEL], t_logits, feats if t_feats else None, t_feats)
            if not torch.isfinite(out.total):
                rows = batch[ROW_ID][:8].tolist() if ROW_ID in batch else "?"
                raise NonFiniteLossError(
                    f"[{spec.role}] loss is {out.total.item()} at epoch {epoch} step {step} "
                    f"(worker {rank}, batch rows {rows}...): lower train.lr, set "
                    "train.grad_clip, or check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            if train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), train.grad_clip)
            optimizer.step()
            n = len(batch[LABEL])
            parts = out.as_floats()
            sums += torch.tensor(
                [parts["loss"] * n, parts["soft"] * n, parts["hard"] * n, parts["feature"] * n, n],
                dtype=torch.float64,
            )
            line = progress.update(step, n, time.perf_counter(), schedule)
            if line is not None and rank == 0:
                _say(line)
        progress.finish()
        totals = _all_sum(sums).tolist()
        counts = [int(c) for c in _all_sum(class_counts).tolist()]
        n = max(totals[4], 1.0)
        elapsed = time.perf_counter() - started
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": totals[0] / n,
            "train_soft": totals[1] / n,
            "train_hard": totals[2] / n,
            "train_feature": totals[3] / n,
            "temperature": core.temperature,
            "alpha": core.alpha if spec.distill else 0.0,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": n / elapsed,
            "epoch_s": elapsed,
            "workers": ctx.get_world_size(),  # changes when elastic training resizes
            # > 0: this worker group resumed from a checkpoint (a restart after a failure, or
            # a rerun after the driver was killed)
            "started_at_epoch": start_epoch,
            "class_counts": counts,
        }
        metrics.update(_validate(module, core, spec, val_shard))
        scheduler.step()
        if tracker.update(epoch, metrics) or best_student is None:
            best_student = copy.deepcopy(
                {k: v.detach().cpu() for k, v in core.student.state_dict().items()}
            )
        stopped_early = tracker.should_stop and epoch + 1 < train.epochs
        metrics["best_epoch"] = tracker.best_epoch
        metrics["stopped_early"] = float(stopped_early)
        history.append(metrics)

        report_epoch(
            rank,
            metrics,
            epoch=epoch,
            core=core,
            optimizer=optimizer,
            scheduler=scheduler,
            tracker=tracker,
            history=history,
            best_student=best_student,
        )
        if rank == 0:
            _print_progress(spec, metrics, elapsed)
        if stopped_early and rank == 0:
            _say(
                f"[{spec.name}] early stop at epoch {epoch + 1}: {tracker.monitor} has not "
                f"improved for {tracker.bad_epochs} epochs (best {tracker.best:.4f} at epoch "
                f"{tracker.best_epoch + 1})"
            )


def _print_progress(spec: StageSpec, m: dict[str, float], elapsed: float) -> None:
    epoch, total = int(m["epoch"]) + 1, spec.train.epochs
    eta = elapsed * (total - epoch)
    kd = f" T={m['temperature']:.2f} alpha={m['alpha']:.2f}" if spec.distill else ""
    _say(
        f"[{spec.name}] epoch {epoch}/{total} loss {m['train_loss']:.4f} "
        f"val_loss {m['val_loss']:.4f} val_acc {m['val_acc']:.4f}{kd} lr {m['lr']:.2e} "
        f"{m['samples_per_s']:.0f} samples/s eta {math.ceil(eta)}s"
    )

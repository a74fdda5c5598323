"""The one epoch loop of every stage and every task.

It owns what does not depend on the task: resume, the optimizer and LR schedule (rebased to the
job's ``train.lr``), gradient clipping, the NaN guard, per-epoch sums across workers, keep-best
and early stopping, reporting and checkpoints. The task (:mod:`raydistill.tasks`) supplies the
trainable module, its batches, one step and the validation metrics; the context
(:mod:`raydistill.train.context`) says where the loop runs (a Ray Train worker, or in-process).
"""

from __future__ import annotations

import copy
import logging
import time
from typing import Any

import torch

from raydistill.precision import autocast
from raydistill.progress import Throttle, eta_text, rate_text
from raydistill.tasks import get_task
from raydistill.tasks.base import Task
from raydistill.train.bound import WaitTimer, boundness
from raydistill.train.context import LoopContext, RayTrainContext, Startup
from raydistill.train.optim import (
    BestTracker,
    build_lr_scheduler,
    build_optimizer,
    rebase_lr,
    retarget_schedule,
)
from raydistill.train.spec import StageSpec
from raydistill.train.state import epoch_state, rng_snapshot


class StepProgress:
    """Plain progress lines inside long epochs, for terminals and CI logs alike.

    Short epochs print nothing here (the per-epoch line says it all); an epoch running longer
    than ``every_s`` seconds (default :data:`~raydistill.progress.PROGRESS_EVERY_S`) gets a
    line every ``every_s`` with the step, the samples this worker has trained on, its
    samples/s and, from the second epoch on, the epoch's ETA (the previous epoch's sample count
    at the current rate).
    """

    def __init__(self, name: str, total_epochs: int, every_s: float | None = None) -> None:
        self.name, self.total_epochs = name, total_epochs
        self.throttle = Throttle(every_s)
        self.previous_samples: int | None = None
        self.epoch, self.started, self.samples = 0, 0.0, 0

    def start(self, epoch: int, now: float) -> None:
        self.epoch, self.started, self.samples = epoch, now, 0
        self.throttle.start(now)

    def update(self, step: int, samples: int, now: float, schedule: str = "") -> str | None:
        """Count a step's ``samples``; the line to print when one is due (``now`` in seconds,
        ``schedule`` e.g. ``" T=4.00 alpha=0.90"``)."""
        self.samples += samples
        if not self.throttle.due(now):
            return None
        elapsed = now - self.started
        eta = ""
        if self.previous_samples:
            left = max(self.previous_samples - self.samples, 0)
            eta = f", epoch {eta_text(left * elapsed / max(self.samples, 1))}"
        return (
            f"[{self.name}] epoch {self.epoch + 1}/{self.total_epochs} step {step + 1}: "
            f"{self.samples} samples, {rate_text(self.samples, elapsed, 'samples')} "
            f"(worker 0){schedule}{eta}"
        )

    def finish(self) -> None:
        self.previous_samples = self.samples


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names the epoch, step and batch rows."""


def _quiet_ray_train_reports() -> None:
    """Ray Train logs every report and checkpoint at INFO (one logger is named after its file);
    the loop prints its own line per epoch instead."""
    from ray.train.v2._internal.execution import context, storage

    for name in ("ray.train", storage.__name__, context.__file__):
        logging.getLogger(name).setLevel(logging.WARNING)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point handed to ``TorchTrainer``; ``config['spec']`` is a :class:`StageSpec`, the
    rest of ``config`` the task's :meth:`~raydistill.tasks.base.Task.loop_extras`."""
    _quiet_ray_train_reports()
    spec: StageSpec = config["spec"]
    run_epochs(get_task(spec.job), spec, RayTrainContext(config))


def _tracker(spec: StageSpec, task: Task) -> BestTracker:
    """keep_best and early stopping watch one metric: ``train.monitor`` (auto: the task's)."""
    train = spec.train
    monitor = task.monitor if train.monitor == "auto" else train.monitor
    early = train.early_stopping
    if early is None:
        return BestTracker(monitor=monitor)
    return BestTracker(monitor=monitor, min_delta=early.min_delta, patience=early.patience)


def run_epochs(task: Task, spec: StageSpec, ctx: LoopContext) -> list[dict[str, Any]]:
    """Train ``spec``'s stage from where its checkpoints left it to ``train.epochs`` (or an
    early stop); returns the history of every epoch."""
    train = spec.train
    rank = ctx.rank
    torch.manual_seed(spec.job.seed)  # the same initial weights on every rank
    core = task.build_core(spec)
    # then a stream of its own per rank: dropout masks must differ between ranks
    torch.manual_seed(spec.job.seed + rank)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(spec.job.seed + rank)
    module = ctx.prepare_model(core)
    optimizer = build_optimizer(train, module.parameters())
    scheduler = build_lr_scheduler(train, optimizer)
    resumed = ctx.restore(core, optimizer, scheduler)
    rebase_lr(optimizer, scheduler, train.lr)
    if resumed.start_epoch:
        retarget_schedule(optimizer, scheduler, train)
    tracker = BestTracker(**resumed.tracker) if resumed.tracker else _tracker(spec, task)
    history, best_student, start_epoch = resumed.history, resumed.best_student, resumed.start_epoch
    if start_epoch:
        ctx.say(f"[{spec.name}] resumed from the checkpoint of epoch {start_epoch}")
    # a run that stopped early stays stopped when it is resumed
    stopped_early = bool(history and history[-1].get("stopped_early"))

    val_shard = ctx.dataset("val")
    startup: Startup | None = None  # measured at this worker group's first step
    progress = StepProgress(spec.name, train.epochs)
    for epoch in range(start_epoch, train.epochs):
        if stopped_early:
            break
        core.set_epoch(epoch)
        module.train()
        started = time.perf_counter()
        names = task.loss_parts
        # Python floats, not a tensor built per step: each part x n, then n
        sums = [0.0] * (len(names) + 1)
        counts = torch.zeros(spec.num_classes, dtype=torch.int64) if task.counts else None
        seed = spec.job.seed * 1_000_003 + epoch * 101 + rank
        progress.start(epoch, started)
        schedule = f" T={core.temperature:.2f} alpha={core.alpha:.2f}" if spec.distill else ""
        shard = ctx.dataset(_train_dataset_name(spec, epoch))
        asked = time.perf_counter()
        waits = WaitTimer()  # seconds this worker was blocked in the batch iterator
        batches = waits.wrap(task.train_batches(shard, spec, epoch, rank, seed))
        for step, batch in enumerate(batches):
            if step == 0 and epoch == start_epoch:  # this worker group's first step
                startup = Startup.measure(ctx, first_batch_s=time.perf_counter() - asked)
                if startup is not None:
                    ctx.say(startup.line(spec.name))
            with autocast(train.precision, ctx.device):
                out = task.step(module, core, spec, batch, ctx)
            if not torch.isfinite(out.total):
                where = out.where() if callable(out.where) else out.where
                raise NonFiniteLossError(
                    f"[{spec.role}] loss is {out.total.item()} at epoch {epoch} step {step} "
                    f"(worker {rank}, {where}): lower train.lr, set train.grad_clip, or "
                    "check the data"
                )
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            if train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), train.grad_clip)
            optimizer.step()
            for i, k in enumerate(names):
                sums[i] += out.parts[k] * out.n
            sums[-1] += out.n
            if counts is not None and out.counts is not None:
                counts += out.counts.detach().cpu()
            line = progress.update(step, out.n, time.perf_counter(), schedule)
            if line is not None:
                ctx.say(line)
        progress.finish()
        summed_up = ctx.all_sum(torch.tensor([*sums, waits.wait_s], dtype=torch.float64))
        totals, waited = summed_up[:-1].tolist(), float(summed_up[-1]) / ctx.world_size
        n = max(totals[-1], 1.0)
        elapsed = time.perf_counter() - started
        metrics: dict[str, Any] = {"epoch": epoch}
        metrics.update({f"train_{k}": v / n for k, v in zip(names, totals[:-1], strict=True)})
        metrics.update(
            {
                "temperature": core.temperature,
                "alpha": core.alpha if spec.distill else 0.0,
                "lr": optimizer.param_groups[0]["lr"],
                "samples_per_s": n / elapsed,
                "epoch_s": elapsed,
                # mean over workers of the seconds blocked waiting for batches (Boundness)
                "wait_s": waited,
                "workers": ctx.world_size,  # changes when elastic training resizes
                # > 0: this worker group resumed from a checkpoint (a restart after a
                # failure, or a rerun after the driver was killed)
                "started_at_epoch": start_epoch,
            }
        )
        if startup is not None:  # this worker group's stage start to first step (Startup)
            metrics["startup_s"] = startup.total_s
        if counts is not None:
            summed = ctx.all_sum(counts.to(torch.float64))
            metrics["class_counts"] = [int(c) for c in summed.tolist()]
        metrics.update(task.validate(module, core, spec, val_shard, ctx))
        scheduler.step()
        if tracker.update(epoch, metrics) or best_student is None:
            best_student = copy.deepcopy(
                {k: v.detach().cpu() for k, v in core.student.state_dict().items()}
            )
        stopped_early = tracker.should_stop and epoch + 1 < train.epochs
        metrics["best_epoch"] = tracker.best_epoch
        metrics["stopped_early"] = float(stopped_early)
        history.append(metrics)
        state = epoch_state(
            epoch=epoch,
            core=core,
            optimizer=optimizer,
            scheduler=scheduler,
            tracker=tracker,
            history=history,
            best_student=best_student,
            rng_states=ctx.gather([rng_snapshot()]),  # every rank's, for a resume per rank
        )
        ctx.report(metrics, state)
        ctx.say(_epoch_line(task, spec, metrics, elapsed))
        if stopped_early:
            ctx.say(
                f"[{spec.name}] early stop at epoch {epoch + 1}: {tracker.monitor} has not "
                f"improved for {tracker.bad_epochs} epochs (best {tracker.best:.4f} at epoch "
                f"{tracker.best_epoch + 1})"
            )
    bound = boundness(history) if spec.distill else None
    if bound is not None:
        ctx.say(bound.line(spec.name, task.teacher_pass(spec.job)))
    return history


def _train_dataset_name(spec: StageSpec, epoch: int) -> str:
    """An augmented job trains epoch ``e`` on view ``e % views`` (its own dataset)."""
    from raydistill.columns import view_dataset_name

    augment = spec.job.data.augment
    return "train" if augment is None else view_dataset_name(epoch % augment.views)


def _epoch_line(task: Task, spec: StageSpec, m: dict[str, Any], elapsed: float) -> str:
    epoch, total = int(m["epoch"]) + 1, spec.train.epochs
    return (
        f"[{spec.name}] epoch {epoch}/{total} loss {m['train_loss']:.4f} "
        f"{task.epoch_line(spec, m)} lr {m['lr']:.2e} "
        f"{m['samples_per_s']:.1f} {task.unit}/s {eta_text(elapsed * (total - epoch))}"
    )

"""The Ray Train loop of a detection stage: DDP student (+ FPN adapters) with a frozen teacher copy
in every worker, the detector's own losses as the hard loss, COCO mAP on val every epoch."""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from raydistill.config import JobConfig
from raydistill.detection.data import rows_to_tensors
from raydistill.detection.distiller import DetectionDistiller
from raydistill.detection.metrics import coco_map, to_coco_results
from raydistill.detection.models import check_detector, pair_levels
from raydistill.models.specs import build_model, load_weights
from raydistill.train.loop import NonFiniteLossError, _quiet_ray_train_reports, _say
from raydistill.train.optim import BestTracker, build_lr_scheduler, build_optimizer
from raydistill.train.spec import StageSpec
from raydistill.train.state import report_epoch, restore

# The task metric every stage tracks (keep_best, early stopping, the table): COCO AP.
METRIC = "val_map"


def build_detection_distiller(spec: StageSpec) -> DetectionDistiller:
    """Student (and for a distilled stage the frozen teacher and FPN adapters), as every worker
    builds it: level shapes were measured once on the driver and travel in the spec."""
    job: JobConfig = spec.job
    student = build_model(spec.model, spec.num_classes)
    check_detector(student, f"the {spec.role} model")
    teacher, pairs = None, None
    if spec.distill:
        assert spec.teacher_weights is not None
        teacher = build_model(job.teacher, spec.num_classes, load=False)
        load_weights(teacher, Path(spec.teacher_weights), what="the teacher")
        pairs = pair_levels(
            spec.student_shapes,
            spec.teacher_shapes,
            job.distill.detection.levels,  # type: ignore[arg-type]
        )
    return DetectionDistiller(
        student,
        teacher,
        config=job.distill.detection,
        temperature=job.distill.temperature,
        alpha=job.distill.alpha,
        pairs=pairs,
        student_channels={k: v[0] for k, v in spec.student_shapes.items()},
        teacher_channels={k: v[0] for k, v in spec.teacher_shapes.items()},
        total_epochs=spec.train.epochs,
    )


def _all_sum(values: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def _gather(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if not (dist.is_available() and dist.is_initialized()):
        return results
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, results)
    return [r for part in parts for r in part]


def validate_map(
    core: DetectionDistiller,
    shard: Any,
    spec: StageSpec,
    ground_truth: dict[str, Any],
    label_to_category: dict[int, int],
) -> dict[str, float]:
    """COCO mAP of the student on the val shards of every worker (same value on each)."""
    model = core.student
    model.eval()
    results: list[dict[str, Any]] = []
    with torch.no_grad():
        for batch in shard.iter_batches(batch_size=spec.train.batch_size, batch_format="numpy"):
            images, _, meta = rows_to_tensors(batch)
            device = next(model.parameters()).device
            outputs = model([im.to(device) for im in images])
            results += to_coco_results(outputs, meta, label_to_category)
    stats = coco_map(ground_truth, _gather(results))
    return {f"val_{k}": v for k, v in stats.items()}


def detection_loop_per_worker(config: dict[str, Any]) -> None:
    """Entry point handed to ``TorchTrainer`` for detection stages."""
    import ray.train
    import ray.train.torch

    spec: StageSpec = config["spec"]
    ground_truth: dict[str, Any] = config["val_ground_truth"]
    label_to_category: dict[int, int] = config["label_to_category"]
    train = spec.train
    _quiet_ray_train_reports()
    rank = ray.train.get_context().get_world_rank()
    torch.manual_seed(spec.job.seed)

    core = build_detection_distiller(spec)
    module = ray.train.torch.prepare_model(core)
    device = ray.train.torch.get_device()
    if core.teacher is not None:
        core.teacher.to(device)
    optimizer = build_optimizer(train, [p for p in module.parameters() if p.requires_grad])
    scheduler = build_lr_scheduler(train, optimizer)
    early = train.early_stopping
    resumed = restore(config, core, optimizer, scheduler)
    tracker = (
        BestTracker(**resumed.tracker)
        if resumed.tracker
        else BestTracker(
            # detection has one validation figure: mAP stands in for either monitor
            monitor=METRIC,
            min_delta=early.min_delta if early else 0.0,
            patience=early.patience if early else None,
        )
    )
    history, best_student, start_epoch = resumed.history, resumed.best_student, resumed.start_epoch
    if start_epoch and rank == 0:
        _say(f"[{spec.name}] resumed from the checkpoint of epoch {start_epoch}")

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")
    flip_seed = spec.job.seed if spec.job.data.coco and spec.job.data.coco.flip else None
    for epoch in range(start_epoch, train.epochs):
        core.set_epoch(epoch)
        module.train()
        started = time.perf_counter()
        sums = torch.zeros(6, dtype=torch.float64)  # total, detector, classifier, soft, imit, n
        batches = train_shard.iter_batches(
            batch_size=train.batch_size,
            batch_format="numpy",
            local_shuffle_buffer_size=spec.job.data.shuffle_buffer or None,
            local_shuffle_seed=spec.job.seed * 1_000_003 + epoch * 101 + rank,
        )
        for step, batch in enumerate(batches):
            images, targets, meta = rows_to_tensors(batch, flip_seed, epoch)
            images = [im.to(device) for im in images]
            targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
            out = module(images, targets)
            if not torch.isfinite(out.total):
                ids = [m["image_id"] for m in meta[:8]]
                raise NonFiniteLossError(
                    f"[{spec.role}] loss is {out.total.item()} at epoch {epoch} step {step} "
                    f"(worker {rank}, image ids {ids}): lower train.lr, set train.grad_clip, "
                    "or check the boxes"
                )
            optimizer.zero_grad(set_to_none=True)
            out.total.backward()
            if train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(module.parameters(), train.grad_clip)
            optimizer.step()
            n = len(images)
            parts = out.as_floats()
            sums += torch.tensor(
                [parts[k] * n for k in ("total", "detector", "classifier", "soft", "imitation")]
                + [n],
                dtype=torch.float64,
            )
        totals = _all_sum(sums).tolist()
        n = max(totals[5], 1.0)
        elapsed = time.perf_counter() - started
        metrics: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": totals[0] / n,
            "train_detector": totals[1] / n,
            "train_classifier": totals[2] / n,
            "train_soft": totals[3] / n,
            "train_imitation": totals[4] / n,
            "temperature": core.temperature,
            "alpha": core.alpha,
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": n / elapsed,
            "epoch_s": elapsed,
        }
        metrics.update(validate_map(core, val_shard, spec, ground_truth, label_to_category))
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
            _progress(spec, metrics, elapsed)
        if stopped_early:
            if rank == 0:
                _say(f"[{spec.name}] early stop at epoch {epoch + 1}")
            break


def _progress(spec: StageSpec, m: dict[str, Any], elapsed: float) -> None:
    epoch, total = int(m["epoch"]) + 1, spec.train.epochs
    kd = ""
    if spec.distill:
        kd = (
            f" soft {m['train_soft']:.4f} imitation {m['train_imitation']:.4f}"
            f" T={m['temperature']:.2f} alpha={m['alpha']:.2f}"
        )
    _say(
        f"[{spec.name}] epoch {epoch}/{total} loss {m['train_loss']:.4f}{kd} "
        f"val mAP {m['val_map']:.4f} AP50 {m['val_map50']:.4f} lr {m['lr']:.2e} "
        f"{m['samples_per_s']:.1f} images/s eta {math.ceil(elapsed * (total - epoch))}s"
    )

"""A detection job end to end: teacher stage (when it has no checkpoint), distilled student,
baseline, and the COCO mAP table on the test split."""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydistill.config import JobConfig
from raydistill.detection.coco import CocoSplit
from raydistill.detection.data import _encode, read_splits, rows_to_tensors, split_dataset
from raydistill.detection.loop import detection_loop_per_worker
from raydistill.detection.metrics import coco_map, require_pycocotools, to_coco_results
from raydistill.detection.models import (
    check_detector,
    detector_spec,
    feature_shapes,
    pair_levels,
)
from raydistill.models.specs import build_model, count_parameters, load_weights
from raydistill.pipeline import (
    METRICS_FILE,
    SUMMARY_FILE,
    _already_trained,
    prepare_run_dir,
    teacher_weights_path,
)
from raydistill.runtime import ray_session
from raydistill.train.spec import Role, StageSpec
from raydistill.train.stage import StageResult, finished_stage, run_stage

Log = Callable[[str], None]
NAMES = {
    "teacher": "teacher",
    "student": "student (distilled)",
    "baseline": "baseline (student alone)",
}


def with_detector_specs(job: JobConfig) -> JobConfig:
    """The job with both models' specs carrying the shared detection settings (image size, no
    backbone download), as written into the run's job.yaml."""
    assert job.data.coco is not None
    size = job.data.coco.image_size
    return job.model_copy(
        update={
            "teacher": detector_spec(job.teacher, size, size),
            "student": detector_spec(job.student, size, size),
        }
    )


@dataclass(frozen=True)
class DetectionScore:
    """One row of the detection table: COCO AP figures are fractions in [0, 1]."""

    name: str
    stats: dict[str, float]
    parameters: int
    latency_ms: float  # median CPU time of one image (batch 1, one thread), milliseconds

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            **self.stats,
            "parameters": self.parameters,
            "latency_ms": self.latency_ms,
        }


@dataclass
class DetectionSummary:
    run_dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)
    scores: list[DetectionScore] = field(default_factory=list)

    def score(self, name: str) -> DetectionScore:
        return next(s for s in self.scores if s.name == name)

    def table(self) -> str:
        rows = [
            "| model | mAP | AP50 | AP75 | APs | APm | APl | parameters "
            "| latency / image (CPU, batch 1) | epochs |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]

        def pct(v: float) -> str:
            return "-" if v < 0 else f"{100 * v:.1f}"

        for s in self.scores:
            stage = self.stages.get(s.name.split(" ")[0])
            st = s.stats
            rows.append(
                f"| {s.name} | {pct(st['map'])} | {pct(st['map50'])} | {pct(st['map75'])} | "
                f"{pct(st['map_small'])} | {pct(st['map_medium'])} | {pct(st['map_large'])} | "
                f"{s.parameters:,} | {s.latency_ms:.1f} ms | "
                f"{stage.epochs_run if stage else '-'} |"
            )
        names = {s.name: s for s in self.scores}
        notes = []
        teacher, student = names.get(NAMES["teacher"]), names.get(NAMES["student"])
        alone = names.get(NAMES["baseline"])
        if teacher and student:
            notes.append(
                f"student: {teacher.parameters / student.parameters:.1f}x fewer parameters, "
                f"{teacher.latency_ms / student.latency_ms:.1f}x faster per image, "
                f"{100 * (student.stats['map'] - teacher.stats['map']):+.1f} mAP points vs the "
                "teacher"
            )
        if student and alone:
            notes.append(
                f"distillation bought {100 * (student.stats['map'] - alone.stats['map']):+.1f} "
                "mAP points over the same student trained alone"
            )
        return "\n".join(rows + [""] + [f"- {n}" for n in notes])


def load_images(split: CocoSplit, image_size: int) -> dict[str, list[Any]]:
    """A split's rows decoded on the driver (what the Ray Data stage produces), for scoring."""
    rows = [_encode(r, image_size) for r in split.records]
    return {k: [r[k] for r in rows] for k in rows[0]}


@torch.no_grad()
def score_detector(
    name: str, model: nn.Module, split: CocoSplit, image_size: int, batch_size: int = 8
) -> DetectionScore:
    """COCO mAP on a split, parameter count and CPU latency of one image."""
    model.eval()
    rows = load_images(split, image_size)
    results = []
    for i in range(0, len(rows["image_id"]), batch_size):
        batch = {k: v[i : i + batch_size] for k, v in rows.items()}
        images, _, meta = rows_to_tensors(batch)
        results += to_coco_results(model(images), meta, split.label_to_category())
    stats = coco_map(split.ground_truth(), results)
    image = rows_to_tensors({k: v[:1] for k, v in rows.items()})[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model(image)
        times = []
        for _ in range(10):
            started = time.perf_counter()
            model(image)
            times.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return DetectionScore(name, stats, count_parameters(model), statistics.median(times) * 1000)


def _stage(
    job: JobConfig,
    role: Role,
    splits: dict[str, CocoSplit],
    datasets: dict[str, Any],
    log: Log,
    teacher_weights: Path | None = None,
    shapes: tuple[dict, dict] = ({}, {}),
) -> StageResult:
    if (done := _already_trained(job, role, log)) is not None:
        return done
    spec = StageSpec(
        role=role,
        job=job,
        model=job.teacher if role == "teacher" else job.student,
        train=job.teacher_train() if role == "teacher" else job.train,
        num_classes=splits["train"].num_classes,
        distill=role == "student",
        student_shapes=shapes[0],
        teacher_shapes=shapes[1],
        teacher_weights=str(teacher_weights) if teacher_weights else None,
    )
    log(
        f"[{role}] training {spec.model.model} for up to {spec.train.epochs} epochs on "
        f"{job.scaling.workers} workers"
    )
    return run_stage(
        spec,
        datasets,
        job.run_dir,
        loop=detection_loop_per_worker,
        loop_config={
            "val_ground_truth": splits["val"].ground_truth(),
            "label_to_category": splits["train"].label_to_category(),
        },
    )


def check_detection_pair(
    job: JobConfig, teacher_weights: Path, num_classes: int, log: Log = print
) -> tuple[dict, dict]:
    """Build both detectors once: they must be two-stage torchvision detectors; returns their FPN
    level shapes (C, h, w) and logs the level pairs and adapters distillation will use."""
    assert job.data.coco is not None
    teacher = load_weights(
        build_model(job.teacher, num_classes, load=False), teacher_weights, what="the teacher"
    )
    student = build_model(job.student, num_classes)
    check_detector(teacher, "the teacher")
    check_detector(student, "the student")
    size = job.data.coco.image_size
    s_shapes, t_shapes = feature_shapes(student, size), feature_shapes(teacher, size)
    cfg = job.distill.detection
    if cfg.imitation_weight > 0:
        pairs = pair_levels(s_shapes, t_shapes, cfg.levels)
        described = ", ".join(
            f"{s} {s_shapes[s]} -> {t} {t_shapes[t]}"
            + ("" if s_shapes[s][0] == t_shapes[t][0] else " (1x1 conv)")
            for s, t in pairs.items()
        )
        log(f"[student] FPN imitation: {described}")
    return s_shapes, t_shapes


def run_detection_job(job: JobConfig, fresh: bool = False, log: Log = print) -> DetectionSummary:
    """``raydistill train`` for ``task: detection``."""
    require_pycocotools()
    job = with_detector_specs(job)
    assert job.data.coco is not None
    run_dir = prepare_run_dir(job, fresh, log)
    splits = read_splits(job, log)
    num_classes = splits["train"].num_classes
    summary = DetectionSummary(run_dir)
    roles: list[Role] = ["student"] if job.distill.enabled else ["baseline"]
    if job.distill.enabled and job.train.baseline:
        roles.append("baseline")
    size = job.data.coco.image_size
    with ray_session(job):
        datasets = {k: split_dataset(splits[k], job.data.coco) for k in ("train", "val")}
        teacher_weights: Path | None = None
        if job.teacher.checkpoint is not None:
            teacher_weights = Path(job.teacher.checkpoint)
            log(f"[teacher] using checkpoint {teacher_weights}")
        elif job.distill.enabled or teacher_weights_path(job).is_file():
            summary.stages["teacher"] = _stage(job, "teacher", splits, datasets, log)
            teacher_weights = summary.stages["teacher"].weights
        shapes: tuple[dict, dict] = ({}, {})
        if job.distill.enabled:
            assert teacher_weights is not None
            shapes = check_detection_pair(job, teacher_weights, num_classes, log)
        for role in roles:
            summary.stages[role] = _stage(
                job,
                role,
                splits,
                datasets,
                log,
                teacher_weights if role == "student" else None,
                shapes if role == "student" else ({}, {}),
            )
    test = splits["test"]
    if teacher_weights is not None:
        teacher = load_weights(
            build_model(job.teacher, num_classes, load=False), teacher_weights, what="the teacher"
        )
        summary.scores.append(score_detector(NAMES["teacher"], teacher, test, size))
        if "teacher" not in summary.stages and (done := finished_stage(run_dir, "teacher")):
            summary.stages["teacher"] = done
    for role in roles:
        model = load_weights(
            build_model(job.student, num_classes, load=False),
            summary.stages[role].weights,
            what=f"the {role}",
        )
        summary.scores.append(score_detector(NAMES[role], model, test, size))
    (run_dir / SUMMARY_FILE).write_text(summary.table() + "\n")
    (run_dir / METRICS_FILE).write_text(
        json.dumps(
            {
                "test": [s.as_dict() for s in summary.scores],
                "epochs": {k: v.epochs_run for k, v in summary.stages.items()},
            },
            indent=1,
        )
    )
    return summary

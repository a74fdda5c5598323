"""Detection: COCO-format data, torchvision detectors (a two-stage teacher; a two-stage or a
one-stage FCOS student), COCO mAP.

Rows are one image each (see :mod:`raydistill.columns`); the objective is
:class:`~raydistill.detection.distiller.DetectionDistiller`'s (the detector's own losses, soft
targets on shared proposals, FPN imitation) or, for an FCOS student,
:class:`~raydistill.detection.distiller.OneStageDistiller`'s (soft targets at its points,
foreground-masked FPN imitation), with the frozen teacher inside every train worker;
the figure of merit is COCO mAP@[.5:.95] on the validation shard of every worker.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from raydistill.columns import IMAGE_ID
from raydistill.config import JobConfig, JobError, ModelSpec
from raydistill.detection.data import read_splits, rows_to_tensors, split_dataset
from raydistill.detection.distiller import DetectionDistiller, distiller_for
from raydistill.detection.metrics import coco_map, require_pycocotools, to_coco_results
from raydistill.detection.models import check_detector, detector_spec, feature_shapes, pair_levels
from raydistill.detection.scoring import (
    DetectionScore,
    image_latency_ms,
    load_images,
    score_detector,
)
from raydistill.models.specs import build_model, load_weights
from raydistill.tasks.base import Log, Shapes, Splits, StepOutput, SummaryTable, Task, batch_rows
from raydistill.tasks.summary import comparison_notes, epochs_cell

if TYPE_CHECKING:
    from raydistill.train.context import LoopContext
    from raydistill.train.spec import StageSpec

# settings of a classification job that a detection job would otherwise silently ignore
_IGNORED = {
    "data.augment": "detection mirrors images itself (data.coco.flip)",
    "data.balance": "detection rows hold many boxes of many classes",
    "data.subset": "detection reads the splits named in data.coco whole",
}


class DetectionTask(Task):
    """COCO-format detection: a two-stage torchvision teacher, a two-stage or FCOS student."""

    name: ClassVar[str] = "detection"
    commands: ClassVar[frozenset[str]] = frozenset(
        {"validate", "teacher", "train", "evaluate", "report", "export", "check-teacher"}
    )
    refusals: ClassVar[dict[str, str]] = {
        "cache": "its teacher runs as a frozen copy inside each train worker, so there is no "
        "teacher pass to cache",
        "tune": "a search would share one teacher pass, and detection has none to share",
    }
    monitor: ClassVar[str] = "val_map"
    monitors: ClassVar[frozenset[str]] = frozenset({"val_map"})
    export_formats: ClassVar[tuple[str, ...]] = ("safetensors",)
    teacher_passes: ClassVar[frozenset[str]] = frozenset({"worker"})
    unit: ClassVar[str] = "images"
    headline_name: ClassVar[str] = "mAP"
    curves: ClassVar[tuple[tuple[str, str | None, str | None], ...]] = (
        ("objective", "train_loss", None),
        ("validation mAP", None, "val_map"),
        ("validation AP50", None, "val_map50"),
    )
    loss_parts: ClassVar[tuple[str, ...]] = ("loss", "detector", "classifier", "soft", "imitation")

    # ------------------------------------------------------------------ driver side

    def prepare(self, job: JobConfig) -> JobConfig:
        """Both models' specs carry the shared detection settings (image size, no backbone
        download), as written into the run's job.yaml."""
        assert job.data.coco is not None
        size = job.data.coco.image_size
        return job.model_copy(
            update={
                "teacher": detector_spec(job.teacher, size, size),
                "student": detector_spec(job.student, size, size),
            }
        )

    def check_job(self, job: JobConfig) -> None:
        super().check_job(job)
        if "teacher_pass" in job.distill.model_fields_set:
            raise JobError(
                "distill.teacher_pass: detection runs its teacher as a frozen copy inside each "
                "train worker; remove the key"
            )
        for key, why in _IGNORED.items():
            if getattr(job.data, key.removeprefix("data.")) is not None:
                raise JobError(f"{key}: not used by task: detection ({why})")

    def teacher_pass(self, job: JobConfig) -> str:
        return "worker"

    def read_splits(self, job: JobConfig, log: Log = print) -> Splits:
        require_pycocotools()
        return read_splits(job, log)

    def split_fingerprint(self, split: Any) -> str:
        digest = hashlib.sha256()
        for r in split.records:
            digest.update(f"{r['image_id']}|{r['path']}|{r['width']}x{r['height']}|".encode())
            digest.update(r["boxes"].tobytes() + r["labels"].tobytes())
        return digest.hexdigest()

    def split_rows(self, split: Any) -> int:
        return len(split.records)

    def describe_data(self, job: JobConfig, splits: Splits) -> str:
        sizes = ", ".join(f"{k} {self.split_rows(v)}" for k, v in splits.items())
        return f"data: coco: {sizes} images, {self.num_classes(splits) - 1} categories"

    def check_student(self, job: JobConfig, splits: Splits) -> None:
        student = build_model(job.student, self.num_classes(splits))
        check_detector(student, "the student", one_stage=True)

    def check_pair(
        self, job: JobConfig, teacher_weights: Path | None, splits: Splits, log: Log = print
    ) -> Shapes:
        """The teacher must be a two-stage torchvision detector, the student one too or an
        FCOS; returns their FPN level shapes
        (C, h, w) and logs the level pairs and adapters distillation will use."""
        assert job.data.coco is not None
        num_classes = self.num_classes(splits)
        teacher = build_model(job.teacher, num_classes, load=False)
        if teacher_weights is not None:
            load_weights(teacher, teacher_weights, what="the teacher")
        student = build_model(job.student, num_classes)
        check_detector(teacher, "the teacher")
        check_detector(student, "the student", one_stage=True)
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

    def datasets(
        self, job: JobConfig, splits: Splits, model: ModelSpec, distill: bool
    ) -> dict[str, Any]:
        assert job.data.coco is not None
        return {k: split_dataset(splits[k], job.data.coco) for k in ("train", "val")}

    def loop_extras(self, job: JobConfig, splits: Splits) -> dict[str, Any]:
        return {
            "val_ground_truth": splits["val"].ground_truth(),
            "label_to_category": splits["train"].label_to_category(),
        }

    def score(
        self, job: JobConfig, name: str, model: nn.Module, spec: ModelSpec, split: Any
    ) -> DetectionScore:
        assert job.data.coco is not None
        return score_detector(name, model, split, job.data.coco.image_size)

    def speed(
        self, job: JobConfig, model: nn.Module, spec: ModelSpec, split: Any
    ) -> tuple[float, float, int]:
        assert job.data.coco is not None
        latency = image_latency_ms(model, split, job.data.coco.image_size)
        return latency, 1000.0 / latency, 1

    def example_inputs(self, job: JobConfig, spec: ModelSpec, split: Any, rows: int) -> Any:
        """Decoded images [3, H, W] in [0, 1] of the first ``rows`` images of ``split``."""
        assert job.data.coco is not None
        decoded = load_images(split, job.data.coco.image_size)
        batch = {k: v[:rows] for k, v in decoded.items()}
        return rows_to_tensors(batch)[0]

    @torch.no_grad()
    def output_difference(self, model: nn.Module, loaded: nn.Module, inputs: Any) -> float:
        """Largest difference of boxes (pixels) and scores between the two detectors' outputs;
        infinite when they keep different numbers of boxes."""
        worst = 0.0
        for a, b in zip(model.eval()(inputs), loaded.eval()(inputs), strict=True):
            for key in ("boxes", "scores"):
                if a[key].shape != b[key].shape:
                    return float("inf")
                if a[key].numel():
                    worst = max(worst, float((a[key] - b[key]).abs().max()))
        return worst

    def table(
        self, scores: list[Any], epochs: dict[str, int], detailed: bool = False
    ) -> SummaryTable:
        """COCO AP figures, size and latency (the report shows the same table)."""
        def pct(v: float) -> str:
            return "-" if v < 0 else f"{100 * v:.1f}"

        keys = ("map", "map50", "map75", "map_small", "map_medium", "map_large")
        rows = [
            [
                s.name,
                *(pct(s.stats[k]) for k in keys),
                f"{s.parameters:,}",
                f"{s.latency_ms:.1f} ms",
                epochs_cell(epochs, s.name),
            ]
            for s in scores
        ]
        header = ["model", "mAP", "AP50", "AP75", "APs", "APm", "APl", "parameters"]
        return SummaryTable(
            [*header, "latency / image (CPU, batch 1)", "epochs"],
            rows,
            caption="COCO AP (percent) on the test split (val when the job names none).",
            notes=comparison_notes(scores, "mAP points", digits=1, per="image"),
        )

    # ------------------------------------------------------------------ worker side

    def build_core(self, spec: StageSpec) -> DetectionDistiller:
        """Student (and for a distilled stage the frozen teacher and FPN adapters), as every
        worker builds it: level shapes were measured once on the driver."""
        job = spec.job
        student = build_model(spec.model, spec.num_classes)
        check_detector(student, f"the {spec.role} model", one_stage=spec.role != "teacher")
        teacher, pairs = None, None
        if spec.distill:
            assert spec.teacher_weights is not None
            teacher = build_model(job.teacher, spec.num_classes, load=False)
            load_weights(teacher, Path(spec.teacher_weights), what="the teacher")
            levels = job.distill.detection.levels
            pairs = pair_levels(spec.student_shapes, spec.teacher_shapes, levels)
        return distiller_for(student)(
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

    def train_batches(
        self, shard: Any, spec: StageSpec, epoch: int, rank: int, seed: int
    ) -> Iterator[Any]:
        coco = spec.job.data.coco
        flip_seed = spec.job.seed if coco is not None and coco.flip else None
        batches = shard.iter_batches(
            batch_size=spec.train.batch_size,
            batch_format="numpy",
            local_shuffle_buffer_size=spec.job.data.shuffle_buffer or None,
            local_shuffle_seed=seed,
        )
        for batch in batches:
            yield rows_to_tensors(batch, flip_seed, epoch)

    def step(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, batch: Any, ctx: LoopContext
    ) -> StepOutput:
        images, targets, meta = batch
        images = [im.to(ctx.device) for im in images]
        targets = [{k: v.to(ctx.device) for k, v in t.items()} for t in targets]
        out = module(images, targets)
        parts = out.as_floats()
        parts["loss"] = parts.pop("total")
        return StepOutput(
            total=out.total,
            parts=parts,
            n=len(images),
            where=f"image ids {batch_rows([m[IMAGE_ID] for m in meta])}",
        )

    def validate(
        self, module: nn.Module, core: nn.Module, spec: StageSpec, shard: Any, ctx: LoopContext
    ) -> dict[str, float]:
        """COCO mAP of the student on the val shards of every worker (the same on each)."""
        model = core.student
        model.eval()
        label_to_category = ctx.extras["label_to_category"]
        results: list[dict[str, Any]] = []
        for batch in shard.iter_batches(batch_size=spec.train.batch_size, batch_format="numpy"):
            images, _, meta = rows_to_tensors(batch)
            with torch.no_grad():
                outputs = model([im.to(ctx.device) for im in images])
            results += to_coco_results(outputs, meta, label_to_category)
        # pycocotools' 12-line summary goes to the run's log; the epoch line has mAP and AP50
        heading = (
            f"{spec.name} epoch {getattr(core, 'epoch', 0) + 1}/{spec.train.epochs}: "
            "COCO evaluation of the val split (pycocotools)"
        )
        stats = coco_map(
            ctx.extras["val_ground_truth"],
            ctx.gather(results),
            log=lambda lines: ctx.log_only([heading, *lines]),
        )
        return {f"val_{k}": v for k, v in stats.items()}

    def epoch_line(self, spec: StageSpec, m: dict[str, Any]) -> str:
        """After ``loss``: the detector's own terms (RPN + box regression, and the box
        classifier), the KD terms and schedule for a distilled stage, then val mAP and AP50."""
        parts = f"(detector {m['train_detector']:.4f} classifier {m['train_classifier']:.4f}"
        if spec.distill:
            parts += (
                f" soft {m['train_soft']:.4f} imitation {m['train_imitation']:.4f}) "
                f"T={m['temperature']:.2f} alpha={m['alpha']:.2f} "
            )
        else:
            parts += ") "
        return f"{parts}val mAP {m['val_map']:.4f} AP50 {m['val_map50']:.4f}"

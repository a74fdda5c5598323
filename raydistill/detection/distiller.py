"""The trainable module of a detection stage: student detector + FPN adapters, with the frozen
teacher beside it (not a parameter, so DDP never syncs or updates it).

:class:`DetectionDistiller` distils a two-stage student (Faster R-CNN) on shared proposals;
:class:`OneStageDistiller` a one-stage one (FCOS) at its points. :func:`distiller_for` picks
the one that fits the student.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raydistill.config import DetectionDistillConfig
from raydistill.detection.models import Targets, student_pass, teacher_view
from raydistill.detection.one_stage import is_one_stage, one_stage_pass, teacher_boxes_view
from raydistill.distill.detection import (
    fcos_points_in_boxes,
    imitation_loss,
    level_adapters,
    masked_imitation_loss,
    point_kd_loss,
    proposal_kd_loss,
)
from raydistill.distill.schedules import ScheduleLike, as_schedule


@dataclass
class DetectionLoss:
    """Loss terms of one step (scalars). ``detector``: the student's own losses except the box
    classifier; ``classifier``: its cross-entropy on sampled proposals; ``soft``: KD on the
    same proposals; ``imitation``: FPN imitation."""

    total: Tensor
    detector: Tensor
    classifier: Tensor
    soft: Tensor
    imitation: Tensor

    def as_floats(self) -> dict[str, float]:
        return {
            k: float(getattr(self, k).detach())
            for k in ("total", "detector", "classifier", "soft", "imitation")
        }


class DetectionDistiller(nn.Module):
    """``total = detector + (1 - alpha) * classifier + alpha * soft + w_im * imitation``.

    Without a teacher it trains the detector alone (``total = detector + classifier``).
    ``pairs`` maps student FPN levels to teacher levels; ``channels`` gives each side's FPN
    channels to size the 1x1 adapters.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        config: DetectionDistillConfig | None = None,
        temperature: ScheduleLike | float = 2.0,
        alpha: ScheduleLike | float = 0.5,
        pairs: dict[str, str] | None = None,
        student_channels: dict[str, int] | None = None,
        teacher_channels: dict[str, int] | None = None,
        total_epochs: int | None = None,
    ) -> None:
        super().__init__()
        self.student = student
        self._teacher = [teacher] if teacher is not None else []  # a list hides it from nn.Module
        if teacher is not None:
            teacher.eval().requires_grad_(False)
        self.config = config or DetectionDistillConfig()
        self.temperature_schedule = as_schedule(temperature)
        self.alpha_schedule = as_schedule(alpha)
        self.total_epochs = total_epochs
        self.epoch = 0
        imitate = teacher is not None and self.config.imitation_weight > 0 and bool(pairs)
        self.pairs = dict(pairs or {}) if imitate else {}
        self.adapters = (
            level_adapters(self.pairs, student_channels or {}, teacher_channels or {})
            if self.pairs
            else nn.ModuleDict()
        )

    @property
    def teacher(self) -> nn.Module | None:
        return self._teacher[0] if self._teacher else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def temperature(self) -> float:
        return self.temperature_schedule.value(self.epoch, self.total_epochs)

    @property
    def alpha(self) -> float:
        if self.teacher is None or not self.config.logit_kd:
            return 0.0
        return self.alpha_schedule.value(self.epoch, self.total_epochs)

    def forward(self, images: list[Tensor], targets: Targets) -> DetectionLoss:
        """``images``: [3, H_i, W_i] in [0, 1]; ``targets``: ``boxes`` [N_i, 4] (pixels) and
        ``labels`` [N_i] in 1..K. Call in train mode."""
        s = student_pass(self.student, images, targets)
        classifier = s.losses["loss_classifier"]
        detector = sum(v for k, v in s.losses.items() if k != "loss_classifier")
        zero = classifier.new_zeros(())
        soft, imitation = zero, zero
        teacher = self.teacher
        if teacher is not None:
            fg = self.config.foreground
            t = teacher_view(
                teacher,
                images,
                s,
                own_boxes_above=self.config.teacher_box_score if fg == "gt+teacher" else None,
            )
            if self.config.logit_kd:
                soft = proposal_kd_loss(s.class_logits, t.class_logits, self.temperature)
            if self.pairs:
                boxes = None
                if fg != "none":
                    boxes = [
                        torch.cat([g, tb]) if t.boxes is not None else g
                        for g, tb in zip(s.boxes, t.boxes or s.boxes, strict=True)
                    ]
                imitation = imitation_loss(
                    s.features,
                    t.features,
                    self.pairs,
                    self.adapters,
                    foreground=boxes,
                    padded_size=s.padded_size,
                    foreground_weight=self.config.foreground_weight if boxes else 0.0,
                )
        alpha = self.alpha
        total = (
            detector
            + (1 - alpha) * classifier
            + alpha * soft
            + self.config.imitation_weight * imitation
        )
        return DetectionLoss(total, detector, classifier, soft, imitation)


class OneStageDistiller(DetectionDistiller):
    """A one-stage student (FCOS) of a two-stage teacher:
    ``total = detector + (1 - alpha) * classifier + alpha * soft + w_im * imitation``, where
    ``detector`` is FCOS's box regression (GIoU) + centerness, ``classifier`` its sigmoid focal
    loss, ``soft`` :func:`~raydistill.distill.detection.point_kd_loss` (the teacher's class
    distribution of each of its detections scoring above ``teacher_box_score``, for the
    student's points FCOS would train as that box's positives) and
    ``imitation`` :func:`~raydistill.distill.detection.masked_imitation_loss` on the cells
    under ``distill.detection.foreground`` boxes (ground truth, plus the teacher's detections
    scoring above ``teacher_box_score`` with ``gt+teacher``; ``none``: plain MSE everywhere),
    on standardised maps, so of order 1 like FCOS's own terms at ``imitation_weight`` 1.
    Constructor as :class:`DetectionDistiller`'s.
    """

    def forward(self, images: list[Tensor], targets: Targets) -> DetectionLoss:
        """``images``: [3, H_i, W_i] in [0, 1]; ``targets``: ``boxes`` [N_i, 4] (pixels) and
        ``labels`` [N_i] in 1..K. Call in train mode."""
        s = one_stage_pass(self.student, images, targets)
        classifier = s.losses["classification"]
        detector = s.losses["bbox_regression"] + s.losses["bbox_ctrness"]
        zero = classifier.new_zeros(())
        soft, imitation = zero, zero
        teacher = self.teacher
        if teacher is not None:
            t = teacher_boxes_view(teacher, images, s.image_sizes)
            if self.config.logit_kd:
                soft = point_kd_loss(
                    s.class_logits,
                    s.points,
                    t.boxes,
                    t.logits,
                    self.temperature,
                    teacher_scores=t.scores,
                    min_score=self.config.teacher_box_score,
                    assign=functools.partial(
                        fcos_points_in_boxes,
                        strides=s.strides,
                        per_level=s.per_level,
                        radius=getattr(self.student, "center_sampling_radius", 1.5),
                    ),
                )
            if self.pairs:
                fg = self.config.foreground
                if fg == "none":
                    imitation = imitation_loss(s.features, t.features, self.pairs, self.adapters)
                else:
                    boxes = s.boxes
                    if fg == "gt+teacher":
                        boxes = [
                            torch.cat([g, tb[ts > self.config.teacher_box_score]])
                            for g, tb, ts in zip(s.boxes, t.boxes, t.scores, strict=True)
                        ]
                    imitation = masked_imitation_loss(
                        s.features, t.features, self.pairs, self.adapters, boxes, s.padded_size
                    )
        alpha = self.alpha
        total = (
            detector
            + (1 - alpha) * classifier
            + alpha * soft
            + self.config.imitation_weight * imitation
        )
        return DetectionLoss(total, detector, classifier, soft, imitation)


def distiller_for(student: nn.Module) -> type[DetectionDistiller]:
    """The distiller class that fits ``student``: one-stage (FCOS) or two-stage."""
    return OneStageDistiller if is_one_stage(student) else DetectionDistiller

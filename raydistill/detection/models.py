"""Detectors: built from job specs, and run step by step so teacher and student can be compared
on the same proposals.

torchvision's ``GeneralizedRCNN.forward`` hides the sampled proposals and the head's logits; the
functions here run the same stages (transform, backbone + FPN, RPN, box head) and keep them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torchvision.models.detection.roi_heads import fastrcnn_loss

from raydistill.config import JobError, ModelSpec

Targets = list[dict[str, Tensor]]


def detector_spec(spec: ModelSpec, min_size: int, max_size: int) -> ModelSpec:
    """The spec with the detection defaults every torchvision detector needs here: the job's image
    size (teacher and student must see the same resized image, so proposals carry over) and no
    ImageNet backbone download (pretrained weights come from ``checkpoint`` files)."""
    args = dict(spec.args)
    args.setdefault("min_size", min_size)
    args.setdefault("max_size", max_size)
    if spec.model.startswith("torchvision:"):
        args.setdefault("weights_backbone", None)
    return spec.model_copy(update={"args": args})


def check_detector(model: nn.Module, what: str, one_stage: bool = False) -> None:
    """A two-stage torchvision detector (Faster R-CNN-like), or with ``one_stage`` (students)
    also torchvision's FCOS; else a one-line :class:`JobError`."""
    from torchvision.models.detection import FCOS

    if one_stage and isinstance(model, FCOS):
        return
    for part in ("transform", "backbone", "rpn", "roi_heads"):
        if not hasattr(model, part):
            also = (
                "; a student may also be torchvision's FCOS (e.g. raydistill.models.zoo:small_fcos)"
                if one_stage
                else ""
            )
            raise JobError(
                f"{what} is {type(model).__name__}, not a two-stage torchvision detector "
                f"(no .{part}); use e.g. torchvision:fasterrcnn_mobilenet_v3_large_fpn{also}"
            )


@dataclass
class StudentPass:
    """What one training forward of the student produced.

    ``features``: FPN level name -> [B, C, h, w]; ``proposals``: per image [P_i, 4] sampled for
    the box head, in pixels of the resized image; ``class_logits``: [sum P_i, K+1];
    ``image_sizes``: per image (h, w) after resizing; ``padded_size``: (H, W) of the batch.
    """

    losses: dict[str, Tensor]
    features: OrderedDict[str, Tensor]
    proposals: list[Tensor]
    class_logits: Tensor
    image_sizes: list[tuple[int, int]]
    padded_size: tuple[int, int]
    boxes: list[Tensor]  # ground-truth boxes, resized like the images


def student_pass(model: nn.Module, images: list[Tensor], targets: Targets) -> StudentPass:
    """The detector's own training losses (RPN objectness and box, head classifier and box
    regression) plus the intermediate results distillation needs. ``images``: [3, H_i, W_i]
    floats in [0, 1]; ``targets``: ``boxes`` [N_i, 4] pixels and ``labels`` [N_i] in 1..K."""
    image_list, targets_t = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    proposals, rpn_losses = model.rpn(image_list, features, targets_t)
    heads = model.roi_heads
    proposals, _, labels, regression_targets = heads.select_training_samples(proposals, targets_t)
    pooled = heads.box_head(heads.box_roi_pool(features, proposals, image_list.image_sizes))
    class_logits, box_regression = heads.box_predictor(pooled)
    loss_classifier, loss_box_reg = fastrcnn_loss(
        class_logits, box_regression, labels, regression_targets
    )
    losses = {**rpn_losses, "loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
    return StudentPass(
        losses=losses,
        features=features,
        proposals=proposals,
        class_logits=class_logits,
        image_sizes=[tuple(s) for s in image_list.image_sizes],
        padded_size=tuple(image_list.tensors.shape[-2:]),
        boxes=[t["boxes"] for t in targets_t],
    )


@dataclass
class TeacherView:
    """The frozen teacher on the student's batch: FPN features, its head's class logits for the
    student's proposals [sum P_i, K+1], and (when asked) its own confident boxes per image."""

    features: OrderedDict[str, Tensor]
    class_logits: Tensor
    boxes: list[Tensor] | None


@torch.no_grad()
def teacher_view(
    model: nn.Module,
    images: list[Tensor],
    student: StudentPass,
    own_boxes_above: float | None = None,
) -> TeacherView:
    """Run the teacher (in eval mode) on the same images and score the student's proposals.

    Both detectors resize images the same way (the job gives both the same ``min_size`` and
    ``max_size``), so proposals in the student's resized pixels are valid for the teacher.
    ``own_boxes_above``: also return the teacher's detections with a score above it.
    """
    model.eval()
    image_list, _ = model.transform(images)
    sizes = [tuple(s) for s in image_list.image_sizes]
    if sizes != student.image_sizes:
        raise JobError(
            f"teacher resizes images to {sizes[:2]}... but the student to "
            f"{student.image_sizes[:2]}...: give both the same min_size/max_size"
        )
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    heads = model.roi_heads
    pooled = heads.box_head(heads.box_roi_pool(features, student.proposals, sizes))
    class_logits, _ = heads.box_predictor(pooled)
    boxes = None
    if own_boxes_above is not None:
        proposals, _ = model.rpn(image_list, features)
        detections, _ = heads(features, proposals, sizes)
        boxes = [d["boxes"][d["scores"] > own_boxes_above] for d in detections]
    return TeacherView(features, class_logits, boxes)


@torch.no_grad()
def feature_shapes(model: nn.Module, size: int) -> dict[str, tuple[int, int, int]]:
    """FPN level -> (C, h, w) for one ``size`` x ``size`` image (sizes the adapters and pairs
    levels by stride)."""
    model.eval()
    image_list, _ = model.transform([torch.zeros(3, size, size)])
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    return {k: tuple(v.shape[1:]) for k, v in features.items()}


def pair_levels(
    student: dict[str, tuple[int, int, int]],
    teacher: dict[str, tuple[int, int, int]],
    wanted: dict[str, str] | None = None,
) -> dict[str, str]:
    """Student level -> teacher level. Given pairs are checked; by default every student level
    is paired with the teacher level of the same spatial size (the same stride)."""
    if wanted:
        for s, t in wanted.items():
            if s not in student:
                raise JobError(
                    f"distill.detection.levels: student has no FPN level '{s}' "
                    f"(it has {sorted(student)})"
                )
            if t not in teacher:
                raise JobError(
                    f"distill.detection.levels: teacher has no FPN level '{t}' "
                    f"(it has {sorted(teacher)})"
                )
        return dict(wanted)
    by_size = {shape[1:]: level for level, shape in teacher.items()}
    pairs = {s: by_size[shape[1:]] for s, shape in student.items() if shape[1:] in by_size}
    if not pairs:
        raise JobError(
            "teacher and student FPN levels share no spatial size "
            f"(student {student}, teacher {teacher}); name pairs in distill.detection.levels"
        )
    return pairs

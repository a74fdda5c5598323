"""One-stage students (torchvision's FCOS), run step by step beside a two-stage teacher.

``FCOS.forward`` returns only its losses in training; distillation also needs the FPN maps,
the class logits at every point and where the points are. :func:`one_stage_pass` runs the same
stages (transform, backbone + FPN, head, points, FCOS's target assignment and losses) and keeps
them; :func:`teacher_boxes_view` gives what the teacher says about the same images: its FPN
maps and its own detections, each with its box head's logits over the K+1 classes.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from raydistill.config import JobError
from raydistill.detection.models import Targets


def is_one_stage(model: nn.Module) -> bool:
    """An FCOS-like detector: a dense head over points of an anchor generator, no ROI heads."""
    return all(hasattr(model, p) for p in ("transform", "backbone", "head", "anchor_generator"))


@dataclass
class OneStagePass:
    """One training forward of a one-stage student.

    ``losses``: FCOS's ``classification`` (sigmoid focal), ``bbox_regression`` (GIoU) and
    ``bbox_ctrness``; ``features``: FPN level -> [B, C, h, w]; ``class_logits``: [B, A, K+1]
    over the A points of all levels; ``points``: [A, 2] (x, y) centres of the points in pixels
    of the padded batch (the same for every image); ``strides``: [A] each point's level
    stride (its anchor's side); ``per_level``: points per level; ``image_sizes``: per image
    (h, w) after resizing; ``padded_size``: (H, W) of the batch; ``boxes``: ground truth,
    resized.
    """

    losses: dict[str, Tensor]
    features: OrderedDict[str, Tensor]
    class_logits: Tensor
    points: Tensor
    strides: Tensor
    per_level: list[int]
    image_sizes: list[tuple[int, int]]
    padded_size: tuple[int, int]
    boxes: list[Tensor]


def one_stage_pass(model: nn.Module, images: list[Tensor], targets: Targets) -> OneStagePass:
    """FCOS's own training losses plus what distillation needs. ``images``: [3, H_i, W_i] in
    [0, 1]; ``targets``: ``boxes`` [N_i, 4] pixels and ``labels`` [N_i] in 1..K."""
    image_list, targets_t = model.transform(images, targets)
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    maps = list(features.values())
    head_outputs = model.head(maps)
    anchors = model.anchor_generator(image_list, maps)
    per_level = [m.shape[2] * m.shape[3] for m in maps]
    losses = model.compute_loss(targets_t, head_outputs, anchors, per_level)
    points = (anchors[0][:, :2] + anchors[0][:, 2:]) / 2
    return OneStagePass(
        losses=losses,
        features=features,
        class_logits=head_outputs["cls_logits"],
        points=points,
        strides=anchors[0][:, 2] - anchors[0][:, 0],
        per_level=per_level,
        image_sizes=[tuple(s) for s in image_list.image_sizes],
        padded_size=tuple(image_list.tensors.shape[-2:]),
        boxes=[t["boxes"] for t in targets_t],
    )


@dataclass
class TeacherBoxes:
    """The frozen two-stage teacher on a batch: ``features`` (FPN level -> [B, C, h, w]) and
    per image its detections ``boxes`` [D_i, 4] (pixels of the resized image), ``scores``
    [D_i] and its box head's ``logits`` [D_i, K+1] for those boxes (background at 0)."""

    features: OrderedDict[str, Tensor]
    boxes: list[Tensor]
    scores: list[Tensor]
    logits: list[Tensor]


@torch.no_grad()
def teacher_boxes_view(
    model: nn.Module, images: list[Tensor], image_sizes: list[tuple[int, int]]
) -> TeacherBoxes:
    """Run the teacher (eval mode) on the student's images: FPN maps, then its detections
    (``roi_heads`` as at inference: its own score threshold, NMS and box limit), then its box
    head once more on the detected boxes, for their full class distributions (the detection's
    score is one class's probability only). ``image_sizes``: the student's resized sizes,
    which the teacher's must equal (both get the job's ``min_size``/``max_size``)."""
    model.eval()
    image_list, _ = model.transform(images)
    sizes = [tuple(s) for s in image_list.image_sizes]
    if sizes != image_sizes:
        raise JobError(
            f"teacher resizes images to {sizes[:2]}... but the student to "
            f"{image_sizes[:2]}...: give both the same min_size/max_size"
        )
    features = model.backbone(image_list.tensors)
    if isinstance(features, Tensor):
        features = OrderedDict([("0", features)])
    heads = model.roi_heads
    proposals, _ = model.rpn(image_list, features)
    detections, _ = heads(features, proposals, sizes)
    boxes = [d["boxes"] for d in detections]
    pooled = heads.box_head(heads.box_roi_pool(features, boxes, sizes))
    logits, _ = heads.box_predictor(pooled)
    per_image = list(logits.split([len(b) for b in boxes]))
    return TeacherBoxes(features, boxes, [d["scores"] for d in detections], per_image)

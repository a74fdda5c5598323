"""Detection distillation maths and detectors, Ray-free: box masks, FPN imitation, KD on shared
proposals, the level pairing for the torchvision pair the job names, and a few real steps."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from raydistill.config import DetectionDistillConfig, JobError, ModelSpec
from raydistill.detection.coco import read_coco
from raydistill.detection.data import _encode, rows_to_tensors
from raydistill.detection.distiller import DetectionDistiller
from raydistill.detection.models import (
    detector_spec,
    feature_shapes,
    pair_levels,
    student_pass,
    teacher_view,
)
from raydistill.detection.synthetic import write_shapes_coco
from raydistill.distill.detection import box_mask, imitation_loss, level_adapters, proposal_kd_loss
from raydistill.models.specs import build_model


def test_box_mask_covers_the_cells_under_each_box() -> None:
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[10.0, 4.0, 16.0, 6.0]])]
    mask = box_mask(boxes, padded_size=(16, 16), feature_size=(4, 4))  # stride 4
    assert mask.shape == (2, 1, 4, 4)
    assert mask[0, 0].nonzero().tolist() == [[r, c] for r in range(2) for c in range(2)]
    assert mask[1, 0].nonzero().tolist() == [[1, 2], [1, 3]]  # y 4..6 -> row 1; x 10..16 -> 2, 3


def test_imitation_loss_is_weighted_mse_per_cell() -> None:
    torch.manual_seed(0)
    s = {"a": torch.randn(2, 3, 4, 4)}
    t = {"b": torch.randn(2, 3, 4, 4)}
    adapters = level_adapters({"a": "b"}, {"a": 3}, {"b": 3})
    plain = imitation_loss(s, t, {"a": "b"}, adapters)
    assert torch.isclose(plain, ((s["a"] - t["b"]) ** 2).mean())
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.zeros(0, 4)]
    weighted = imitation_loss(s, t, {"a": "b"}, adapters, boxes, (16, 16), foreground_weight=3.0)
    per_cell = ((s["a"] - t["b"]) ** 2).mean(1)
    w = torch.ones(2, 4, 4)
    w[0, :2, :2] = 4.0
    assert torch.isclose(weighted, (w * per_cell).sum() / w.sum())
    assert imitation_loss(t, t, {"b": "b"}, level_adapters({"b": "b"}, {"b": 3}, {"b": 3})) == 0


def test_imitation_adapts_channels_and_size() -> None:
    s = {"0": torch.randn(2, 8, 6, 6, requires_grad=True)}
    t = {"2": torch.randn(2, 16, 3, 3)}
    adapters = level_adapters({"0": "2"}, {"0": 8}, {"2": 16})
    assert isinstance(adapters["0"], nn.Conv2d) and adapters["0"].out_channels == 16
    loss = imitation_loss(s, t, {"0": "2"}, adapters)
    loss.backward()
    assert loss > 0 and s["0"].grad is not None and adapters["0"].weight.grad is not None


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_proposal_kd_matches_the_formula(temperature: float) -> None:
    s = torch.tensor([[0.0, 0.0, 1.0], [2.0, -1.0, 0.0]])
    t = torch.tensor([[math.log(3), 0.0, 0.0], [0.0, 1.0, 0.5]])
    expected = 0.0
    for srow, trow in zip(s.tolist(), t.tolist(), strict=True):
        p = np.exp(np.array(trow) / temperature)
        p /= p.sum()
        q = np.exp(np.array(srow) / temperature)
        q /= q.sum()
        expected += float((p * np.log(p / q)).sum())
    expected = expected / 2 * temperature**2
    assert proposal_kd_loss(s, t, temperature).item() == pytest.approx(expected, rel=1e-5)
    assert proposal_kd_loss(s[:0], t[:0], temperature).item() == 0.0


def test_levels_of_the_named_torchvision_pair_are_paired_by_stride() -> None:
    """fasterrcnn_resnet50_fpn (FPN at strides 4..64) teaching
    fasterrcnn_mobilenet_v3_large_fpn (two levels at stride 32, pool at 64): equal strides
    pair up."""
    size = 128
    teacher = build_model(
        detector_spec(ModelSpec(model="torchvision:fasterrcnn_resnet50_fpn"), size, size), 4
    )
    student = build_model(
        detector_spec(ModelSpec(model="torchvision:fasterrcnn_mobilenet_v3_large_fpn"), size, size),
        4,
    )
    t_shapes, s_shapes = feature_shapes(teacher, size), feature_shapes(student, size)
    assert [t_shapes[k][1] for k in ("0", "1", "2", "3", "pool")] == [32, 16, 8, 4, 2]
    assert [s_shapes[k][1] for k in ("0", "1", "pool")] == [4, 4, 2]
    assert pair_levels(s_shapes, t_shapes) == {"0": "3", "1": "3", "pool": "pool"}
    adapters = level_adapters(
        pair_levels(s_shapes, t_shapes),
        {k: v[0] for k, v in s_shapes.items()},
        {k: v[0] for k, v in t_shapes.items()},
    )
    assert all(isinstance(a, nn.Identity) for a in adapters.values())  # both FPNs: 256 channels
    with pytest.raises(JobError, match="student has no FPN level 'p9'"):
        pair_levels(s_shapes, t_shapes, {"p9": "0"})


def _tiny(backbone: str = "mobilenet_v3_small", size: int = 64) -> nn.Module:
    spec = ModelSpec(
        model="raydistill.models.zoo:small_detector",
        args={
            "backbone": backbone,
            "fpn_channels": 16,
            "head_width": 32,
            "proposals_per_image": 16,
        },
    )
    return build_model(detector_spec(spec, size, size), 4)


def _batch(tmp_path: Path, n: int = 4, size: int = 64):
    paths = write_shapes_coco(tmp_path, train=n, val=1, size=size, seed=1)
    split = read_coco(str(paths["train"][0]), str(paths["train"][1]))
    rows = [_encode(r, size) for r in split.records]
    images, targets, _ = rows_to_tensors({k: [r[k] for r in rows] for k in rows[0]})
    return images, targets


def test_teacher_scores_the_students_proposals(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, targets = _batch(tmp_path)
    student, teacher = _tiny(), _tiny("resnet18")
    student.train()
    s = student_pass(student, images, targets)
    assert set(s.losses) == {
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_classifier",
        "loss_box_reg",
    }
    t = teacher_view(teacher, images, s, own_boxes_above=0.0)
    assert t.class_logits.shape == s.class_logits.shape == (sum(len(p) for p in s.proposals), 4)
    assert len(t.boxes) == len(images)
    assert not t.class_logits.requires_grad


def test_distillation_steps_lower_the_imitation_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, targets = _batch(tmp_path)
    student, teacher = _tiny(), _tiny("resnet18")
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_shapes, t_shapes = feature_shapes(student, 64), feature_shapes(teacher, 64)
    core = DetectionDistiller(
        student,
        teacher,
        config=DetectionDistillConfig(foreground="gt"),
        temperature=2.0,
        alpha=0.5,
        pairs=pair_levels(s_shapes, t_shapes),
        student_channels={k: v[0] for k, v in s_shapes.items()},
        teacher_channels={k: v[0] for k, v in t_shapes.items()},
    )
    assert not any(p is q for p in core.parameters() for q in teacher.parameters())
    optimizer = torch.optim.Adam(core.parameters(), lr=3e-3)
    seen = []
    for _ in range(5):
        core.train()
        out = core(images, targets)
        parts = out.as_floats()
        assert all(math.isfinite(v) for v in parts.values())
        expected = parts["detector"] + 0.5 * parts["classifier"] + 0.5 * parts["soft"]
        assert parts["total"] == pytest.approx(expected + parts["imitation"], rel=1e-4)
        seen.append(parts)
        optimizer.zero_grad()
        out.total.backward()
        optimizer.step()
    assert seen[0]["soft"] > 0 and seen[0]["imitation"] > 0
    assert seen[-1]["imitation"] < seen[0]["imitation"]
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())


def test_without_a_teacher_only_the_detector_losses_count(tmp_path: Path) -> None:
    images, targets = _batch(tmp_path, n=2)
    core = DetectionDistiller(_tiny())
    core.train()
    out = core(images, targets)
    assert out.soft == 0 and out.imitation == 0 and core.alpha == 0.0
    assert torch.isclose(out.total, out.detector + out.classifier)

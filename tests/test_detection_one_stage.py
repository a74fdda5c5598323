"""One-stage (FCOS) students of a two-stage teacher, Ray-free: the KD terms against hand
computations on tiny tensors, the student's and teacher's passes, and the shapes job with an
FCOS student trained a few epochs in-process by the shared loop."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from raydistill.config import DetectionDistillConfig, JobError, ModelSpec, load_job
from raydistill.detection.distiller import OneStageDistiller, distiller_for
from raydistill.detection.models import check_detector, detector_spec, feature_shapes, pair_levels
from raydistill.detection.one_stage import is_one_stage, one_stage_pass, teacher_boxes_view
from raydistill.distill.detection import (
    fcos_points_in_boxes,
    level_adapters,
    masked_imitation_loss,
    point_kd_loss,
    points_in_boxes,
)
from raydistill.models.specs import build_model

ROOT = Path(__file__).resolve().parents[1]


def test_points_take_the_smallest_box_that_holds_them() -> None:
    points = torch.tensor([[2.0, 2.0], [6.0, 6.0], [10.5, 10.5], [12.0, 12.0], [40.0, 1.0]])
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [4.0, 4.0, 8.0, 8.0], [11.0, 11.0, 30.0, 30.0]])
    assert points_in_boxes(points, boxes).tolist() == [0, 1, -1, 2, -1]
    assert points_in_boxes(points, boxes[:0]).tolist() == [-1] * 5


def test_fcos_assignment_keeps_the_points_fcos_trains_as_positives() -> None:
    """torchvision's FCOS rule by hand: level 0 (stride 8, the first: no lower bound) and
    level 1 (stride 16, the last: no upper bound); centre radius 1.5 strides."""
    points = torch.tensor([[4.0, 4.0], [12.0, 12.0], [28.0, 28.0], [48.0, 48.0], [8.0, 8.0]])
    points = torch.cat([points, torch.tensor([[72.0, 72.0]])])
    strides = torch.tensor([8.0] * 4 + [16.0] * 2)
    boxes = torch.tensor([[0.0, 0.0, 24.0, 24.0], [0.0, 0.0, 100.0, 100.0], [0, 0, 160.0, 160]])
    # (28, 28): 16 px from A's centre (> 12), 22 from B's; (8, 8) on level 1: A's farthest
    # side is 16 px, under that level's 64; (72, 72): B's farthest side is 72 and C's 88,
    # both above 64 and both centres within 24 px: the smaller box, B
    index = fcos_points_in_boxes(points, boxes, strides, [4, 2])
    assert index.tolist() == [0, 0, -1, 1, -1, 1]
    assert points_in_boxes(points, boxes).tolist() == [0, 0, 1, 1, 0, 1]  # what it replaces
    assert fcos_points_in_boxes(points, boxes[:0], strides, [4, 2]).tolist() == [-1] * 6


def _binary_kl(p: np.ndarray, q: np.ndarray) -> float:
    return float((p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))).sum())


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_point_kd_is_the_binary_kl_of_the_teachers_box_distribution(temperature: float) -> None:
    """Image 0: two points inside the teacher's box, one outside; image 1: no teacher box."""
    points = torch.tensor([[1.0, 1.0], [5.0, 5.0], [50.0, 50.0]])
    t_boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0]]), torch.zeros(0, 4)]
    t_logits = [torch.tensor([[0.0, 2.0, -1.0]]), torch.zeros(0, 3)]  # background, 2 classes
    s = torch.tensor(
        [[[9.0, 1.0, -2.0], [9.0, -0.5, 0.5], [9.0, 4.0, 4.0]], [[0.0, 3.0, 3.0]] * 3]
    ).requires_grad_(True)
    t = np.array([0.0, 2.0, -1.0]) / temperature
    p = (np.exp(t) / np.exp(t).sum())[1:]  # the teacher's probability of classes 1 and 2
    expected = 0.0
    for row in ([1.0, -2.0], [-0.5, 0.5]):
        q = 1 / (1 + np.exp(-np.array(row) / temperature))
        expected += _binary_kl(p, q)
    expected = expected / 2 * temperature**2  # mean over the 2 assigned points, times T^2
    loss = point_kd_loss(s, points, t_boxes, t_logits, temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    loss.backward()
    # channel 0 (never a target), the point outside and the image without boxes get nothing
    assert s.grad[0, :2, 0].abs().sum() == 0 and s.grad[0, 2].abs().sum() == 0
    assert s.grad[1].abs().sum() == 0 and s.grad[0, :2, 1:].abs().sum() > 0
    # a student matching the teacher's probabilities exactly has (almost) nothing to learn
    match = torch.logit(torch.tensor(p, dtype=torch.float32)) * temperature
    s_match = torch.zeros(2, 3, 3)
    s_match[0, :2, 1:] = match
    assert point_kd_loss(s_match, points, t_boxes, t_logits, temperature).item() < 1e-5
    assert point_kd_loss(s, points, [torch.zeros(0, 4)] * 2, t_logits[1:] * 2, 2.0).item() == 0
    # a smaller, low-scoring box over the same points would take them; above min_score only the
    # confident box teaches, and the term is the hand computation's again
    low_boxes = [torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 6.0, 6.0]]), torch.zeros(0, 4)]
    low_logits = [torch.tensor([[0.0, 2.0, -1.0], [3.0, 0.0, 0.0]]), torch.zeros(0, 3)]
    scores = [torch.tensor([0.9, 0.2]), torch.zeros(0)]
    taken = point_kd_loss(s.detach(), points, low_boxes, low_logits, temperature)
    assert abs(taken.item() - expected) > 1e-3
    kept = point_kd_loss(s.detach(), points, low_boxes, low_logits, temperature, scores, 0.5)
    assert kept.item() == pytest.approx(expected, rel=1e-4)


def _standardised(x: torch.Tensor) -> np.ndarray:
    """Each channel of [B, C, h, w] to mean 0, unbiased std 1 over batch and cells, by hand."""
    a = x.double().numpy().transpose(1, 0, 2, 3).reshape(x.shape[1], -1)  # [C, B*h*w]
    a = (a - a.mean(1, keepdims=True)) / a.std(1, ddof=1, keepdims=True)
    return a.reshape(x.shape[1], x.shape[0], *x.shape[2:]).transpose(1, 0, 2, 3)


def test_masked_imitation_is_half_the_standardised_mse_inside_the_mask() -> None:
    torch.manual_seed(0)
    s = {"a": torch.randn(2, 3, 4, 4), "b": torch.randn(2, 3, 2, 2)}
    t = {"x": torch.randn(2, 3, 4, 4), "y": torch.randn(2, 3, 2, 2)}
    pairs = {"a": "x", "b": "y"}
    adapters = level_adapters(pairs, {"a": 3, "b": 3}, {"x": 3, "y": 3})
    boxes = [torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.zeros(0, 4)]  # padded batch 16 x 16
    loss = masked_imitation_loss(s, t, pairs, adapters, boxes, (16, 16))
    d_fine = ((_standardised(s["a"]) - _standardised(t["x"])) ** 2).mean(1)
    d_coarse = ((_standardised(s["b"]) - _standardised(t["y"])) ** 2).mean(1)
    fine = d_fine[0, :2, :2].sum() / (2 * 4)  # stride 4: 2 x 2 cells under the box
    coarse = d_coarse[0, 0, 0] / (2 * 1)  # stride 8: one cell
    assert loss.item() == pytest.approx((fine + coarse) / 2, rel=1e-5)
    # the scale of the features does not set the term's: a student that is a per-channel
    # affine map of the teacher has nothing to learn, and scaling both maps changes nothing
    gain = torch.tensor([5.0, 0.1, 30.0]).view(1, 3, 1, 1)
    affine = {"a": gain * t["x"] + 3.0, "b": gain * t["y"] - 7.0}
    assert masked_imitation_loss(affine, t, pairs, adapters, boxes, (16, 16)).item() < 1e-8
    big_s = {k: 100.0 * v for k, v in s.items()}
    big_t = {k: 100.0 * v for k, v in t.items()}
    big = masked_imitation_loss(big_s, big_t, pairs, adapters, boxes, (16, 16))
    assert torch.isclose(big, loss)
    # with no box at all the term is 0
    empty = [torch.zeros(0, 4)] * 2
    assert masked_imitation_loss(s, t, pairs, adapters, empty, (16, 16)).item() == 0.0


def _fcos(size: int = 64) -> torch.nn.Module:
    spec = ModelSpec(model="raydistill.models.zoo:small_fcos", args={"fpn_channels": 16})
    return build_model(detector_spec(spec, size, size), 4)


def _teacher(size: int = 64) -> torch.nn.Module:
    spec = ModelSpec(
        model="raydistill.models.zoo:small_detector",
        args={"backbone": "resnet18", "fpn_channels": 16, "head_width": 32},
    )
    return build_model(detector_spec(spec, size, size), 4)


def _batch(tmp_path: Path, n: int = 4, size: int = 64):
    from raydistill.detection.coco import read_coco
    from raydistill.detection.data import _encode, rows_to_tensors
    from raydistill.detection.synthetic import write_shapes_coco

    paths = write_shapes_coco(tmp_path, train=n, val=1, size=size, seed=1)
    split = read_coco(str(paths["train"][0]), str(paths["train"][1]))
    rows = [_encode(r, size) for r in split.records]
    images, targets, _ = rows_to_tensors({k: [r[k] for r in rows] for k in rows[0]})
    return images, targets


def test_fcos_pass_and_the_teachers_boxes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, targets = _batch(tmp_path, n=2)
    student, teacher = _fcos(), _teacher()
    assert is_one_stage(student) and not is_one_stage(teacher)
    check_detector(student, "the student", one_stage=True)
    with pytest.raises(JobError, match="the teacher is FCOS, not a two-stage"):
        check_detector(student, "the teacher")
    student.train()
    # FCOS's own target assignment, caught where its head receives it
    matched: list[torch.Tensor] = []
    head_loss = student.head.compute_loss

    def catch(targets_, outputs, anchors, matched_idxs):
        matched.extend(matched_idxs)
        return head_loss(targets_, outputs, anchors, matched_idxs)

    student.head.compute_loss = catch
    s = one_stage_pass(student, images, targets)
    assert set(s.losses) == {"classification", "bbox_regression", "bbox_ctrness"}
    # fcos_points_in_boxes (the point KD's assignment) is that assignment, on the gt boxes
    assert len(matched) == 2 and all(bool((m >= 0).any()) for m in matched)
    for m, b in zip(matched, s.boxes, strict=True):
        assert torch.equal(fcos_points_in_boxes(s.points, b, s.strides, s.per_level), m)
    shapes = feature_shapes(student, 64)
    assert [shapes[k][1] for k in ("0", "1", "2", "pool")] == [8, 4, 2, 1]  # strides 8..64
    cells = sum(h * w for _, h, w in shapes.values())
    assert s.class_logits.shape == (2, cells, 4) and s.points.shape == (cells, 2)
    assert s.points[0].tolist() == [0.0, 0.0] and float(s.points.max()) < 64
    assert s.per_level == [h * w for _, h, w in shapes.values()]
    assert s.strides.unique().tolist() == [8.0, 16.0, 32.0, 64.0]
    # one image at inference: the head's group norms see the 1 x 1 top level of one image
    student.eval()
    with torch.no_grad():
        assert set(student([images[0]])[0]) == {"boxes", "scores", "labels"}
    t = teacher_boxes_view(teacher, images, s.image_sizes)
    assert len(t.boxes) == len(t.logits) == 2
    assert all(lg.shape == (len(b), 4) for b, lg in zip(t.boxes, t.logits, strict=True))
    assert not any(lg.requires_grad for lg in t.logits)


def test_one_stage_distillation_steps_lower_its_terms(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images, targets = _batch(tmp_path)
    student, teacher = _fcos(), _teacher()
    teacher.roi_heads.score_thresh = 0.0  # an untrained teacher: keep its (low) boxes
    teacher_before = {k: v.clone() for k, v in teacher.state_dict().items()}
    s_shapes, t_shapes = feature_shapes(student, 64), feature_shapes(teacher, 64)
    pairs = pair_levels(s_shapes, t_shapes)
    assert pairs == {"0": "1", "1": "2", "2": "3", "pool": "pool"}  # strides 8, 16, 32, 64
    assert distiller_for(student) is OneStageDistiller
    core = OneStageDistiller(
        student,
        teacher,
        config=DetectionDistillConfig(foreground="gt", teacher_box_score=0.01),
        temperature=2.0,
        alpha=0.5,
        pairs=pairs,
        student_channels={k: v[0] for k, v in s_shapes.items()},
        teacher_channels={k: v[0] for k, v in t_shapes.items()},
    )
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
    for term in ("total", "soft", "imitation"):
        assert seen[-1][term] < seen[0][term], (term, [p[term] for p in seen])
    assert all(torch.equal(v, teacher_before[k]) for k, v in teacher.state_dict().items())


def test_the_shapes_job_with_an_fcos_student_trains_in_process(tmp_path: Path) -> None:
    """jobs/shapes-fcos.yaml validates, and its distilled FCOS student (a frozen teacher
    beside it, as in every train worker) trains through the shared loop: two epochs of one
    batch (the same 4 images), the second's loss below the first's."""
    from local_rows import detection_rows

    from raydistill.detection.scoring import load_images
    from raydistill.detection.synthetic import write_shapes_coco
    from raydistill.models.specs import save_weights
    from raydistill.tasks import get_task
    from raydistill.train.context import LocalContext
    from raydistill.train.loop import run_epochs
    from raydistill.train.spec import StageSpec

    data = write_shapes_coco(tmp_path / "data", train=4, val=1, size=48, seed=0)
    sets = [
        f"data.coco.{split}.{key}={data[split][i]}"
        for split in ("train", "val")
        for i, key in enumerate(("images", "annotations"))
    ]
    small = [
        "data.coco.image_size=48",
        "teacher.args={backbone: resnet18, fpn_channels: 16, head_width: 32}",
        "student.args={fpn_channels: 16, head_convs: 1}",
    ]
    job = load_job(ROOT / "jobs" / "shapes-fcos.yaml", [*sets, *small])
    task = get_task(job)
    job = task.prepare(job)
    splits = task.read_splits(job, lambda _: None)
    shapes = task.check_pair(job, None, splits, log=lambda _: None)
    classes = task.num_classes(splits)
    teacher = build_model(job.teacher, classes, load=False)
    weights = save_weights(teacher, tmp_path / "teacher.pt")
    spec = StageSpec(
        role="student",
        job=job,
        model=job.student,
        train=job.train.model_copy(update={"epochs": 2, "batch_size": 4, "lr": 0.01}),
        num_classes=classes,
        distill=True,
        student_shapes=shapes[0],
        teacher_shapes=shapes[1],
        teacher_weights=str(weights),
    )
    assert type(task.build_core(spec)) is OneStageDistiller
    rows = {k: detection_rows(load_images(splits[k], 48)) for k in ("train", "val")}
    lines: list[str] = []
    ctx = LocalContext(
        rows, log=lines.append, extras=task.loop_extras(job, splits), detail=lambda _: None
    )
    history = run_epochs(task, spec, ctx)
    losses = [h["train_loss"] for h in history]
    assert len(history) == 2 and losses[-1] < losses[0], losses
    assert history[0]["train_imitation"] > 0 and 0 <= history[-1]["val_map50"] <= 1
    epochs = [line for line in lines if line.startswith("[student] epoch ")]
    assert len(epochs) == 2 and " soft " in epochs[0] and " imitation " in epochs[0]

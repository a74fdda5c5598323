"""Hinton, Vinyals & Dean (2015) on Fashion-MNIST: the paper's two MLPs, the jitter that only
the teacher trains with, the job file, and the job end to end on a few hundred real images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from raydistill.config import load_job
from raydistill.data.idx import FASHION_MNIST_DIR, FASHION_MNIST_FILES
from raydistill.models import build_model, count_parameters
from raydistill.models.zoo import RandomShift, hinton_student, hinton_teacher

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "fashion-mnist-hinton.yaml"
REAL = Path(FASHION_MNIST_DIR)
REAL_INSTALLED = all(
    (REAL / f"{stem}.gz").is_file() for pair in FASHION_MNIST_FILES.values() for stem in pair
)


def _linear_sizes(model: nn.Module) -> list[tuple[int, int]]:
    return [(m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)]


def _dropouts(model: nn.Module) -> list[float]:
    return [m.p for m in model.modules() if isinstance(m, nn.Dropout)]


def test_the_factories_build_the_papers_layer_sizes() -> None:
    teacher, student = hinton_teacher(), hinton_student()
    assert _linear_sizes(teacher) == [(784, 1200), (1200, 1200), (1200, 10)]
    assert _linear_sizes(student) == [(784, 800), (800, 800), (800, 10)]
    # dropout on the input and both hidden layers of the teacher; none anywhere in the student
    assert sorted(_dropouts(teacher)) == [0.2, 0.5, 0.5] and _dropouts(student) == []
    assert [m.pixels for m in teacher.modules() if isinstance(m, RandomShift)] == [2]
    assert not any(isinstance(m, RandomShift) for m in student.modules())
    assert count_parameters(teacher) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10
    assert count_parameters(student) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10
    x = torch.rand(3, 1, 28, 28)
    assert teacher.eval()(x).shape == (3, 10) and student.eval()(x).shape == (3, 10)


def test_the_job_validates_and_builds_the_papers_pair() -> None:
    job = load_job(JOB)
    assert job.data.source == "fashion_mnist" and job.data.subset is None
    assert job.data.augment is None  # the jitter is the teacher's own: the student sees clean rows
    assert job.distill.enabled and job.distill.method == "kd" and job.train.baseline
    assert job.distill.temperature.value(0) >= 10  # a high temperature, as in the paper
    assert job.train.weight_decay == 0 and (job.teacher.train.weight_decay or 0) == 0
    teacher, student = build_model(job.teacher, 10), build_model(job.student, 10)
    assert _linear_sizes(teacher) == _linear_sizes(hinton_teacher())
    assert _linear_sizes(student) == _linear_sizes(hinton_student())
    assert _dropouts(teacher) and _dropouts(student) == []  # dropout in the teacher alone


def test_jitter_shifts_by_at_most_its_pixels_and_only_while_training() -> None:
    """Every jittered image is a window of its zero-padded input at an offset within the
    jitter; the offsets vary across a batch; eval mode passes the input through unchanged."""
    torch.manual_seed(0)
    shift = RandomShift(2)
    x = torch.rand(32, 1, 28, 28) + 0.1  # no zero pixels: a window is told apart by its border
    out = shift.train()(x)
    padded = nn.functional.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[i, :, dy : dy + 28, dx : dx + 28], out[i])
        ]
        assert len(hits) == 1, f"image {i} is not one shifted window of its input"
        offsets.add(hits[0])
    assert len(offsets) > 5
    assert torch.equal(shift.eval()(x), x)
    teacher = hinton_teacher().eval()
    assert torch.equal(teacher(x), teacher(x))  # labelling is deterministic: no jitter, no dropout


@pytest.mark.slow
@pytest.mark.skipif(not REAL_INSTALLED, reason=f"dataset-fashion-mnist not installed in {REAL}")
def test_hinton_job_end_to_end_on_a_small_subset(ray_address, tmp_path: Path) -> None:
    """The real job on 0.5% of the real Fashion-MNIST (270 train, 30 val, 50 test images): the
    teacher stage trains the jittered dropout MLP, the teacher labels the train rows once, the
    student learns its soft targets at the job's temperature and the baseline trains alone,
    each for one epoch in this process; the table scores all three on the official test part."""
    from raydistill.pipeline import run_job

    job = load_job(
        JOB,
        [
            "data.subset=0.005",
            f"output.storage_path={tmp_path / 'runs'}",
            "name=hinton-e2e",
            "teacher.train.epochs=1",
            "train.epochs=1",
            "train.batch_size=32",
        ],
    )
    summary = run_job(job, log=print)
    teacher = json.loads((job.run_dir / "teacher" / "history.json").read_text())
    assert len(teacher) == 1 and teacher[0]["train_loss"] > 0
    distilled = summary.stages["student"].history
    assert len(distilled) == 1 and distilled[0]["train_soft"] > 0
    assert [s.name for s in summary.scores] == [
        "teacher",
        "student (distilled)",
        "baseline (student alone)",
    ]
    assert summary.score("teacher").parameters == count_parameters(hinton_teacher())
    assert summary.score("baseline (student alone)").parameters == count_parameters(
        hinton_student()
    )
    test_rows = sum(n for n, _, _ in summary.score("teacher").reliability)
    assert test_rows == 50  # 0.5% of the official 10k test images, stratified

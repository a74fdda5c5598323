"""TemperatureSearch over models and tensors in memory: the teacher labels the data once, every
trial trains its own copy of the student (a real Ray Tune run on the session's local Ray)."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from raydistill import TemperatureSearch


class CountingTeacher(nn.Module):
    """A small MLP that counts the samples it labels."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        self.labelled = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.labelled += len(x)
        return self.net(x)


def _digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    y = torch.tensor(y)
    return (x[:1200], y[:1200]), (x[1200:], y[1200:])


def _trained_teacher(train) -> CountingTeacher:
    torch.manual_seed(0)
    teacher = CountingTeacher()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=3e-3)
    x, y = train
    for _ in range(5):
        for idx in torch.randperm(len(x)).split(64):
            loss = nn.functional.cross_entropy(teacher.net(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return teacher


def _student() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


@pytest.mark.slow
def test_search_over_models_in_memory_labels_once(ray_address, tmp_path):
    train, val = _digits()
    teacher = _trained_teacher(train)
    student = _student()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    result = TemperatureSearch(
        teacher=teacher,
        student=student,
        train=train,
        val=val,
        temperatures=(1, 8),
        alphas=[0.5, 0.9],
        epochs=3,
        grace_period=1,
        max_concurrent_trials=2,
        cpus_per_trial=0.5,
        storage_path=str(tmp_path),
    ).run(trials=4)

    summary = result.summary
    # one teacher pass over train + val served all four trials
    assert teacher.labelled == len(train[0]) + len(val[0]) == summary.teacher_forward_passes
    assert len(summary.rows) == 4 and all(r.error is None for r in summary.rows)
    assert {r.epochs_run for r in summary.rows} <= {1, 2, 3}
    assert 1 <= result.temperature <= 8 and result.alpha in (0.5, 0.9)
    assert result.temperature == summary.best.params["temperature"]
    best = max(r.best_value for r in summary.rows)
    assert summary.best.best_value == best > 0.3  # far above chance (0.1) after 3 epochs
    assert result.table.splitlines()[2].startswith(f"| {summary.best.trial_id} |")
    # the trials trained copies: the caller's student is untouched
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    assert summary.tune_dir.parent == tmp_path
    assert (summary.tune_dir / "results.md").read_text() == result.table + "\n"


def test_models_in_memory_are_checked_before_ray():
    train, val = _digits()
    teacher, student = CountingTeacher(), _student()
    with pytest.raises(ValueError, match="needs a job, or teacher="):
        TemperatureSearch(teacher=teacher, student=student)
    with pytest.raises(ValueError, match=r"unknown setting.*workers_per_trial"):
        TemperatureSearch(
            teacher=teacher, student=student, train=train, val=val, workers_per_trial=2
        )
    with pytest.raises(ValueError, match="0 < low < high"):
        TemperatureSearch(
            teacher=teacher, student=student, train=train, val=val, temperatures=(0, 4)
        )
    with pytest.raises(ValueError, match="not both"):
        TemperatureSearch("jobs/digits.yaml", teacher=teacher)
    from raydistill.tune.in_memory import check_pair

    with pytest.raises(ValueError, match="labels must be class ids"):
        check_pair((train[0], train[1].float()), "train")
    with pytest.raises(ValueError, match="one non-zero length"):
        check_pair((train[0], train[1][:5]), "train")

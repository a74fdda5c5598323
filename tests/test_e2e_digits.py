"""End to end on a real local Ray: teacher stage, teacher pool, 2 DDP workers, table, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from job_files import DIGITS_SHORT as SHORT

from raydistill.config import load_job
from raydistill.data.sources import labelled_rows, load_splits
from raydistill.pipeline import run_job
from raydistill.train.bound import boundness

pytestmark = pytest.mark.slow


def _checkpoints(stage_dir: Path) -> list[Path]:
    return sorted(p for p in stage_dir.glob("checkpoint_*") if p.is_dir())


def test_digits_job_end_to_end(digits_teacher_job):
    """The session's end-to-end job, whose teacher stage ``digits_teacher_job`` trained (the
    teacher the other tests share): the students, the table, the report, and the rerun."""
    job = load_job(digits_teacher_job)
    summary = run_job(job, log=print)

    run_dir = job.run_dir
    assert (run_dir / "job.yaml").is_file()
    assert load_job(run_dir / "job.yaml") == job
    for role in ("teacher", "student", "baseline"):
        stage = run_dir / role
        assert (stage / "model.pt").is_file(), role
        assert 1 <= len(_checkpoints(stage)) <= job.output.keep_checkpoints, role
        history = json.loads((stage / "history.json").read_text())
        assert [h["epoch"] for h in history] == list(range(4 if role == "teacher" else 10)), role
    student_history = summary.stages["student"].history
    assert student_history[-1]["train_loss"] < student_history[0]["train_loss"]
    assert student_history[0]["temperature"] == 4.0 and student_history[0]["alpha"] == 0.5
    assert student_history[0]["train_soft"] > 0  # teacher logits reached the workers
    # the labelled share: the student reads every training row, the baseline its labelled
    # rows, each 10 times (held shards drop at most workers - 1 rows of an epoch)
    train = load_splits(job.data)["train"]
    labelled = labelled_rows(train, job.data.labelled_fraction, job.data.split.seed)
    assert labelled is not None and 0 < labelled < len(train)
    for h in student_history:
        assert len(train) - 1 <= sum(h["class_counts"]) <= len(train)
    for h in summary.stages["baseline"].history:
        assert 10 * labelled - 1 <= sum(h["class_counts"]) <= 10 * labelled

    metrics = json.loads((run_dir / "metrics.json").read_text())
    names = [row["name"] for row in metrics["test"]]
    assert names == ["teacher", "student (distilled)", "baseline (student alone)"]
    assert summary.score("teacher").accuracy > 0.8
    assert summary.score("student (distilled)").accuracy > 0.5  # chance is 0.1
    assert summary.score("teacher").parameters > 5 * summary.score("student (distilled)").parameters
    assert "| teacher |" in (run_dir / "summary.md").read_text()

    # train ends with the report; its table is the run's own scores
    report = (run_dir / "report.md").read_text()
    for score in summary.scores:
        assert f"| {score.name} | {100 * score.accuracy:.2f}% |" in report
    assert (run_dir / "report.html").is_file() and (run_dir / "report" / "schedules.png").is_file()
    # TensorBoard events, one directory per stage, written by the Train controller
    for role in ("teacher", "student", "baseline"):
        events = list((run_dir / "tensorboard" / role).glob("events.out.tfevents.*"))
        assert events and events[0].stat().st_size > 0, role

    # A finished job reruns instantly from its saved stages.
    again = run_job(job, log=print)
    for name in ("teacher", "student (distilled)", "baseline (student alone)"):
        assert again.score(name).accuracy == summary.score(name).accuracy


def test_driver_killed_mid_run_resumes_from_checkpoint(
    ray_address, write_job, tmp_path, digits_teacher
):
    """Kill the CLI driver after its first student checkpoint; rerunning continues from it."""
    changes = {
        **SHORT,
        "teacher.checkpoint": digits_teacher,
        "train.baseline": False,
        "train.epochs": 6,
        "scaling.workers": 1,
    }
    job_file = write_job(changes, name="resume")
    job = load_job(job_file)
    cli = [str(Path(sys.executable).with_name("raydistill")), "train", str(job_file)]
    env = {**os.environ, "RAY_ADDRESS": ray_address}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        cli, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    stage = job.run_dir / "student"
    deadline = time.monotonic() + 240
    while not _checkpoints(stage) and time.monotonic() < deadline and first.poll() is None:
        time.sleep(0.5)
    assert _checkpoints(stage), (tmp_path / "first.log").read_text()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    assert not (stage / "model.pt").exists()  # the killed run never looked finished

    second = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from the checkpoint of epoch" in second.stdout + second.stderr
    history = json.loads((stage / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(6))
    assert "student (distilled)" in second.stdout


def test_teacher_pool_streams_every_epoch(ray_address, write_job, digits_teacher):
    """``teacher_pass: per_epoch`` runs the actor pool inside each epoch's stream."""
    changes = {
        **SHORT,
        "teacher.checkpoint": digits_teacher,
        "distill.teacher_pass": "per_epoch",
        "train.epochs": 2,
        "train.baseline": False,
    }
    summary = run_job(load_job(write_job(changes, name="streamed")), log=print)
    history = summary.stages["student"].history
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(h["train_soft"] > 0 for h in history)
    assert history[1]["train_loss"] < history[0]["train_loss"]
    # the seconds the trainers waited for the pool's batches, and the verdict they give
    assert all(0.0 <= h["wait_s"] <= h["epoch_s"] for h in history)
    assert boundness(history) is not None


@pytest.mark.parametrize(("features_from", "dtype"), [("pool", "float16"), ("worker", "float32")])
def test_feature_distillation_weighting_schedules_and_early_stop(
    ray_address, write_job, digits_teacher, features_from, dtype
):
    """Tapped teacher features travel with each row (or come from a frozen teacher copy in the
    worker); adapters, schedules, dynamic weighting and early stopping run."""
    changes = {
        **SHORT,
        "teacher.checkpoint": digits_teacher,
        "distill.feature_layers": [{"student": "features.7", "teacher": "features.7"}],
        "distill.feature_weight": 1.0,
        "distill.features_from": features_from,
        "distill.feature_dtype": dtype,
        "distill.weighting": "confidence",
        "distill.temperature": {
            "kind": "step",
            "start": 6.0,
            "step": -2.0,
            "every": 1,
            "floor": 2.0,
        },
        "distill.alpha": {"kind": "linear", "start": 0.9, "end": 0.5},
        "train.epochs": 6,
        "train.early_stopping": {"monitor": "val_acc", "patience": 2, "min_delta": 1.0},
        "train.baseline": False,
        "scaling.workers": 1,
    }
    summary = run_job(load_job(write_job(changes, name=f"features-{features_from}")), log=print)
    history = summary.stages["student"].history
    # val_acc (at most 1) can never improve on the first epoch's by more than 1, so patience 2
    # stops after epoch 3 of 6. (min_delta 0.5 did not ensure it: a first epoch at 0.21 was
    # beaten by 0.79 at the second.)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert history[-1]["stopped_early"] == 1.0
    assert [h["temperature"] for h in history] == [6.0, 4.0, 2.0]
    assert history[0]["alpha"] == 0.9 and history[1]["alpha"] == pytest.approx(0.9 - 0.4 / 5)
    assert all(h["train_feature"] > 0 for h in history)
    assert history[-1]["train_feature"] < history[0]["train_feature"]
    assert summary.score("student (distilled)").accuracy > 0.2

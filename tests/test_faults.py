"""Faults survived on a real local Ray (issue #8, items 1 and 2).

A train worker process killed mid-run: Ray Train restarts the worker group
(``scaling.max_failures``) from the latest checkpoint, the stage ends with the same epochs and
its metrics match an uninterrupted run of the same job and seed. A teacher actor killed while
it labels an epoch: Ray Data restarts it and retries its batch, and the trainer still receives
every training row exactly once per epoch (per-class row counts equal the split's).

The processes are found with Ray's State API and killed with SIGKILL, as a crash or the OOM
killer would.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from counting_teacher import samples_labelled

from raydistill.config import ModelSpec, load_job
from raydistill.data.sources import load_splits
from raydistill.models import build_model, save_weights
from raydistill.pipeline import run_job
from raydistill.train.state import STATE_FILE

pytestmark = pytest.mark.slow

TIMING = {"samples_per_s", "epoch_s", "startup_s", "wait_s", "started_at_epoch"}


def _without(epoch: dict) -> dict:
    return {k: v for k, v in epoch.items() if k not in TIMING}


def _alive_pids(class_part: str) -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(
        filters=[("state", "=", "ALIVE")], detail=True, limit=10_000, raise_on_missing_output=False
    )
    return [a.pid for a in actors if class_part in (a.class_name or "") and a.pid]


class Killer(threading.Thread):
    """Once ``ready()`` holds, SIGKILLs the first process ``pick()`` names; records its pid."""

    def __init__(self, ready: Callable[[], bool], pick: Callable[[], list[int]]) -> None:
        super().__init__(daemon=True)
        self.ready, self.pick = ready, pick
        self.killed: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.ready():
                pids = self.pick()
                if pids:
                    os.kill(pids[0], signal.SIGKILL)
                    self.killed.append(pids[0])
                    return
            time.sleep(0.05)


def _teacher_file(tmp_path: Path, spec: ModelSpec) -> str:
    torch.manual_seed(1)
    return str(save_weights(build_model(spec, 10, load=False), tmp_path / "teacher.pt"))


def test_a_killed_train_worker_restarts_from_the_latest_checkpoint(write_job, single_worker_run):
    # the uninterrupted reference: the session's single-worker run of the same job and seed
    changes = single_worker_run["changes"]
    assert changes["scaling.max_failures"] == 1 and changes["train.epochs"] == 4
    reference = single_worker_run["summary"]

    job = load_job(write_job(changes, name="worker-killed"))
    stage = job.run_dir / "student"
    killer = Killer(
        ready=lambda: any((p / STATE_FILE).is_file() for p in stage.glob("checkpoint_*")),
        pick=lambda: _alive_pids("RayTrainWorker"),
    )
    killer.start()
    try:
        summary = run_job(job, log=print)
    finally:
        killer.stop.set()
        killer.join(10)
    assert killer.killed, "no train worker was killed"

    history = summary.stages["student"].history
    assert [h["epoch"] for h in history] == [0, 1, 2, 3]
    starts = [h["started_at_epoch"] for h in history]
    # the epochs after the kill ran in a new worker group that resumed from a checkpoint
    resumed_at = max(starts)
    assert 1 <= resumed_at <= 3, starts
    assert starts == [0] * resumed_at + [resumed_at] * (4 - resumed_at), starts
    # Before the kill: the very numbers of the run nobody killed (one worker is deterministic,
    # test_determinism.py). After it: the restored run continues with the checkpoint's
    # weights, optimizer, schedule and RNG state; small differences (the data stream restarts
    # at the epoch) stay within tolerance.
    expected = reference.stages["student"].history
    for got, want in zip(history[:resumed_at], expected[:resumed_at], strict=True):
        assert _without(got) == _without(want)
    last, want = history[-1], expected[-1]
    assert last["val_acc"] == pytest.approx(want["val_acc"], abs=0.03), (last, want)
    assert last["train_loss"] == pytest.approx(want["train_loss"], rel=0.1), (last, want)
    name = "student (distilled)"
    assert summary.score(name).accuracy == pytest.approx(reference.score(name).accuracy, abs=0.03)


def test_a_killed_teacher_actor_is_replaced_and_no_row_is_lost_or_repeated(
    ray_address, write_job, tmp_path
):
    counts = tmp_path / "counts"
    counts.mkdir()
    teacher = ModelSpec(
        model="counting_teacher:slow_counting_cnn",
        args={"count_dir": str(counts), "width": 8, "delay_s": 0.1},
    )
    changes = {
        "teacher.model": teacher.model,
        "teacher.args": teacher.args,
        "teacher.checkpoint": _teacher_file(tmp_path, teacher),
        "distill.teacher_pass": "per_epoch",  # the pool labels inside every epoch's stream
        "train.epochs": 2,
        "train.baseline": False,
        "scaling.workers": 1,
        "scaling.teacher_pool": {"min_actors": 1, "max_actors": 1, "batch_size": 32},
        "output.report": False,
    }
    job = load_job(write_job(changes, name="teacher-killed"))
    # the driver's dry forward labels one sample; the kill waits for the pool to be well
    # into the first epoch's training rows
    killer = Killer(
        ready=lambda: samples_labelled(counts) >= 1 + 4 * 32,
        pick=lambda: [
            pid for pid in _alive_pids("TeacherPredictor") if (counts / f"{pid}.txt").is_file()
        ],
    )
    killer.start()
    try:
        summary = run_job(job, log=print)
    finally:
        killer.stop.set()
        killer.join(10)
    assert killer.killed, "no teacher actor was killed"
    assert (counts / f"{killer.killed[0]}.txt").is_file()  # it had been labelling

    splits = load_splits(job.data)
    train, val = splits["train"], splits["val"]
    per_class = np.bincount(train.labels, minlength=train.num_classes).tolist()
    history = summary.stages["student"].history
    assert [h["epoch"] for h in history] == [0, 1]
    for h in history:  # every training row reached the trainer once, in both epochs
        assert h["class_counts"] == per_class, (h["epoch"], h["class_counts"], per_class)
        assert h["train_soft"] > 0
    # the teacher labelled at least every row of both epochs (a retried batch counts twice
    # there, but reaches the trainer once)
    assert samples_labelled(counts) >= 2 * (len(train) + len(val))

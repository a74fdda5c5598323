"""Teacher-bound or student-bound (raydistill/train/bound.py), Ray-free: the batch-wait timer
on a fake clock and the verdict from an epoch history's figures."""

from __future__ import annotations

import pytest

from raydistill.train import bound
from raydistill.train.bound import Boundness, WaitTimer, boundness


def test_the_timer_sums_only_the_time_spent_inside_next(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(bound.time, "perf_counter", lambda: clock[0])

    def slow_batches():
        for i in range(3):
            clock[0] += 2.0  # the pool takes 2 s to hand over each batch
            yield i
        clock[0] += 0.5  # and 0.5 s to say it is done

    waits = WaitTimer()
    seen = []
    for batch in waits.wrap(slow_batches()):
        clock[0] += 10.0  # the step itself: not a wait
        seen.append(batch)
    assert seen == [0, 1, 2]
    assert waits.wait_s == pytest.approx(6.5)


def test_a_large_wait_share_is_teacher_bound_and_a_small_one_student_bound():
    starved = [
        {"epoch": 0, "wait_s": 3.0, "epoch_s": 10.0},
        {"epoch": 1, "wait_s": 4.0, "epoch_s": 10.0},
    ]
    verdict = boundness(starved)
    assert verdict is not None and verdict.verdict == "teacher-bound"
    assert verdict.wait_share == pytest.approx(0.35)
    line = verdict.line("student", "per_epoch")
    assert line.startswith("[student] teacher-bound (teacher_pass: per_epoch)")
    assert "7.0s of 20.0s" in line and "35%" in line

    fed = Boundness(wait_s=0.5, epoch_s=10.0)
    assert fed.verdict == "student-bound"
    assert "student-bound" in fed.line("student", "once")


def test_a_history_without_wait_figures_has_no_verdict():
    assert boundness([{"epoch": 0, "epoch_s": 4.0}]) is None
    assert boundness([]) is None
    assert Boundness(wait_s=0.0, epoch_s=0.0).verdict == "student-bound"

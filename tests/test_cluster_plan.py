"""The paper cluster planner (raydistill/cluster_plan.py and benchmarks/cluster_plan.py),
Ray-free: the formula on hand-worked numbers and the student rate read from a history."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from raydistill.cluster_plan import fed_student_rate, plan_cluster

ROOT = Path(__file__).resolve().parents[1]


def test_the_pool_is_sized_to_feed_the_students_with_headroom():
    # 32 workers x 100 rows/s = 3200 rows/s; 1.1 x 3200 / 250 = 14.08 -> 15 actors
    plan = plan_cluster(
        teacher_rate=250.0,
        student_rate=100.0,
        student_workers=32,
        actors_per_teacher_node=4,
        workers_per_student_node=8,
    )
    assert plan.teacher_actors == 15
    assert (plan.teacher_nodes, plan.student_nodes) == (4, 4)
    assert plan.demand_rows_per_s == pytest.approx(3200.0)
    assert plan.throughput_rows_per_s == pytest.approx(3200.0)  # 15 x 250 > 3200: fed
    assert plan.lines()[0].startswith("formula: D = W*s")


def test_exact_fits_do_not_round_up_and_efficiency_scales_throughput():
    plan = plan_cluster(
        teacher_rate=0.1, student_rate=0.4, student_workers=1, headroom=1.0, ddp_efficiency=0.5
    )
    assert plan.teacher_actors == 4  # 0.4 / 0.1 is 4.000000000000001 in floats
    assert plan.throughput_rows_per_s == pytest.approx(0.2)


def test_bad_rates_are_refused():
    with pytest.raises(ValueError, match="rates must be positive"):
        plan_cluster(teacher_rate=0.0, student_rate=1.0, student_workers=1)
    with pytest.raises(ValueError, match="headroom"):
        plan_cluster(teacher_rate=1.0, student_rate=1.0, student_workers=1, headroom=0.5)


def test_the_fed_student_rate_leaves_out_the_wait():
    history = [
        # 2 workers, 10 s epoch at 40 rows/s (400 rows, 200 each), 5 s waiting: 40 rows/s fed
        {"epoch": 0, "samples_per_s": 40.0, "epoch_s": 10.0, "wait_s": 5.0, "workers": 2},
        {"epoch": 1, "samples_per_s": 80.0, "epoch_s": 5.0, "wait_s": 0.0, "workers": 2},
    ]
    # (200 + 200) rows per worker over (5 + 5) s not waiting
    assert fed_student_rate(history) == pytest.approx(40.0)
    with pytest.raises(ValueError, match="wait_s"):
        fed_student_rate([{"epoch": 0, "samples_per_s": 1.0, "epoch_s": 1.0}])


def test_the_script_prints_the_plan_from_a_history(tmp_path):
    history = tmp_path / "history.json"
    history.write_text(json.dumps([{"samples_per_s": 50.0, "epoch_s": 2.0, "wait_s": 1.0}]))
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/cluster_plan.py"), "--student-gpus", "4",
         "--teacher-rate", "110", "--history", str(history)],
        capture_output=True, text=True, check=True, env={"PYTHONPATH": str(ROOT)},
    ).stdout
    # fed rate 100 rows/s per worker; 1.1 x 400 / 110 = 4 actors
    assert "100.0 rows/s per worker" in out
    assert "teacher pool 4 actor(s)" in out
    assert "expected throughput 400.0 rows/s" in out

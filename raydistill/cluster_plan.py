"""Size a cluster for online distillation on paper, from measured rates.

Inputs are two rates measured on a small run: ``t``, rows/s one teacher actor labels, and
``s``, rows/s one student worker trains when it never waits for batches. For ``W`` student
workers (one per GPU) the plan is::

    demand      D = W * s                       rows/s the students consume when fed
    pool size   A = ceil(headroom * D / t)      actors, headroom >= 1 absorbs rate jitter
    nodes       ceil(A / actors_per_teacher_node) teacher, ceil(W / workers_per_student_node)
                student
    throughput  X = min(D, A * t) * ddp_efficiency   rows/s

``ddp_efficiency`` (<= 1) is what gradient all-reduce costs past one worker; measure it from a
2-worker run's ``samples_per_s`` over twice one worker's, or leave it at 1 for an upper bound.

A run's ``history.json`` gives ``s``: an epoch's ``samples_per_s * epoch_s / (epoch_s - wait_s)
/ workers`` is what each worker trained per second of not waiting (``wait_s``: the seconds it
was blocked in the batch iterator, see :mod:`raydistill.train.bound`). ``t`` comes from
``raydistill check-teacher`` (its per-thread teacher throughput) or a teacher-bound run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

FORMULA = (
    "D = W*s; A = ceil(headroom*D/t); teacher nodes = ceil(A/actors_per_node); "
    "student nodes = ceil(W/workers_per_node); X = min(D, A*t)*ddp_efficiency"
)


@dataclass(frozen=True)
class ClusterPlan:
    """A target cluster's pool size, node counts and expected throughput (rows/s)."""

    student_workers: int
    teacher_actors: int
    student_nodes: int
    teacher_nodes: int
    demand_rows_per_s: float
    throughput_rows_per_s: float

    def lines(self) -> list[str]:
        return [
            f"formula: {FORMULA}",
            f"student workers {self.student_workers} on {self.student_nodes} student node(s); "
            f"teacher pool {self.teacher_actors} actor(s) on {self.teacher_nodes} teacher node(s)",
            f"students consume {self.demand_rows_per_s:,.1f} rows/s when fed; expected "
            f"throughput {self.throughput_rows_per_s:,.1f} rows/s",
        ]


def plan_cluster(
    teacher_rate: float,
    student_rate: float,
    student_workers: int,
    actors_per_teacher_node: int = 1,
    workers_per_student_node: int = 1,
    headroom: float = 1.1,
    ddp_efficiency: float = 1.0,
) -> ClusterPlan:
    """The plan of the module docstring's formula; rates in rows/s (per actor, per worker)."""
    if teacher_rate <= 0 or student_rate <= 0:
        raise ValueError("rates must be positive rows/s")
    if min(student_workers, actors_per_teacher_node, workers_per_student_node) < 1:
        raise ValueError("workers and per-node counts must be at least 1")
    if headroom < 1 or not 0 < ddp_efficiency <= 1:
        raise ValueError("headroom must be >= 1 and ddp_efficiency in (0, 1]")
    demand = student_workers * student_rate
    # round away float noise first (4.000000001 actors is 4, not 5)
    actors = max(1, math.ceil(round(headroom * demand / teacher_rate, 9)))
    return ClusterPlan(
        student_workers=student_workers,
        teacher_actors=actors,
        student_nodes=math.ceil(student_workers / workers_per_student_node),
        teacher_nodes=math.ceil(actors / actors_per_teacher_node),
        demand_rows_per_s=demand,
        throughput_rows_per_s=min(demand, actors * teacher_rate) * ddp_efficiency,
    )


def fed_student_rate(history: Sequence[dict[str, Any]]) -> float:
    """Rows/s one worker trained per second it was not waiting for batches, over the epochs
    of ``history`` (a stage's history.json) that recorded ``wait_s``."""
    rows = busy = 0.0
    for m in history:
        if "wait_s" not in m:
            continue
        rows += float(m["samples_per_s"]) * float(m["epoch_s"]) / max(int(m.get("workers", 1)), 1)
        busy += float(m["epoch_s"]) - float(m["wait_s"])
    if busy <= 0:
        raise ValueError("the history has no epoch with wait_s (run it with this version)")
    return rows / busy

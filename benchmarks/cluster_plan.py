"""Plan a target cluster for online distillation from measured rates (on paper, no Ray).

    .venv/bin/python benchmarks/cluster_plan.py --student-gpus 32 --teacher-rate 400 \\
        --history runs/digits/student/history.json --actors-per-node 8 --workers-per-node 8

``--teacher-rate``: rows/s one teacher actor labels (``raydistill check-teacher`` prints it per
CPU thread; on GPUs measure a teacher-bound run). The student's fed rate per worker comes from
``--history`` (a distilled stage's history.json, see raydistill.cluster_plan.fed_student_rate)
or ``--student-rate``. The formula (printed first):

    D = W*s; A = ceil(headroom*D/t); teacher nodes = ceil(A/actors_per_node);
    student nodes = ceil(W/workers_per_node); X = min(D, A*t)*ddp_efficiency
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raydistill.cluster_plan import fed_student_rate, plan_cluster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--student-gpus", type=int, required=True, help="student workers W")
    parser.add_argument("--teacher-rate", type=float, required=True, help="rows/s per actor t")
    rate = parser.add_mutually_exclusive_group(required=True)
    rate.add_argument("--student-rate", type=float, help="fed rows/s per student worker s")
    rate.add_argument("--history", type=Path, help="a distilled stage's history.json")
    parser.add_argument("--actors-per-node", type=int, default=1)
    parser.add_argument("--workers-per-node", type=int, default=1)
    parser.add_argument("--headroom", type=float, default=1.1)
    parser.add_argument("--ddp-efficiency", type=float, default=1.0)
    args = parser.parse_args()

    student_rate = args.student_rate
    if student_rate is None:
        student_rate = fed_student_rate(json.loads(args.history.read_text()))
        print(f"student rate from {args.history}: {student_rate:,.1f} rows/s per worker")
    plan = plan_cluster(
        teacher_rate=args.teacher_rate,
        student_rate=student_rate,
        student_workers=args.student_gpus,
        actors_per_teacher_node=args.actors_per_node,
        workers_per_student_node=args.workers_per_node,
        headroom=args.headroom,
        ddp_efficiency=args.ddp_efficiency,
    )
    print("\n".join(plan.lines()))


if __name__ == "__main__":
    main()

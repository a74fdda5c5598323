"""The one-pass teacher (``teacher_pass: once``) over the quickstart's splits, side by side.

Three ways in one Ray session (started as ``raydistill train`` starts it), in turn, ``--rounds``
times: ``pool`` (what once did before: a Ray Data actor pool per split, materialized together,
then counted), ``actors`` (teacher actors fed by plain actor calls, started by the pass) and
``early`` (the same actors started ``--early-s`` seconds before the pass, as a job does when it
starts them while an earlier stage runs). The teacher has random weights (speed only).

    .venv/bin/python benchmarks/teacher_once.py jobs/digits.yaml --rounds 2

The last line: ``ratios: actors/pool=<x> early/pool=<y>`` (median seconds).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", nargs="?", default="jobs/digits.yaml")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--early-s", type=float, default=10.0)
    args = parser.parse_args()

    import torch

    from raydistill.config import load_job
    from raydistill.models import build_model
    from raydistill.runtime import ray_session
    from raydistill.tasks import get_task
    from raydistill.teacher.passes import STRATEGIES, materialize_together, start_teacher_actors
    from raydistill.teacher.pool import attach_teacher

    job = load_job(args.job)
    task = get_task(job)
    job = task.prepare(job)
    splits = task.read_splits(job, print)
    classes = task.num_classes(splits)
    weights = Path(tempfile.mkdtemp()) / "teacher.pt"
    torch.save(build_model(job.teacher, classes, load=False).state_dict(), weights)
    seconds: dict[str, list[float]] = {"pool": [], "actors": [], "early": []}
    with ray_session(job):
        for _ in range(args.rounds):
            for way in seconds:
                datasets = task.datasets(job, splits, job.student, distill=True)
                if way == "early":
                    start_teacher_actors(job)
                    time.sleep(args.early_s)
                started = time.perf_counter()
                if way == "pool":
                    lazy = {
                        k: attach_teacher(ds, job, weights, classes) for k, ds in datasets.items()
                    }
                    rows = sum(ds.count() for ds in materialize_together(lazy).values())
                    print(f"[teacher] one pass over {rows} rows (Ray Data pools)")
                else:
                    STRATEGIES["once"].attach(job, datasets, weights, splits, classes, print)
                seconds[way].append(time.perf_counter() - started)
                print(f"{way}: {seconds[way][-1]:.2f}s", flush=True)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    for way, value in median.items():
        print(f"{way:>7}: median {value:.2f}s over {len(seconds[way])} ({seconds[way]})")
    print(
        f"ratios: actors/pool={median['actors'] / median['pool']:.2f} "
        f"early/pool={median['early'] / median['pool']:.2f}"
    )


if __name__ == "__main__":
    main()

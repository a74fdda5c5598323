"""Epoch throughput of student-only, online and offline distillation, and teacher-pool scaling.

    .venv/bin/python benchmarks/throughput.py jobs/digits.yaml --set teacher.args.width=128

Side by side in one run on one local Ray:
- samples/s of a training epoch (median over epochs after the first, 1 train worker) for the
  student alone, the teacher pool streaming inside every epoch (``per_epoch``), the teacher
  outputs computed once in memory (``once``) and read from the Parquet cache (``cache``);
- samples/s of the cache pass (``raydistill cache``) with 1, 2 and 4 teacher actors.
A heavier teacher (``teacher.args.width``) makes the teacher's share visible.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from raydistill.config import load_job
from raydistill.data.sources import load_splits
from raydistill.pipeline import fit_student, fit_teacher, prepare_run_dir
from raydistill.runtime import ray_session
from raydistill.teacher.cache import write_cache


def epoch_rate(history: list[dict[str, float]]) -> float:
    later = history[1:] or history
    return statistics.median(h["samples_per_s"] for h in later)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument(
        "--modes", nargs="+", default=["student-only", "per_epoch", "once", "cache"]
    )
    parser.add_argument("--actors", type=int, nargs="*", default=[1, 2, 4])
    parser.add_argument(
        "--pool-views",
        type=int,
        default=8,
        help="copies of the training set in the cache pass, so the pool has work",
    )
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="rd-throughput-"))

    def job_for(name: str, *extra: str):
        return load_job(
            args.job,
            [
                *args.overrides,
                f"output.storage_path={storage}",
                f"name={name}",
                f"train.epochs={args.epochs}",
                "scaling.workers=1",
                "train.baseline=false",
                *extra,
            ],
        )

    base = job_for("teacher", "teacher.train.epochs=2")
    splits = load_splits(base.data)
    with ray_session(
        base.model_copy(
            update={
                "scaling": base.scaling.model_copy(
                    update={
                        "teacher_pool": base.scaling.teacher_pool.model_copy(
                            update={"max_actors": 4}
                        )
                    }
                )
            }
        )
    ):
        prepare_run_dir(base, True, print)
        weights = fit_teacher(base, splits, print)
        rates: dict[str, float] = {}
        for mode in args.modes:
            extra = [f"teacher.checkpoint={weights}"]
            extra += (
                ["distill.enabled=false"]
                if mode == "student-only"
                else [f"distill.teacher_pass={mode}"]
            )
            job = job_for(f"mode-{mode}", *extra)
            prepare_run_dir(job, True, print)
            if mode == "cache":
                write_cache(job, weights, splits, job.cache_dir, print)
            role = "baseline" if mode == "student-only" else "student"
            rates[mode] = epoch_rate(fit_student(job, splits, role, weights, print).history)

        pool: dict[int, float] = {}
        for actors in args.actors:
            job = job_for(
                f"pool-{actors}",
                f"teacher.checkpoint={weights}",
                f"scaling.teacher_pool.min_actors={actors}",
                f"scaling.teacher_pool.max_actors={actors}",
                f"data.augment={{views: {args.pool_views}, ops: []}}",
            )
            started = time.perf_counter()
            manifest = write_cache(job, weights, splits, job.cache_dir, print)
            pool[actors] = manifest["teacher_forward_passes"] / (time.perf_counter() - started)

    print(
        f"\nepoch throughput, 1 train worker, {os.cpu_count()} cores "
        f"(teacher {base.teacher.model} {base.teacher.args})"
    )
    print("| mode | samples/s | vs student-only |\n|---|---:|---:|")
    for mode, rate in rates.items():
        print(f"| {mode} | {rate:.0f} | {rate / rates.get('student-only', rate):.2f}x |")
    if pool:
        print("\ncache pass (teacher forward over train+val, incl. Parquet write)")
        print("| actors | samples/s | vs the first |\n|---:|---:|---:|")
    for actors, rate in pool.items():
        print(f"| {actors} | {rate:.0f} | {rate / next(iter(pool.values())):.2f}x |")


if __name__ == "__main__":
    main()

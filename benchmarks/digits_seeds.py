"""Distilled student vs the same student alone, over several seeds, through the real pipeline.

    .venv/bin/python benchmarks/digits_seeds.py jobs/digits.yaml --seeds 0 1 2

Trains the teacher once, then for each seed the distilled student and the baseline, and prints
mean +- std test accuracy (the split is fixed by data.split.seed, so every seed sees the same
test set) and the difference between them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from raydistill.config import load_job
from raydistill.pipeline import run_job, run_teacher
from raydistill.runtime import ray_session


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--storage", type=Path, default=None)
    args = parser.parse_args()
    storage = args.storage or Path(tempfile.mkdtemp(prefix="rd-bench-"))

    base = load_job(args.job, [*args.overrides, f"output.storage_path={storage}"])
    started = time.perf_counter()
    rows: dict[str, list[float]] = {}
    with ray_session(base):
        teacher_weights = run_teacher(base)
        for seed in args.seeds:
            job = load_job(
                args.job,
                [
                    *args.overrides,
                    f"output.storage_path={storage}",
                    f"name={base.name}-seed{seed}",
                    f"seed={seed}",
                    f"teacher.checkpoint={teacher_weights}",
                    "train.baseline=true",
                ],
            )
            summary = run_job(job)
            for s in summary.scores:
                rows.setdefault(s.name, []).append(100 * s.accuracy)

    def fmt(values: list[float]) -> str:
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.2f} +- {spread:.2f}"

    print(
        f"\n{base.name}: test accuracy (%) over seeds {args.seeds}, "
        f"{time.perf_counter() - started:.0f}s in all"
    )
    print("| model | mean +- std | per seed |\n|---|---:|---|")
    for name, values in rows.items():
        print(f"| {name} | {fmt(values)} | {', '.join(f'{v:.2f}' for v in values)} |")
    kd, alone = rows["student (distilled)"], rows["baseline (student alone)"]
    gain = [a - b for a, b in zip(kd, alone, strict=True)]
    print(
        f"\ndistilled minus alone: {fmt(gain)} points "
        f"({'distillation wins' if statistics.mean(gain) > 0 else 'distillation does NOT win'})"
    )


if __name__ == "__main__":
    main()

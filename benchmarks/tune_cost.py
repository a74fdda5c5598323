"""Cost of an N-trial temperature search: one shared teacher pass vs a teacher pass per trial.

    .venv/bin/python benchmarks/tune_cost.py jobs/digits-tune.yaml --trials 4

Side by side in one run on one local Ray, with the same teacher (trained first, not counted):
- raydistill: the teacher labels train+val once (the Parquet cache, built inside the timed
  search), every trial reads it;
- per-trial teacher: each trial runs its own teacher pass (``tune.shared_teacher: false``), as
  single-process frameworks do when each trial is a separate run.
Both run the same N trials to the end (FIFO scheduler), so only the teacher's cost differs. The
teacher forward passes come from the searches' own accounting. A heavier teacher
(``--set teacher.args.width=128``) makes the teacher's share larger.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from raydistill.config import load_job
from raydistill.data.sources import load_splits
from raydistill.pipeline import fit_teacher, prepare_run_dir
from raydistill.tune.search import planned_tune_cpus, run_tune


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial")
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="rd-tune-cost-"))

    def job_for(name: str, *extra: str):
        return load_job(
            args.job,
            [
                *args.overrides,
                f"output.storage_path={storage}",
                f"name={name}",
                f"tune.num_samples={args.trials}",
                f"tune.epochs={args.epochs}",
                "tune.scheduler=fifo",
                *extra,
            ],
        )

    import ray

    base = job_for("teacher")
    ray.init(num_cpus=planned_tune_cpus(job_for("x", "tune.shared_teacher=false")))
    from raydistill.runtime import quiet_data

    quiet_data()
    prepare_run_dir(base, False, print)
    weights = fit_teacher(base, load_splits(base.data), print)

    rows = []
    for label, shared in (("raydistill (one shared pass)", "true"), ("per-trial teacher", "false")):
        job = job_for(
            f"search-{shared}", f"teacher.checkpoint={weights}", f"tune.shared_teacher={shared}"
        )
        started = time.perf_counter()
        summary = run_tune(job, log=print)
        rows.append((label, summary.teacher_forward_passes, time.perf_counter() - started))
        best = summary.best.best_value
        print(f"[bench] {label}: best {summary.metric} {best:.4f}")

    ours_passes, ours_s = rows[0][1], rows[0][2]
    teacher = base.teacher.model.split(":")[-1] + f" {base.teacher.args}"
    print(
        f"\n{args.trials}-trial search, {args.epochs} epochs per trial, teacher {teacher}, "
        f"{ray.cluster_resources().get('CPU', 0):.0f} logical CPUs"
    )
    print("| search | teacher forward passes | wall time | passes vs ours | time vs ours |")
    print("|---|---:|---:|---:|---:|")
    for label, passes, seconds in rows:
        print(
            f"| {label} | {passes:,} | {seconds:.0f} s | {passes / max(ours_passes, 1):.1f}x | "
            f"{seconds / ours_s:.2f}x |"
        )
    ray.shutdown()


if __name__ == "__main__":
    main()

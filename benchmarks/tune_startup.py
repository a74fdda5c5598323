"""Per-trial start-up of a search: trials in their own process vs each on Ray Train.

    .venv/bin/python benchmarks/tune_startup.py jobs/digits-tune.yaml --trials 4

Side by side on one local Ray, with one teacher (seeded random weights: this measures start-up,
not learning) and one shared teacher cache: the same N-trial FIFO search (``--epochs`` per
trial, one worker per trial) twice, first with every trial a ``TorchTrainer`` run (as before
in-process trials), then with trials running the epoch loop in their own process. A trial's
start-up is the time its function ran before its first epoch trained: the first result's
``time_total_s`` less that epoch's ``epoch_s`` (it includes the first epoch's validation).
The last line is ``ratios: trial_startup_s=<in-process median> torchtrainer_s=<median>
speedup=<x>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import raydistill.tune.search as search
from raydistill.config import load_job
from raydistill.models import build_model, save_weights
from raydistill.runtime import ray_session
from raydistill.tune.search import planned_tune_cpus, run_tune


def _startups(tune_dir: Path) -> list[float]:
    """Per trial: seconds before its first epoch trained (from Tune's result.json)."""
    out = []
    for result in sorted(tune_dir.glob("*/result.json")):
        first = json.loads(result.read_text().splitlines()[0])
        out.append(first["time_total_s"] - first["epoch_s"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    parser.add_argument(
        "--sides",
        default="trainer,local",
        help="which searches: trainer (TorchTrainer per trial), local (in-process), or both",
    )
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="rd-tune-startup-"))
    first = load_job(args.job, args.overrides)
    weights = save_weights(build_model(first.teacher, 10, load=False), storage / "teacher.pt")

    def job_for(name: str):
        return load_job(
            args.job,
            [
                *args.overrides,
                f"output.storage_path={storage}",
                f"name={name}",
                f"teacher.checkpoint={weights}",
                "distill.teacher_pass=cache",
                f"tune.num_samples={args.trials}",
                f"tune.epochs={args.epochs}",
                "tune.scheduler=fifo",
                "tune.workers_per_trial=1",
            ],
        )

    rows = []
    # one Ray for both searches, started as raydistill starts it (its workers know its address)
    with ray_session(first, cpus=planned_tune_cpus(job_for("x")) + 1):
        sides = [("TorchTrainer per trial", False), ("in the trial's process", True)]
        wanted = args.sides.split(",")
        sides = [s for s in sides if ("local" if s[1] else "trainer") in wanted]
        for label, local in sides:
            search.IN_PROCESS_TRIALS = local
            started = time.perf_counter()
            # one run directory for both: the second search reuses the first one's cache
            summary = run_tune(job_for("startup"), fresh=True, log=print)
            wall = time.perf_counter() - started
            startups = _startups(summary.tune_dir)
            rows.append((label, startups, wall))
            print(f"[bench] {label}: start-up per trial {[round(s, 1) for s in startups]} s")

    print(
        f"\n{args.trials}-trial search, {args.epochs} epochs per trial, 1 worker per trial, "
        f"{first.tune.max_concurrent_trials if first.tune else '?'} at a time"
    )
    print("| trials | start-up per trial (median) | max | search wall time |")
    print("|---|---:|---:|---:|")
    for label, startups, wall in rows:
        print(
            f"| {label} | {statistics.median(startups):.1f} s | {max(startups):.1f} s | "
            f"{wall:.0f} s |"
        )
    if len(rows) == 2:
        ours, before = statistics.median(rows[1][1]), statistics.median(rows[0][1])
        speedup = before / ours
        print(
            f"ratios: trial_startup_s={ours:.2f} torchtrainer_s={before:.2f} speedup={speedup:.1f}"
        )


if __name__ == "__main__":
    main()

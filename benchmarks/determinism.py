"""How far apart two runs of the same job and seed land, by number of train workers.

    .venv/bin/python benchmarks/determinism.py jobs/digits.yaml --workers 1 2 --epochs 3

For each worker count the distilled student is trained twice with the same seed (the teacher
given as the same weights file) and the script prints, per epoch, the largest difference
between the two runs' logged metrics (timing fields left out) and the test accuracies.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from raydistill.config import load_job
from raydistill.models import build_model, save_weights
from raydistill.pipeline import run_job
from raydistill.runtime import ray_session

TIMING = {"samples_per_s", "epoch_s", "startup_s"}


def largest_difference(a: dict, b: dict) -> tuple[str, float]:
    """The metric the two epochs differ in most, and by how much."""
    worst = ("-", 0.0)
    for key in a.keys() - TIMING:
        x, y = a[key], b.get(key)
        xs, ys = (x, y) if isinstance(x, list) else ([x], [y])
        gap = max(abs(float(p) - float(q)) for p, q in zip(xs, ys, strict=True))
        if gap > worst[1]:
            worst = (key, gap)
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    storage = Path(tempfile.mkdtemp(prefix="rd-determinism-"))
    base = load_job(args.job, [f"output.storage_path={storage}"])
    torch.manual_seed(args.seed)
    teacher = save_weights(build_model(base.teacher, 10, load=False), storage / "teacher.pt")
    started = time.perf_counter()
    with ray_session(base, cpus=max(args.workers) + 3):
        for workers in args.workers:
            runs = []
            for attempt in (0, 1):
                job = load_job(
                    args.job,
                    [
                        f"output.storage_path={storage}",
                        f"name=w{workers}-run{attempt}",
                        f"seed={args.seed}",
                        f"teacher.checkpoint={teacher}",
                        f"train.epochs={args.epochs}",
                        f"scaling.workers={workers}",
                        "train.baseline=false",
                        "output.report=false",
                    ],
                )
                runs.append(run_job(job, log=lambda _: None))
            first, second = (r.stages["student"].history for r in runs)
            accuracy = [100 * r.score("student (distilled)").accuracy for r in runs]
            print(f"\n{workers} worker(s): test accuracy {accuracy[0]:.2f}% vs {accuracy[1]:.2f}%")
            for a, b in zip(first, second, strict=True):
                key, gap = largest_difference(a, b)
                print(f"  epoch {a['epoch']}: largest difference {gap:.3g} ({key})")
    print(f"\n{time.perf_counter() - started:.0f}s in all")


if __name__ == "__main__":
    main()

"""The quickstart's gain over seeds, in process: the job's stages trained by the shared epoch loop
(one worker, no Ray), the distilled student against the same student on the labelled share alone.

    .venv/bin/python benchmarks/quickstart_gain.py jobs/digits.yaml --seeds 0 1 2 [--set k=v ...]

Trains the teacher once (on every label), then per seed the distilled student (teacher logits
precomputed in this process, as the pool would add them) and the baseline (the labelled rows,
each read round(1 / labelled_fraction) times per epoch); prints test accuracy per seed and the
mean +- std of the gain. ``benchmarks/digits_seeds.py`` does the same through Ray.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from raydistill.columns import INPUT, LABEL, ROW_ID, TEACHER_LOGITS
from raydistill.config import JobConfig, load_job
from raydistill.data.arrays import LabelledArrays, model_tensor
from raydistill.data.sources import labelled_rows_only, load_splits
from raydistill.data.text import for_model
from raydistill.evaluate import score
from raydistill.models.specs import build_model
from raydistill.tasks import get_task
from raydistill.train.context import LocalContext, LocalShard
from raydistill.train.loop import run_epochs
from raydistill.train.spec import StageSpec


def _rows(job: JobConfig, split: LabelledArrays, teacher: torch.nn.Module | None) -> dict:
    columns = {
        INPUT: for_model(job, job.student, split).inputs,
        LABEL: split.labels,
        ROW_ID: np.arange(len(split)),
    }
    if teacher is not None:
        with torch.no_grad():
            x = model_tensor(for_model(job, job.teacher, split).inputs)
            columns[TEACHER_LOGITS] = teacher.eval()(x).numpy()
    return columns


def train(job: JobConfig, splits: dict, role: str, teacher: torch.nn.Module | None = None):
    """One stage in process; returns (best model, test accuracy)."""
    distill = role == "student"
    columns = _rows(job, splits["train"], teacher if distill else None)
    share = job.data.labelled_fraction
    if role == "baseline" and share is not None:
        columns = labelled_rows_only(columns, share, job.data.split.seed)
    spec_model = job.teacher if role == "teacher" else job.student
    spec = StageSpec(
        role=role,  # type: ignore[arg-type]
        job=job,
        model=spec_model,
        train=job.teacher_train() if role == "teacher" else job.train,
        num_classes=splits["train"].num_classes,
        distill=distill,
    )
    val = LocalShard(_rows(job, splits["val"], teacher if distill else None))
    ctx = LocalContext(
        {"train": LocalShard(columns), "val": val}, log=lambda _: None, keep_state=True
    )
    run_epochs(get_task(job), spec, ctx)
    model = build_model(spec_model, spec.num_classes, load=False)
    model.load_state_dict(ctx.last_state["best_student"])
    batches = (for_model(job, spec_model, b) for b in splits["test"].iter_arrays())
    return model.eval(), score(role, model.eval(), batches).accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    torch.set_num_threads(1)
    started = time.perf_counter()
    base = load_job(args.job, args.overrides)
    splits = load_splits(base.data)
    teacher, teacher_acc = train(base, splits, "teacher")
    print(f"teacher {100 * teacher_acc:.2f}%", flush=True)
    gains = []
    for seed in args.seeds:
        job = load_job(args.job, [*args.overrides, f"seed={seed}"])
        _, student = train(job, splits, "student", teacher)
        _, alone = train(job, splits, "baseline")
        gains.append(100 * (student - alone))
        print(
            f"seed {seed}: distilled {100 * student:.2f}%  alone {100 * alone:.2f}%  "
            f"gain {gains[-1]:+.2f} points",
            flush=True,
        )
    spread = statistics.stdev(gains) if len(gains) > 1 else 0.0
    mean = statistics.mean(gains)
    verdict = "distillation wins" if mean > 2 * spread and mean > 0 else "within the spread"
    print(
        f"gain {mean:+.2f} +- {spread:.2f} points over seeds {args.seeds} "
        f"({time.perf_counter() - started:.0f}s): {verdict}"
    )


if __name__ == "__main__":
    main()

"""The quickstart's claim, on 3 seeds: distillation beats the same student trained on the
labelled share alone, every time.

The stages are the quickstart job's own (jobs/digits.yaml, unchanged), trained by the shared
epoch loop in this process (one worker, no Ray): the loop, the objective, the labelled share and
the baseline's labelled copies are the code `raydistill train` runs; the Ray path of this job
is covered by tests/test_e2e_digits.py. One teacher serves the three seeds, as a user's
reruns reuse theirs.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch
from local_rows import classification_rows

from raydistill.config import load_job
from raydistill.data.sources import labelled_rows_only, load_splits
from raydistill.data.text import for_model
from raydistill.evaluate import score
from raydistill.models.specs import build_model
from raydistill.tasks import get_task
from raydistill.train.context import LocalContext, LocalShard
from raydistill.train.loop import run_epochs
from raydistill.train.spec import StageSpec

ROOT = Path(__file__).resolve().parents[1]


def _train(job, splits, role: str, teacher: torch.nn.Module | None = None) -> tuple:
    """One stage in process; returns (best model, test accuracy)."""
    distill = role == "student"
    train = classification_rows(job, splits["train"], teacher if distill else None)
    val = classification_rows(job, splits["val"], teacher if distill else None)
    columns = train.columns
    share = job.data.labelled_fraction
    if role == "baseline" and share is not None:
        columns = labelled_rows_only(columns, share, job.data.split.seed)
    model_spec = job.teacher if role == "teacher" else job.student
    spec = StageSpec(
        role=role,  # type: ignore[arg-type]
        job=job,
        model=model_spec,
        train=job.teacher_train() if role == "teacher" else job.train,
        num_classes=10,
        distill=distill,
    )
    shards = {"train": LocalShard(columns), "val": val}
    ctx = LocalContext(shards, log=lambda _: None, keep_state=True)
    run_epochs(get_task(job), spec, ctx)
    model = build_model(model_spec, 10, load=False)
    model.load_state_dict(ctx.last_state["best_student"])
    batches = (for_model(job, model_spec, b) for b in splits["test"].iter_arrays())
    return model.eval(), score(role, model.eval(), batches).accuracy


@pytest.mark.slow
@pytest.mark.budget(
    seconds=300,
    reason="a teacher and 3 x (distilled student + baseline) of the quickstart, in process",
)
def test_the_quickstart_distils_better_than_the_labelled_share_alone_on_every_seed():
    torch.set_num_threads(1)
    base = load_job(ROOT / "jobs" / "digits.yaml")
    assert base.data.labelled_fraction == 0.1  # the quickstart's claim is about this setting
    splits = load_splits(base.data)
    teacher, teacher_acc = _train(base, splits, "teacher")
    assert teacher_acc > 0.9
    gains = []
    for seed in (0, 1, 2):
        job = load_job(ROOT / "jobs" / "digits.yaml", [f"seed={seed}"])
        _, student = _train(job, splits, "student", teacher)
        _, alone = _train(job, splits, "baseline")
        gains.append(100 * (student - alone))
    assert all(g > 0 for g in gains), gains
    # "clearly": the mean gain is several times the spread between seeds
    assert statistics.mean(gains) > 3 * statistics.stdev(gains), gains

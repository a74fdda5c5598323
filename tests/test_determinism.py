"""The same job and seed on one Ray Train worker gives the same metrics (issue #8, item 7).

Two short distilled runs of the same job (teacher given as weights, the teacher pool labelling
the data once, one train worker; the first is the session's ``single_worker_run``, which
test_faults.py also uses as its uninterrupted reference) under different run names must log
identical histories:
every loss, accuracy, temperature, alpha, learning rate and class count of every epoch, and
the same chosen weights. Only the timing fields may differ. With more workers Ray Data's
streaming split decides at run time which worker reads which rows, so runs differ (docs/running.md).
"""

from __future__ import annotations

import pytest
import torch

from raydistill.config import load_job
from raydistill.models.specs import read_state_dict
from raydistill.pipeline import run_job

pytestmark = pytest.mark.slow

TIMING = {"samples_per_s", "epoch_s"}


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k not in TIMING} for epoch in history]


def test_single_worker_runs_with_the_same_seed_are_identical(write_job, single_worker_run):
    # the session's reference run, and the same job again under another run name
    changes = single_worker_run["changes"]
    runs = [single_worker_run["summary"], run_job(load_job(write_job(changes, "same")), log=print)]
    first, second = (r.stages["student"] for r in runs)
    assert len(first.history) == changes["train.epochs"]
    assert first.history[0]["train_soft"] > 0  # the teacher's outputs took part
    assert _without_timing(first.history) == _without_timing(second.history)
    a, b = read_state_dict(first.weights), read_state_dict(second.weights)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (
        runs[0].score("student (distilled)").accuracy
        == runs[1].score("student (distilled)").accuracy
    )

    # and the seed matters: another seed trains another student
    other = run_job(load_job(write_job({**changes, "seed": 4}, name="other-seed")), log=print)
    assert _without_timing(other.stages["student"].history) != _without_timing(first.history)

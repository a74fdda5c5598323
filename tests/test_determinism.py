"""The same job and seed on one worker gives the same metrics (issue #8, item 7), on a Ray
Train worker and in the driver's process alike.

Two short distilled runs of the same job (teacher given as weights, the teacher pool labelling
the data once, one train worker; the first is the session's ``single_worker_run``, which
test_faults.py also uses as its uninterrupted reference) under different run names must log
identical histories:
every loss, accuracy, temperature, alpha, learning rate and class count of every epoch, and
the same chosen weights. Only the timing fields may differ.

With 2 workers too: a small materialized split is held in each worker's memory and shared out
by row id (raydistill/train/shards.py), not by Ray Data's timing-dependent streaming split, so
the session's 2-worker teacher stage (``digits_teacher_job``) trained again elsewhere gives the
same history and weights.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from raydistill.config import load_job
from raydistill.files import read_json
from raydistill.models.specs import read_state_dict
from raydistill.pipeline import run_job, run_teacher
from raydistill.rundir import history_file, teacher_weights_path

pytestmark = pytest.mark.slow

TIMING = {"samples_per_s", "epoch_s", "startup_s", "wait_s"}


def _without_timing(history: list[dict]) -> list[dict]:
    return [{k: v for k, v in epoch.items() if k not in TIMING} for epoch in history]


def test_single_worker_runs_with_the_same_seed_are_identical(
    write_job, single_worker_run, capfd
):
    # the session's reference run (a Ray Train worker: it survives a worker failure), and the
    # same job again under another run name without max_failures, which trains in this process
    # (raydistill/train/in_process.py): the same rows, order and thread count, the same result
    changes = single_worker_run["changes"]
    assert single_worker_run["summary"].stages["student"].history[0]["startup_s"] > 0
    here = {**changes, "scaling.max_failures": 0}
    capfd.readouterr()
    runs = [single_worker_run["summary"], run_job(load_job(write_job(here, "same")), log=print)]
    assert "[student] one worker, rows in memory, one node: training in this process" in (
        capfd.readouterr().out
    )
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
    other = run_job(load_job(write_job({**here, "seed": 4}, name="other-seed")), log=print)
    assert _without_timing(other.stages["student"].history) != _without_timing(first.history)


def test_two_worker_runs_with_the_same_seed_are_identical(digits_teacher_job, tmp_path):
    first = load_job(digits_teacher_job)
    assert first.scaling.workers == 2
    # the same job (its YAML as written) under another storage path, trained again
    raw = yaml.safe_load(digits_teacher_job.read_text())
    raw["output"]["storage_path"] = str(tmp_path / "runs")
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(raw))
    second = load_job(path)
    run_teacher(second, log=print)
    histories = [read_json(history_file(j.run_dir, "teacher"), "history") for j in (first, second)]
    assert len(histories[0]) == first.teacher_train().epochs
    assert histories[0][0]["workers"] == 2
    assert _without_timing(histories[0]) == _without_timing(histories[1])
    a, b = (read_state_dict(teacher_weights_path(j)) for j in (first, second))
    assert all(torch.equal(a[k], b[k]) for k in a)

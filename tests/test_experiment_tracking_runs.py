"""``output.tracking`` on real runs: ``raydistill train`` and a tiny ``raydistill tune`` on the
session's Ray, logging to a real ``mlflow server`` started here and to W&B offline files, both
read back (helpers: tests/helpers/tracking_servers.py). The stages train in the driver's
process (one worker on the one-node session cluster)."""

from __future__ import annotations

import pytest
from tracking_servers import wandb_runs

from raydistill.config import load_job
from raydistill.pipeline import run_job
from raydistill.tune.search import run_tune

pytestmark = pytest.mark.slow

SMALL = {
    "teacher.args": {"width": 8},
    "teacher.train": {"epochs": 1},
    "student.args": {"width": 4},
    "train.epochs": 2,
    "scaling.workers": 1,
    "scaling.teacher_pool": {"min_actors": 1, "max_actors": 1, "num_cpus": 0.5},
}


def _tracking(url: str, experiment: str) -> dict:
    return {
        "mlflow": {"tracking_uri": url, "experiment": experiment},
        "wandb": {"project": "raydistill-tests"},
    }


def _runs(url: str, experiment: str) -> tuple[object, list]:
    from mlflow import MlflowClient

    client = MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, experiment
    return client, client.search_runs([found.experiment_id])


def test_a_trained_job_is_one_run_with_a_run_per_stage(
    ray_address, write_job, mlflow_url, wandb_dir
):
    changes = {**SMALL, "train.baseline": True, "output.tracking": _tracking(mlflow_url, "train")}
    job = load_job(write_job(changes, name="tracked"))
    summary = run_job(job, log=print)

    client, runs = _runs(mlflow_url, "train")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.params["train.epochs"] == "2"
    accuracy = summary.score("student (distilled)").accuracy
    assert parent.data.metrics["test.student.accuracy"] == pytest.approx(accuracy)
    kept = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "summary.md", "metrics.json", "job.yaml"} <= kept
    stages = {r.data.tags["raydistill.stage"]: r for r in runs if r is not parent}
    assert set(stages) == {"teacher", "student", "baseline"}
    for role, run in stages.items():
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id, role
        assert run.info.status == "FINISHED", role
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert sorted(steps) == ([1] if role == "teacher" else [1, 2]), role
        model = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
        assert "model/model.pt" in model, role
    student = stages["student"]
    assert student.data.params["distill.alpha.start"] == "0.5"
    assert student.data.metrics["temperature"] == 4.0

    found = {run["job_type"]: run for run in wandb_runs(wandb_dir)}
    assert set(found) == {"teacher", "student", "baseline", "report"}
    assert {run["group"] for run in found.values()} == {"tracked"}
    history = summary.stages["student"].history
    logged = found["student"]["history"]
    assert sorted(logged) == [1, 2]
    assert [logged[s]["val_acc"] for s in (1, 2)] == pytest.approx([h["val_acc"] for h in history])
    assert ("tracked-student", "model") in found["student"]["artifacts"]


@pytest.mark.budget(seconds=240, reason="a two-trial search: its teacher, cache and trials")
def test_a_searchs_trials_nest_under_its_run(ray_address, write_job, mlflow_url, wandb_dir):
    changes = {
        **SMALL,
        "distill.teacher_pass": "cache",
        "train.baseline": False,
        "tune": {
            "space": {"train.lr": "grid([0.01, 0.003])"},
            "num_samples": 1,
            "max_concurrent_trials": 1,
            "scheduler": "fifo",
            "epochs": 1,
        },
        "output.tracking": _tracking(mlflow_url, "tune"),
    }
    job = load_job(write_job(changes, name="search"))
    summary = run_tune(job, log=print)

    client, runs = _runs(mlflow_url, "tune")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED" and parent.data.tags["raydistill.command"] == "tune"
    assert parent.data.metrics["best.val_acc"] == pytest.approx(summary.best.best_value)
    kept = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.md", "results.csv", "best.yaml", "summary.json"} <= kept
    children = [r for r in runs if r is not parent]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    trials = [r for r in children if "trial_name" in r.data.tags]  # Ray's callback's tag
    assert len(trials) == 2 and [r.data.tags.get("raydistill.stage") for r in children] != []
    assert sorted(r.data.params["train.lr"] for r in trials) == ["0.003", "0.01"]
    for trial in trials:
        assert trial.data.params["distill.teacher_pass"] == "cache"  # the trial's whole job
        assert trial.data.metrics["val_acc"] > 0
        assert "model/model.pt" in [
            a.path for a in client.list_artifacts(trial.info.run_id, "model")
        ]
    teacher = [r for r in children if r.data.tags.get("raydistill.stage") == "teacher"]
    assert len(teacher) == 1  # trained by the search, nested with its trials

    found = wandb_runs(wandb_dir)
    trial_runs = [run for run in found if run["job_type"] == "trial"]
    assert len(trial_runs) == 2 and {run["group"] for run in trial_runs} == {"search-tune"}
    for run in trial_runs:
        assert run["config"]["distill.teacher_pass"] == "cache"
        assert any(row.get("val_acc") is not None for row in run["history"].values())
        assert [kind for _, kind in run["artifacts"]] == ["model"]

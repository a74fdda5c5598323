"""``output.tracking``: the section's checks, the job as parameters, the reachability check, and
a command's runs on a real ``mlflow server`` (and W&B offline files), read back with the
trackers' own readers. Ray-free: the stages here are epochs handed to the callbacks by hand;
tests/test_experiment_tracking_runs.py trains real ones."""

from __future__ import annotations

import pickle

import pytest
from click.testing import CliRunner
from tracking_servers import free_port, wandb_runs

from raydistill.cli import main
from raydistill.config import JobError, load_job
from raydistill.files import atomic_write_json
from raydistill.rundir import HISTORY_FILE, WEIGHTS_FILE, stage_dir
from raydistill.tracking.params import flat_params, job_params
from raydistill.tracking.reach import check_trackers, short_reason
from raydistill.tracking.session import job_tracking, tracked_stage


def _tracked(write_job, tracking: dict, name: str = "job"):
    return load_job(write_job({"output.tracking": tracking}, name=name))


def test_unknown_tracking_keys_are_refused(write_job):
    with pytest.raises(JobError, match=r"output\.tracking\.mlflow\.experimnt: unknown key"):
        _tracked(write_job, {"mlflow": {"tracking_uri": "http://h:1", "experimnt": "x"}})
    with pytest.raises(JobError, match=r"output\.tracking\.wandb\.mode: "):
        _tracked(write_job, {"wandb": {"project": "p", "mode": "cloud"}})
    with pytest.raises(JobError, match=r"output\.tracking\.neptune: unknown key"):
        _tracked(write_job, {"neptune": {}})
    job = load_job(write_job())
    assert not job.output.tracking.enabled  # nothing tracked unless a tracker is named


def test_the_resolved_job_flattens_into_parameters(write_job):
    assert flat_params({"a": {"b": 1, "c": {"d": None}}, "e": [1, 2], "f": True, "g": {}}) == {
        "a.b": "1",
        "a.c.d": "null",
        "e": "[1,2]",
        "f": "true",
        "g": "{}",
    }
    params = job_params(load_job(write_job({"train.lr": 0.02})))
    assert params["train.lr"] == "0.02" and params["name"] == "job"
    assert params["distill.temperature.start"] == "4.0" and params["teacher.args.width"] == "32"


def test_an_unreachable_server_fails_before_training_in_one_line(write_job, tmp_path, monkeypatch):
    import raydistill.pipeline

    def tripwire(*args, **kwargs):
        raise AssertionError("an unreachable tracker must be refused before Ray starts")

    monkeypatch.setattr(raydistill.pipeline, "ray_session", tripwire)
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    job_file = write_job({"output.tracking": {"mlflow": {"tracking_uri": closed}}})
    result = CliRunner().invoke(main, ["train", str(job_file)])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert lines == [f"error: output.tracking.mlflow: cannot reach {closed}: Connection refused"]
    assert not (tmp_path / "runs").exists()  # refused before the run directory was made


def test_an_optional_tracker_that_does_not_answer_is_one_warning(write_job):
    closed = f"http://127.0.0.1:{free_port()}"
    job = _tracked(write_job, {"mlflow": {"tracking_uri": closed, "required": False}})
    lines: list[str] = []
    checked = check_trackers(job, lines.append)
    assert checked.output.tracking.mlflow is None and job.output.tracking.mlflow is not None
    assert lines == [
        f"warning: output.tracking.mlflow: cannot reach {closed}: Connection refused; training"
        " without it (output.tracking.mlflow.required is false)"
    ]


def test_short_reason_finds_the_cause_inside_wrapped_errors():
    wrapped = (
        "API request to http://h/api failed with exception HTTPConnectionPool(host='h'): Max "
        'retries exceeded (Caused by NewConnectionError("...: [Errno -2] Name or service not '
        'known"))'
    )
    assert short_reason(wrapped) == "Name or service not known"
    assert short_reason("Read timed out. (read timeout=10)") == "timed out"
    assert short_reason("x" * 300).endswith("...") and len(short_reason("x" * 300)) == 200


def _epoch(epoch: int) -> dict:
    return {"epoch": epoch, "train_loss": 2.0 / (epoch + 1), "val_acc": 0.5 + 0.1 * epoch}


def _train_by_hand(job, role: str, epochs: int = 3) -> None:
    """A stage's runs fed as training would feed them: the first epoch by the callbacks in
    this process (a stage trained in the driver), the second by pickled copies (Ray Train's
    controller), the third by neither (a stage resumed after a killed driver)."""
    history = [_epoch(e) for e in range(epochs)]
    with tracked_stage(job, role) as stage:
        for callback in stage.callbacks:
            callback.after_report(None, [history[0]], None)
            pickle.loads(pickle.dumps(callback)).after_report(None, [history[1]], None)
        directory = stage_dir(job.run_dir, role)
        directory.mkdir(parents=True)
        (directory / WEIGHTS_FILE).write_bytes(b"weights")
        atomic_write_json(directory / HISTORY_FILE, history)
        stage.finished(history)


def test_a_commands_stages_nest_under_its_run(write_job, mlflow_url, wandb_dir, tmp_path):
    from mlflow import MlflowClient

    tracking = {"mlflow": {"tracking_uri": mlflow_url, "experiment": "nesting"}}
    tracking["wandb"] = {"project": "raydistill-tests"}
    job = _tracked(write_job, tracking, name="nest")
    report = tmp_path / "report.md"
    report.write_text("| model | accuracy |\n")
    lines: list[str] = []
    with job_tracking(job, "train", lines.append) as command:
        assert command is not None
        _train_by_hand(job, "teacher")
        _train_by_hand(job, "student")
        with pytest.raises(RuntimeError), tracked_stage(job, "baseline"):
            raise RuntimeError("the baseline stage fails")
        command.log_files([report], {"test.student.accuracy": 0.9})
    assert any(line.startswith("tracking: MLflow run ") for line in lines), lines

    client = MlflowClient(mlflow_url)
    experiment = client.get_experiment_by_name("nesting")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert parent.data.tags["raydistill.command"] == "train"
    assert parent.data.params["train.lr"] == "0.01" and parent.data.params["name"] == "nest"
    assert parent.data.metrics["test.student.accuracy"] == 0.9
    assert [a.path for a in client.list_artifacts(parent.info.run_id)] == ["report.md"]
    children = {r.data.tags["raydistill.stage"]: r for r in runs if r is not parent}
    assert set(children) == {"teacher", "student", "baseline"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children.values()} == {parent.info.run_id}
    student = children["student"]
    assert student.info.status == "FINISHED" and children["baseline"].info.status == "FAILED"
    assert student.data.params["stage"] == "student" and student.data.params["seed"] == "0"
    history = client.get_metric_history(student.info.run_id, "val_acc")
    assert sorted((m.step, round(m.value, 6)) for m in history) == [(1, 0.5), (2, 0.6), (3, 0.7)]
    files = [a.path for a in client.list_artifacts(student.info.run_id, "model")]
    assert files == ["model/history.json", "model/model.pt"]

    found = {run["job_type"]: run for run in wandb_runs(wandb_dir)}
    assert set(found) == {"teacher", "student", "baseline", "report"}
    assert {run["group"] for run in found.values()} == {"nest"}
    student_run = found["student"]
    assert student_run["config"]["train.lr"] == "0.01"
    assert {step: row["val_acc"] for step, row in student_run["history"].items()} == {
        1: 0.5,
        2: pytest.approx(0.6),
        3: pytest.approx(0.7),
    }
    assert student_run["artifacts"] == [("nest-student", "model")]
    assert found["report"]["artifacts"] == [("nest-report", "report")]

"""A run on object storage (``output.storage_path: s3://...``), against a real S3 API server
(moto, on loopback, started and stopped here): the run's files land in the bucket as they are
made, a killed driver resumes from the bucket on another machine (another working copy),
report and export read a run from the bucket, and a missing bucket or bad credentials end in
one line before anything trains."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from job_files import write_digits_job
from moto_s3 import list_keys, make_bucket, moto_server
from tiny_run import build_tiny_run

import raydistill.remote as remote
from raydistill.cli import main
from raydistill.config import load_job
from raydistill.config.storage import CACHE_ENV, run_uri, working_copy
from raydistill.pipeline import prepare_run_dir

BUCKET = "raydistill-runs"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def s3() -> Iterator[str]:
    """The S3 server's endpoint, with the bucket runs go to."""
    with moto_server() as endpoint:
        make_bucket(endpoint, BUCKET)
        yield endpoint


@pytest.fixture
def machine(tmp_path, monkeypatch):
    """Sets where working copies live: ``machine("a")`` and ``machine("b")`` are two machines
    that share nothing but the bucket."""

    def use(name: str) -> Path:
        root = tmp_path / f"machine-{name}"
        monkeypatch.setenv(CACHE_ENV, str(root))
        remote._OPEN.clear()  # this process's uploads were another machine's
        return root

    yield use
    remote._OPEN.clear()


def _run_files(keys: list[str], prefix: str) -> set[str]:
    return {k.removeprefix(prefix) for k in keys if not k.endswith("/")}


def test_report_and_export_read_a_run_from_s3(s3, tmp_path, machine):
    """A run made on machine a and uploaded; on machine b, ``raydistill report`` and
    ``raydistill export`` take its s3:// URI, read it from there and upload what they write."""
    machine("a")
    job = build_tiny_run(tmp_path, epochs=1, output__storage_path=f"s3://{BUCKET}/tiny-runs")
    uploaded = remote.remote_run(job)
    assert uploaded is not None and uploaded.sync() > 0
    uri = f"s3://{BUCKET}/tiny-runs/tiny"

    machine("b")
    runner = CliRunner()
    out = runner.invoke(main, ["report", uri])
    assert out.exit_code == 0, out.output
    assert f"report: uploaded to {uri}" in out.output
    out = runner.invoke(main, ["export", uri, "--format", "torchscript"])
    assert out.exit_code == 0, out.output
    assert f"student: uploaded to {uri}" in out.output
    files = _run_files(list_keys(s3, BUCKET, "tiny-runs/tiny/"), "tiny-runs/tiny/")
    assert {"job.yaml", "student/model.pt", "report.md", "report.html"} <= files
    assert any(f.startswith("export/student") for f in files), files
    assert any(f.startswith("report/") and f.endswith(".png") for f in files), files

    machine("c")  # evaluate reads the weights of a job whose run is on the bucket
    out = runner.invoke(main, ["evaluate", str(tmp_path / "tiny.yaml")])
    assert out.exit_code == 0 and out.output.startswith("student (model.pt, test): accuracy")

    out = runner.invoke(main, ["report", f"s3://{BUCKET}/tiny-runs/nope"])
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert "not a run directory" in out.output


def test_fresh_and_fresh_stage_delete_on_the_bucket_too(s3, tmp_path, machine):
    """``--fresh-stage`` removes the stage there as here; ``--fresh`` the whole run."""
    machine("a")
    job = build_tiny_run(tmp_path, epochs=1, output__storage_path=f"s3://{BUCKET}/fresh")
    remote.remote_run(job).sync()
    prefix = "fresh/tiny/"
    before = _run_files(list_keys(s3, BUCKET, prefix), prefix)
    assert {"baseline/model.pt", "student/model.pt"} <= before, before

    machine("b")
    remote.open_run(job)  # what train does first: fetch the run
    prepare_run_dir(job, False, print, ["baseline"])
    after = _run_files(list_keys(s3, BUCKET, prefix), prefix)
    assert after == {f for f in before if not f.startswith("baseline/")}, after
    prepare_run_dir(job, True, print)
    assert _run_files(list_keys(s3, BUCKET, prefix), prefix) == {"job.yaml"}
    assert sorted(p.name for p in job.run_dir.iterdir()) == ["job.yaml"]


@pytest.mark.parametrize("problem", ["missing bucket", "bad credentials"])
def test_a_bucket_that_cannot_be_written_is_named_in_one_line(tmp_path, machine, problem):
    """Checked before Ray starts or anything is written: a missing bucket, or credentials the
    server refuses (a second server that authenticates every request against its empty IAM)."""
    machine("a")
    with moto_server(check_credentials=problem == "bad credentials") as endpoint:
        if problem == "bad credentials":
            storage = f"s3://{BUCKET}/runs"
        else:
            make_bucket(endpoint, BUCKET)
            storage = "s3://no-such-bucket/runs"
        job_file = write_digits_job(tmp_path, {"output.storage_path": storage}, name="bad")
        for command in (["validate"], ["train"]):
            out = CliRunner().invoke(main, [*command, str(job_file)])
            assert out.exit_code == 2, out.output
            line = out.output.strip()
            assert "\n" not in line and line.startswith("error: output.storage_path: "), line
            if problem == "missing bucket":
                assert "the bucket 'no-such-bucket' does not exist" in line, line
            else:
                assert "access denied (INVALID_ACCESS_KEY_ID)" in line, line
    assert not load_job(job_file).run_dir.exists()


def test_a_run_uri_maps_to_a_working_copy_and_prints_without_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path))
    storage = "s3://KEY:SECRET@bucket/team/runs/?endpoint_override=host:9000&secret_key=SECRET"
    uri = run_uri(storage, "digits")
    assert uri == storage.replace("runs/?", "runs/digits?")
    assert working_copy(uri) == tmp_path / "s3" / "bucket" / "team" / "runs" / "digits"
    shown = remote.RemoteRun(uri).uri
    assert "SECRET" not in shown and "KEY" not in shown and "host:9000" in shown, shown
    job = load_job(ROOT / "jobs" / "digits.yaml", ["output.storage_path=gs://b/runs"])
    assert job.run_dir == tmp_path / "gs" / "b" / "runs" / "digits"
    assert remote.remote_run(job).uri == "gs://b/runs/digits"
    remote._OPEN.clear()


def test_tune_refuses_a_storage_uri_in_one_line():
    """A search directory is Ray Tune's, local: refused before anything is written."""
    job = ["--set", "output.storage_path=s3://bucket/runs", "--set", "name=tune-uri"]
    out = CliRunner().invoke(main, ["tune", str(ROOT / "jobs" / "digits-tune.yaml"), *job])
    assert out.exit_code == 2 and out.output.count("\n") == 1, out.output
    assert out.output.startswith("error: output.storage_path: raydistill tune writes"), out.output


def test_a_relative_storage_path_in_a_ray_job_warns_where_results_stay(write_job, monkeypatch):
    """Inside ``ray job submit --working-dir`` (Ray's job supervisor hands the entrypoint its
    job config), a relative storage path lies in Ray's temporary copy of the working dir."""
    job = load_job(write_job({"output.storage_path": "runs"}, name="relative"))
    assert remote.temporary_output_warning(job) is None  # not in a Ray job
    runtime_env = {"working_dir": "gcs://_ray_pkg_0123.zip"}
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": runtime_env}))
    warning = remote.temporary_output_warning(job)
    assert warning is not None and "\n" not in warning
    assert "Ray session's temporary directory" in warning and str(job.run_dir) in warning
    for kept in (str(job.run_dir.parent), "s3://bucket/runs"):
        job = load_job(write_job({"output.storage_path": kept}, name="kept"))
        assert remote.temporary_output_warning(job) is None, kept
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}}))
    job = load_job(write_job({"output.storage_path": "runs"}, name="relative"))
    assert remote.temporary_output_warning(job) is None  # a job without a working_dir


def _stage_checkpoints(endpoint: str, prefix: str) -> list[str]:
    return [k for k in list_keys(endpoint, BUCKET, prefix) if k.endswith("/state.pt")]


@pytest.mark.slow
def test_a_killed_driver_resumes_from_s3_on_another_machine(ray_address, s3, tmp_path, machine):
    """``raydistill train`` on machine a is killed after its first checkpoint reached the
    bucket; ``raydistill train`` on machine b (an empty working copy) continues from it, and
    the whole run (job, checkpoints, history, weights, summary, report) is in the bucket."""
    epochs = 8
    job_file = write_digits_job(
        tmp_path,
        {
            "output.storage_path": f"s3://{BUCKET}/resume",
            "distill.enabled": False,  # the baseline stage alone: no teacher to train first
            "train.epochs": epochs,
            "train.batch_size": 8,
            "student.args": {"width": 4},
            "scaling.workers": 1,
        },
        name="killed",
    )
    prefix = "resume/killed/"
    cli = [str(Path(sys.executable).with_name("raydistill")), "train", str(job_file)]
    env = {**os.environ, "RAY_ADDRESS": ray_address, CACHE_ENV: str(machine("a"))}
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(
        cli, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and first.poll() is None:
        if _stage_checkpoints(s3, prefix + "baseline/"):
            break
        time.sleep(0.2)
    assert _stage_checkpoints(s3, prefix + "baseline/"), (tmp_path / "first.log").read_text()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(30)
    log.close()
    assert f"{prefix}baseline/model.pt" not in list_keys(s3, BUCKET, prefix)  # not finished

    env[CACHE_ENV] = str(machine("b"))
    second = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resumed from the checkpoint of epoch" in second.stdout + second.stderr
    assert f"run uploaded to s3://{BUCKET}/resume/killed" in second.stdout
    files = _run_files(list_keys(s3, BUCKET, prefix), prefix)
    expected = {"job.yaml", "summary.md", "metrics.json", "report.md", "report.html"}
    expected |= {f"baseline/{f}" for f in ("model.pt", "history.json", "fingerprint.json")}
    assert expected <= files, sorted(files)
    kept = [f for f in files if f.startswith("baseline/checkpoint_")]
    assert 1 <= len(kept) <= 2, kept  # output.keep_checkpoints: older ones deleted there too
    history = json.loads((load_job(job_file).run_dir / "baseline" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(epochs))


@pytest.mark.slow
@pytest.mark.budget(seconds=240, reason="starts a local Ray of its own and a 2-worker group (52 s)")
def test_a_multi_worker_stage_keeps_its_checkpoints_on_s3(s3, tmp_path, machine):
    """Two workers train on Ray Train, whose ``storage_path`` is the run's URI: its own
    checkpoints go to the bucket (where every node reaches them), and the driver collects the
    stage's weights from there. A local Ray of its own (not the session's), which inherits the
    driver's AWS variables, as a cluster's nodes have their own credentials."""
    job_file = write_digits_job(
        tmp_path,
        {
            "output.storage_path": f"s3://{BUCKET}/multi",
            "distill.enabled": False,
            "train.epochs": 2,
            "student.args": {"width": 4},
            "scaling.workers": 2,
            "output.report": False,
        },
        name="ddp",
    )
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env[CACHE_ENV] = str(machine("a"))
    cli = [str(Path(sys.executable).with_name("raydistill")), "train", str(job_file)]
    done = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout + done.stderr
    prefix = "multi/ddp/"
    files = _run_files(list_keys(s3, BUCKET, prefix), prefix)
    assert {"job.yaml", "summary.md", "ray.log", "baseline/model.pt"} <= files, sorted(files)
    assert "baseline/checkpoint_manager_snapshot.json" in files, sorted(files)  # Ray Train's
    ray_checkpoints = [f for f in files if f.startswith("baseline/checkpoint_2")]  # dated names
    assert ray_checkpoints and all(f.endswith("/state.pt") for f in ray_checkpoints), files
    history = json.loads((load_job(job_file).run_dir / "baseline" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]

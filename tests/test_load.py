"""A short load test: small jobs submitted back to back to one cluster all finish, each in its own
run directory (issue #8).

``ray job submit --no-wait`` queues every job at once on the session's head node (loopback,
tests/conftest.py), so their drivers, Train controllers and workers share the cluster; then the
test waits, within a time bound, for all of them. Each job is the quickstart's student alone for
one epoch with its own name and seed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
RAY_CLI = str(Path(sys.executable).with_name("ray"))
JOBS = 4  # bounded: 2 cores here, and every job starts its own driver and Train controller
DEADLINE_S = 900


def test_jobs_submitted_back_to_back_all_finish_apart(ray_dashboard, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    storage = tmp_path / "shared"
    client = JobSubmissionClient(ray_dashboard)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    batch = uuid.uuid4().hex[:6]
    ids = []
    started = time.monotonic()
    for i in range(JOBS):
        ids.append(f"rd-load-{batch}-{i}")
        # `python -m` from the uploaded working directory: the job runs this checkout's code,
        # whatever raydistill the venv has installed
        entrypoint = [sys.executable, "-m", "raydistill.cli", "train", "jobs/digits.yaml"]
        entrypoint.append("--baseline")
        for override in (
            f"name=load-{i}",
            f"seed={i}",
            f"output.storage_path={storage}",
            "output.report=false",
            "train.epochs=1",
            "scaling.workers=1",
        ):
            entrypoint += ["--set", override]
        submit = [
            RAY_CLI, "job", "submit", "--no-wait",
            "--address", ray_dashboard,
            "--working-dir", str(ROOT),
            "--submission-id", ids[-1],
            "--", *entrypoint,
        ]  # fmt: skip
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
    submitted = time.monotonic() - started

    terminal = {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}
    statuses: dict[str, JobStatus] = {}
    try:
        while time.monotonic() - started < DEADLINE_S:
            statuses = {i: client.get_job_status(i) for i in ids}
            if all(s in terminal for s in statuses.values()):
                break
            time.sleep(2)
    finally:
        for i in ids:  # never leave a job running on the shared session cluster
            if client.get_job_status(i) not in terminal:
                client.stop_job(i)
    elapsed = time.monotonic() - started
    print(f"{JOBS} jobs: submitted in {submitted:.1f} s, all ended after {elapsed:.1f} s")
    logs = {i: client.get_job_logs(i) for i in ids}
    for i in ids:
        assert statuses.get(i) == JobStatus.SUCCEEDED, (i, statuses, logs[i][-3000:])

    # every job wrote its own run directory, and only into it
    assert sorted(p.name for p in storage.iterdir()) == [f"load-{i}" for i in range(JOBS)]
    losses = set()
    for i, submission in enumerate(ids):
        run_dir = storage / f"load-{i}"
        assert f"run directory {run_dir}" in logs[submission]
        for other in range(JOBS):
            if other != i:
                assert f"{storage}/load-{other}" not in logs[submission], (submission, other)
        resolved = (run_dir / "job.yaml").read_text()
        assert f"name: load-{i}\n" in resolved and f"seed: {i}\n" in resolved
        history = json.loads((run_dir / "baseline" / "history.json").read_text())
        assert [h["epoch"] for h in history] == [0]
        assert history[0]["started_at_epoch"] == 0  # no job resumed another's checkpoint
        losses.add(history[0]["train_loss"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        assert [row["name"] for row in metrics["test"]] == ["baseline (student alone)"]
        assert (run_dir / "baseline" / "model.pt").is_file()
    assert len(losses) == JOBS  # four seeds, four different runs
    assert not (ROOT / "runs" / "load-0").exists()

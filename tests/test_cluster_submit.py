"""`ray job submit` runs the quickstart job on a running Ray cluster, as cluster/README.md says.

The session's head node (``ray start --head`` on loopback, tests/conftest.py) stands in for a
cluster: the repository is uploaded as the job's working directory and ``raydistill train`` runs
as the job's entrypoint, exactly the command a user types against a real cluster.
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
RAYDISTILL_CLI = str(Path(sys.executable).with_name("raydistill"))

# The quickstart reduced to what proves the path: the distilled student for 2 epochs, its teacher
# given as weights (training it would add a second Ray Train run and ~30 s, proving nothing new).
SHORT = [
    "train.epochs=2",
    "train.baseline=false",
    "scaling.workers=1",
]


def test_ray_job_submit_runs_the_quickstart(ray_dashboard, tmp_path):
    from ray.job_submission import JobStatus, JobSubmissionClient

    from raydistill.config import load_job
    from raydistill.models import build_model, save_weights

    submission_id = f"rd-test-{uuid.uuid4().hex[:8]}"
    storage = tmp_path / "shared"  # on a real cluster: storage every node mounts at this path
    quickstart = load_job(ROOT / "jobs" / "digits.yaml")
    teacher = save_weights(build_model(quickstart.teacher, 10, load=False), storage / "teacher.pt")
    overrides = [
        *SHORT,
        "name=submitted",
        f"output.storage_path={storage}",
        f"teacher.checkpoint={teacher}",
    ]
    # The entrypoint runs from the uploaded copy of the repository, so the job path is relative;
    # the absolute `raydistill` is this venv's (on a cluster image it is simply on PATH).
    entrypoint = [RAYDISTILL_CLI, "train", "jobs/digits.yaml"]
    for override in overrides:
        entrypoint += ["--set", override]
    submit = [
        RAY_CLI, "job", "submit",
        "--address", ray_dashboard,
        "--working-dir", str(ROOT),
        "--submission-id", submission_id,
        "--", *entrypoint,
    ]  # fmt: skip
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    client = JobSubmissionClient(ray_dashboard)
    started = time.monotonic()
    try:
        done = subprocess.run(submit, env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        client.stop_job(submission_id)
        raise
    elapsed = time.monotonic() - started
    output = done.stdout + done.stderr
    print(output[-4000:], f"\nray job submit: {elapsed:.1f} s", file=sys.stderr)

    assert client.get_job_status(submission_id) == JobStatus.SUCCEEDED, output[-4000:]
    assert done.returncode == 0, output[-4000:]
    # `ray job submit` streamed the job's progress while it ran, not only at the end.
    for line in ("[teacher] using checkpoint", "[student] epoch 1/2", "[student] epoch 2/2"):
        assert line in output, line
    assert "| student (distilled) |" in output
    assert "warning: output.storage_path" not in output  # an absolute storage path: kept

    run_dir = storage / "submitted"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [row["name"] for row in metrics["test"]] == ["teacher", "student (distilled)"]
    assert all(0.0 <= row["accuracy"] <= 1.0 for row in metrics["test"])
    assert "| student (distilled) |" in (run_dir / "summary.md").read_text()
    history = json.loads((run_dir / "student" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(h["train_soft"] > 0 for h in history)  # the teacher pool's logits reached it
    assert (run_dir / "student" / "model.pt").is_file()
    assert load_job(run_dir / "job.yaml").teacher.checkpoint == teacher
    # The job's logs stay readable after it ended (`ray job logs`).
    assert "[student] epoch 2/2" in client.get_job_logs(submission_id)
    assert not (ROOT / "runs" / "submitted").exists()


def test_a_submitted_job_with_a_relative_storage_path_warns_in_one_line(ray_dashboard, tmp_path):
    """In a job submitted with ``--working-dir``, a relative ``output.storage_path`` lies in
    Ray's temporary copy of that directory: one line says the results stay there, and where."""
    from job_files import write_digits_job

    upload = tmp_path / "upload"
    upload.mkdir()
    write_digits_job(upload, {"output": {"storage_path": "runs"}}, name="relative")
    entrypoint = [RAYDISTILL_CLI, "validate", "relative.yaml"]
    submit = [RAY_CLI, "job", "submit", "--address", ray_dashboard, "--working-dir", str(upload)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        [*submit, "--", *entrypoint], env=env, capture_output=True, text=True, timeout=300
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    warnings = [line for line in output.splitlines() if "warning: output.storage_path" in line]
    assert len(warnings) == 1, output[-4000:]
    assert "the results stay in the Ray session's temporary directory" in warnings[0]
    where = warnings[0].split(", at ", 1)[1].split(" (give", 1)[0]
    assert where.endswith("/relative") and not where.startswith(str(upload)), warnings[0]

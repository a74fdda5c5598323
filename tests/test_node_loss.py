"""A node removed from a multi-node cluster during training: the run recovers (issue #8, item 3).

A three-node Ray cluster runs on this machine (tests/helpers/node_loss_cluster.py): a head and
two student nodes with room for one train worker each. The job trains elastically on
``scaling.workers: [1, 2]``; after its first checkpoint one student node is removed. Ray Train
restarts the worker group on what is left and the loop resumes from the checkpoint, so the stage
still ends with every epoch, the later ones on one worker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from raydistill.runtime import TRAIN_POLL_ENV, TRAIN_POLL_S

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "node_loss_cluster.py"
EPOCHS = 5


def test_a_removed_node_does_not_end_the_run(write_job, tmp_path):
    job_file = write_job(
        {
            "distill.enabled": False,
            "train.epochs": EPOCHS,
            "scaling.workers": [1, 2],
            "scaling.cpus_per_worker": 1,
            "scaling.resources_per_worker": {"student": 1},
            "scaling.max_failures": 3,
            "output.report": False,
        },
        name="node-loss",
    )
    temp_dir = tempfile.mkdtemp(prefix="rd-nl-", dir="/tmp")  # Ray's socket paths stay short
    out = tmp_path / "node-loss.json"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    # Train's controller polls its workers at the session cluster's pace (conftest), not every 2 s
    env[TRAIN_POLL_ENV] = TRAIN_POLL_S
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(SCRIPT.parent), env.get("PYTHONPATH")) if p
    )
    try:
        done = subprocess.run(
            [sys.executable, str(SCRIPT), str(job_file), str(out), temp_dir],
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    result = json.loads(out.read_text())
    assert result["removed"], "the student node was never removed"
    assert result["alive_nodes"] == 2
    history = result["history"]
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    workers = [h["workers"] for h in history]
    starts = [h["started_at_epoch"] for h in history]
    # trained on both student nodes, then on the one left, resuming from a checkpoint
    assert workers[0] == 2 and workers[-1] == 1, workers
    resumed_at = starts[-1]
    assert resumed_at >= 1 and workers[resumed_at:] == [1] * (EPOCHS - resumed_at), (
        workers,
        starts,
    )
    assert [s["name"] for s in result["scores"]] == ["baseline (student alone)"]
    assert result["scores"][0]["accuracy"] > 0.3  # chance is 0.1

"""A teacher pool on an autoscaling cluster (issue #24, items 2 and 3): Ray's own autoscaler
adds the teacher nodes a pool of ``max_actors: auto`` needs, and a pool no node type can ever
host is refused before training.

The cluster (tests/helpers/autoscaling_cluster.py) is a head with CPUs only and a ``teacher``
node type the autoscaler may launch twice (Ray's fake multi-node provider: each node it
launches is a raylet on this machine); no teacher node is up when the jobs start.
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
from autoscaling_cluster import TEACHER_NODES, free_port
from job_files import write_digits_job
from ray_processes import stop_cluster

from raydistill.config import load_job
from raydistill.models import build_model, save_weights

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HELPERS = ROOT / "tests" / "helpers"


def _pool(resources: dict[str, float]) -> dict:
    return {"min_actors": 1, "max_actors": "auto", "num_cpus": 0.5, "resources": resources}


@pytest.mark.budget(
    seconds=300,
    reason="a cluster of its own whose autoscaler launches two teacher nodes, then a one-epoch "
    "job on a Train worker group",
)
def test_the_autoscaler_launches_the_teacher_nodes_an_auto_pool_needs(tmp_path: Path) -> None:
    teacher = build_model(load_job(ROOT / "jobs" / "digits.yaml").teacher, 10, load=False)
    changes = {
        "teacher.checkpoint": str(save_weights(teacher, tmp_path / "t.pt")),
        "train.epochs": 1,
        "train.baseline": False,
        "scaling.workers": 1,
        "output.report": False,
    }
    auto = write_digits_job(
        tmp_path, {**changes, "scaling.teacher_pool": _pool({"teacher": 1})}, name="auto"
    )
    unhostable = write_digits_job(
        tmp_path, {**changes, "scaling.teacher_pool": _pool({"teacher_gpu": 1})}, name="gpu"
    )
    out = tmp_path / "autoscaling.json"
    # A short path of its own: Ray's socket paths must stay under 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="rd-as-", dir="/tmp")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_TMPDIR")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), str(HELPERS), env.get("PYTHONPATH")) if p
    )
    args = [HELPERS / "autoscaling_cluster.py", auto, unhostable, out, temp_dir, port]
    try:
        done = subprocess.run(
            [sys.executable, *map(str, args)],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
    finally:  # the script stops its cluster; this stops what a killed script left
        stop_cluster(Path(temp_dir), port)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    result = json.loads(out.read_text())

    # refused before training, naming the resource and what the autoscaler could launch
    refusal = result["unhostable"]
    assert refusal is not None and "teacher_gpu: 1" in refusal, refusal
    assert "no node type the autoscaler can launch" in refusal and "teacher" in refusal

    # the auto pool was sized from the autoscaler's node types, not from the nodes up (none)
    assert result["teacher_nodes_before"] == 0
    sized = [line for line in done.stdout.splitlines() if "pool max_actors auto" in line]
    assert sized and f"{TEACHER_NODES} actor(s) at most" in sized[0], done.stdout[-3000:]
    assert "autoscaler's node types" in sized[0]
    # its actors could only run on teacher nodes: the autoscaler launched them and the job ended
    assert result["teacher_nodes_peak"] >= 1, result
    assert [s["name"] for s in result["scores"]] == ["teacher", "student (distilled)"]

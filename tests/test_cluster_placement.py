"""On a cluster with teacher nodes and student nodes, each part of a job lands where it belongs.

A three-node Ray cluster runs on this machine (tests/helpers/placement_cluster.py): a head with
CPUs only, a node offering the custom resource ``teacher`` and one offering ``student``. The job
asks for them through ``scaling.teacher_pool.resources`` and ``scaling.resources_per_worker``;
Ray's State API then tells on which node every actor ran.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from raydistill.runtime import TRAIN_POLL_ENV, TRAIN_POLL_S

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "helpers" / "placement_cluster.py"


def test_teacher_actors_and_train_workers_run_on_their_node_groups(write_job, tmp_path):
    from raydistill.config import load_job
    from raydistill.models import build_model, save_weights

    quickstart = load_job(ROOT / "jobs" / "digits.yaml")
    teacher = save_weights(build_model(quickstart.teacher, 10, load=False), tmp_path / "t.pt")
    job_file = write_job(
        {
            "teacher.checkpoint": str(teacher),
            "train.epochs": 1,
            "train.baseline": False,
            "scaling.workers": 2,
            "scaling.cpus_per_worker": 1,
            "scaling.resources_per_worker": {"student": 1},
            "scaling.teacher_pool": {
                "min_actors": 1,
                "max_actors": 1,
                "num_cpus": 0.5,
                "resources": {"teacher": 1},
            },
        },
        name="placed",
    )
    # A short path of its own: Ray's socket paths must stay under 108 characters.
    temp_dir = tempfile.mkdtemp(prefix="rd-pl-", dir="/tmp")
    out = tmp_path / "placement.json"
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
            timeout=300,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    result = json.loads(out.read_text())
    assert sorted(result["nodes"]) == [["head"], ["student"], ["teacher"]]
    placed = Counter(
        (a["class_name"], a["node"])
        for a in result["actors"]
        if "TeacherPredictor" in a["class_name"] or a["class_name"] == "RayTrainWorker"
    )
    pool = {node for (name, node) in placed if "TeacherPredictor" in name}
    workers = {node: n for (name, node), n in placed.items() if name == "RayTrainWorker"}
    assert pool == {"teacher"}, placed
    assert workers == {"student": 2}, placed
    assert [s["name"] for s in result["scores"]] == ["teacher", "student (distilled)"]

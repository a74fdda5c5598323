"""A local Ray started by a job names itself to its own workers, so that Ray Train's
placement-group cleaner asks this Ray, not another one on the machine, whether the Train
controller lives (asking the wrong one removed a running job's placement group)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import json, os, ray
from raydistill.config import load_job
from raydistill.runtime import ray_session

with ray_session(load_job("jobs/digits.yaml"), cpus=2):
    @ray.remote
    def inside():
        from ray.util.state import list_nodes
        return os.environ.get("RAY_ADDRESS"), [n.node_ip for n in list_nodes()]

    seen, nodes = ray.get(inside.remote())
    print(json.dumps({"gcs": ray.get_runtime_context().gcs_address, "seen": seen,
                      "nodes": nodes, "port_env": os.environ.get("RAY_GCS_SERVER_PORT")}))
"""


@pytest.mark.slow
def test_a_local_ray_beside_another_names_itself_to_its_workers(ray_address):
    # the session's cluster is the other Ray on this machine; the probe starts one of its own
    # (in a short temp dir of its own: Ray's socket paths must stay under 108 characters)
    temp_dir = tempfile.mkdtemp(prefix="rd-rt-", dir="/tmp")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = temp_dir
    try:
        out = subprocess.run(
            [sys.executable, "-c", PROBE],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert out.returncode == 0, out.stderr[-3000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["gcs"] != ray_address  # its own Ray, not the session's `ray start` cluster
    assert found["seen"] == found["gcs"]  # what the cleaner's State API calls connect to
    assert len(found["nodes"]) == 1  # and they answered, from this Ray
    assert found["port_env"] is None  # the driver's environment is left as it was

"""A teacher pool no node can host is refused before training (raydistill/runtime.py),
Ray-free: the per-node fit and the one line naming the resource."""

from __future__ import annotations

from pathlib import Path

import pytest

from raydistill import runtime
from raydistill.config import JobError, load_job
from raydistill.runtime import check_pool_resources, missing_everywhere

ROOT = Path(__file__).resolve().parents[1]

CPU_NODE = {"CPU": 16.0, "memory": 1e9}
GPU_NODE = {"CPU": 8.0, "GPU": 1.0, "teacher": 1.0}


def test_an_actor_must_fit_on_one_node():
    assert missing_everywhere({"CPU": 2.0, "GPU": 1.0}, [CPU_NODE, GPU_NODE]) is None
    assert missing_everywhere({"CPU": 1.0, "GPU": 2.0}, [CPU_NODE, GPU_NODE]) == "GPU: 2"
    # each part exists, never together: the whole request is named
    assert missing_everywhere({"CPU": 12.0, "GPU": 1.0}, [CPU_NODE, GPU_NODE]) == "CPU: 12, GPU: 1"


def test_a_pool_this_ray_cannot_host_is_one_line_naming_the_resource(monkeypatch):
    import ray

    job = load_job(ROOT / "jobs" / "digits.yaml", ["scaling.teacher_pool.resources.teacher=1"])
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": CPU_NODE}])
    monkeypatch.setattr(runtime, "_STARTED_HERE", True)
    with pytest.raises(JobError, match=r"teacher actor needs teacher: 1 on one node") as err:
        check_pool_resources(job)
    assert "\n" not in str(err.value)

    # a joined cluster: its autoscaler may add a teacher node, so only a warning
    monkeypatch.setattr(runtime, "_STARTED_HERE", False)
    said: list[str] = []
    check_pool_resources(job, said.append)
    assert said == [
        "warning: no node offers teacher: 1 per teacher actor yet; waiting for the autoscaler"
    ]
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": GPU_NODE}])
    check_pool_resources(job, said.append)
    assert len(said) == 1

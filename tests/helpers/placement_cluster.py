"""Run a job on a three-node Ray cluster on this machine; write where its actors ran as JSON.

    python placement_cluster.py JOB_YAML OUT_JSON TEMP_DIR

Nodes (``ray.cluster_utils.Cluster``, one raylet each): a head with CPUs only, a ``teacher``
node and a ``student`` node, like a cluster with separate teacher and student node groups. Run as
its own process: the pytest process already holds a ``ray.init`` connection to the session's
cluster. Every Ray process it started is stopped before it exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path

NODES = {
    # 2 CPUs on the head: the driver's own tasks, Ray Data reads, Train's controller.
    "head": {"num_cpus": 2, "resources": {}},
    "teacher": {"num_cpus": 2, "resources": {"teacher": 2}},
    "student": {"num_cpus": 2, "resources": {"student": 2}},
}
STORE = 100 * 1024 * 1024  # bytes of object store per node: digits needs little


def main(job_file: str, out: str, temp_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster
    from ray.util.state import list_actors

    from raydistill.config import load_job
    from raydistill.pipeline import run_job
    from raydistill.runtime import quiet_data

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback-only cluster needs no token auth
    node_args = {"object_store_memory": STORE, "temp_dir": temp_dir}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **node_args,
            **NODES["head"],
            # The State API (list_actors) and Train's placement-group cleaner need it.
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": 0,
        },
    )
    try:
        for name in ("teacher", "student"):
            cluster.add_node(**node_args, **NODES[name])
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=True)
        quiet_data()
        summary = run_job(load_job(job_file), log=print)
        nodes = {
            n["NodeID"]: sorted(k for k in NODES if k in n["Resources"]) or ["head"]
            for n in ray.nodes()
            if n["Alive"]
        }
        actors = [
            {"class_name": a.class_name, "node": nodes.get(a.node_id, ["?"])[0], "state": a.state}
            for a in list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
        ]
        result = {
            "nodes": sorted(nodes.values()),
            "actors": actors,
            "scores": [s.as_dict() for s in summary.scores],
        }
        Path(out).write_text(json.dumps(result, indent=1))
    finally:
        import psutil  # vendored by Ray: importable once ray is

        ours = psutil.Process().children(recursive=True)
        with contextlib.suppress(Exception):
            ray.shutdown()
        cluster.shutdown()
        for proc in ours:  # agents a raylet started can outlive it
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.kill()


if __name__ == "__main__":
    main(*sys.argv[1:4])

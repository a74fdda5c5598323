"""Run the node-level jobs on one four-node Ray cluster on this machine; write what happened.

    python node_cluster.py PLACED_JOB NODE_LOSS_JOB OUT_JSON TEMP_DIR

Nodes (``ray.cluster_utils.Cluster``, one raylet each): a head with CPUs only, a ``teacher``
node and two ``student`` nodes with room for one train worker each, like a cluster with
separate teacher and student node groups. Starting a cluster costs more than either job, so the
node-level tests share this one (tests/conftest.py, ``node_cluster_runs``):

1. placement: the first job runs; Ray's State API tells on which node group every actor ran.
2. node loss: the second job trains elastically on the student nodes; once its first training
   checkpoint is on disk, the second student node is removed (its raylet and every process on
   it end, as when a spot node is taken back), and the job's ``scaling.workers: [1, 2]`` and
   ``max_failures`` must carry the run to its end on the node that is left.

Run as its own process (the pytest process holds a connection to the session's cluster); every
Ray process it started is stopped before it exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

NODES = {
    # 2 CPUs on the head: the driver's own tasks, Ray Data reads, Train's controller.
    "head": {"num_cpus": 2, "resources": {}},
    "teacher": {"num_cpus": 2, "resources": {"teacher": 2}},
    "student": {"num_cpus": 2, "resources": {"student": 1}},
}
STORE = 100 * 1024 * 1024  # bytes of object store per node: digits needs little
NODE_LOSS_EPOCHS = 5  # the node-loss job's train.epochs (tests/conftest.py writes the job)


def _node_groups() -> dict[str, str]:
    """Node id -> its group (head, teacher or student), for the nodes alive now."""
    import ray

    return {
        n["NodeID"]: next((k for k in NODES if k in n["Resources"]), "head")
        for n in ray.nodes()
        if n["Alive"]
    }


def placement(job_file: str) -> dict[str, Any]:
    from ray.util.state import list_actors

    from raydistill.config import load_job
    from raydistill.pipeline import run_job

    summary = run_job(load_job(job_file), log=print)
    groups = _node_groups()
    actors = [
        {"class_name": a.class_name, "node": groups.get(a.node_id, "?"), "state": a.state}
        for a in list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
    ]
    return {
        "nodes": sorted(groups.values()),
        "actors": actors,
        "scores": [s.as_dict() for s in summary.scores],
    }


def _kill_workers_of(node: Any) -> None:
    """SIGKILL every worker process a node's raylet started (its children)."""
    import psutil  # vendored by Ray: importable once ray is
    from ray._private import ray_constants

    for info in node.all_processes.get(ray_constants.PROCESS_TYPE_RAYLET, []):
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(info.process.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.kill()


def node_loss(job_file: str, cluster: Any, student_node: Any) -> dict[str, Any]:

    from raydistill.config import load_job
    from raydistill.pipeline import run_job
    from raydistill.train.state import STATE_FILE

    job = load_job(job_file)
    stage = job.run_dir / "baseline"
    removed: dict[str, float] = {}
    started = time.monotonic()
    done = threading.Event()

    def remove_after_first_checkpoint() -> None:
        while not done.is_set() and time.monotonic() - started < 600:
            if any((p / STATE_FILE).is_file() for p in stage.glob("checkpoint_*")):
                # Its train worker dies first and at once, as on a node taken back: a worker
                # left to notice its raylet's end can finish the few remaining epochs of digits
                # before it does (CI saw [2, 2, 2, 2, 2]).
                _kill_workers_of(student_node)
                cluster.remove_node(student_node, allow_graceful=False)
                removed["after_s"] = round(time.monotonic() - started, 1)
                print(f"[node-loss] removed a student node after {removed['after_s']} s")
                return
            done.wait(0.1)

    remover = threading.Thread(target=remove_after_first_checkpoint, daemon=True)
    remover.start()
    try:
        summary = run_job(job, log=print)
    finally:
        done.set()
        remover.join(5)
    removed["stage_ended_s"] = round(time.monotonic() - started, 1)
    return {
        "removed": removed,
        "alive_nodes": sorted(_node_groups().values()),
        "history": summary.stages["baseline"].history,
        "scores": [s.as_dict() for s in summary.scores],
    }


def main(placed_job: str, node_loss_job: str, out: str, temp_dir: str) -> None:
    import ray
    from ray._common.utils import get_ray_address_file
    from ray.cluster_utils import Cluster

    from raydistill.runtime import quiet_data

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback-only cluster needs no token auth
    # Cluster() records its head's address in Ray's default temp dir (/tmp/ray) whatever
    # temp_dir the nodes use, and fails when that directory is missing, as on a fresh machine
    # where no Ray has run with the default temp dir yet.
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
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
        cluster.add_node(**node_args, **NODES["teacher"])
        students = [cluster.add_node(**node_args, **NODES["student"]) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=True)
        quiet_data()
        result = {"placement": placement(placed_job)}
        result["node_loss"] = node_loss(node_loss_job, cluster, students[1])
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
    main(*sys.argv[1:5])

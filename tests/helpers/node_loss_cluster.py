"""Run a job on a three-node Ray cluster on this machine and remove a node while it trains.

    python node_loss_cluster.py JOB_YAML OUT_JSON TEMP_DIR

Nodes (``ray.cluster_utils.Cluster``, one raylet each): a head with CPUs only and two ``student``
nodes, each room for one train worker. Once the first training checkpoint is on disk, the second
student node is removed (its raylet and every process on it end, as when a spot node is taken
back); the job's elastic ``scaling.workers: [1, 2]`` and ``max_failures`` must carry the run to
its end on the node that is left. Writes the run's history and what happened as JSON. Run as its
own process (the pytest process holds a connection to the session's cluster); every Ray process
it started is stopped before it exits.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
from pathlib import Path

NODES = {
    "head": {"num_cpus": 2, "resources": {}},
    "student": {"num_cpus": 2, "resources": {"student": 1}},
}
STORE = 100 * 1024 * 1024  # bytes of object store per node: digits needs little


def main(job_file: str, out: str, temp_dir: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from raydistill.config import load_job
    from raydistill.pipeline import run_job
    from raydistill.runtime import quiet_data
    from raydistill.train.state import STATE_FILE

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback-only cluster needs no token auth
    node_args = {"object_store_memory": STORE, "temp_dir": temp_dir}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **node_args,
            **NODES["head"],
            "include_dashboard": True,
            "dashboard_host": "127.0.0.1",
            "dashboard_port": 0,
        },
    )
    removed: dict[str, float] = {}
    try:
        students = [cluster.add_node(**node_args, **NODES["student"]) for _ in range(2)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=True)
        quiet_data()
        job = load_job(job_file)
        stage = job.run_dir / "baseline"
        started = time.monotonic()

        def remove_after_first_checkpoint() -> None:
            while time.monotonic() - started < 600:
                if any((p / STATE_FILE).is_file() for p in stage.glob("checkpoint_*")):
                    cluster.remove_node(students[1], allow_graceful=False)
                    removed["after_s"] = round(time.monotonic() - started, 1)
                    print(f"[node-loss] removed a student node after {removed['after_s']} s")
                    return
                time.sleep(0.1)

        remover = threading.Thread(target=remove_after_first_checkpoint, daemon=True)
        remover.start()
        summary = run_job(job, log=print)
        remover.join(5)
        result = {
            "removed": removed,
            "alive_nodes": sum(1 for n in ray.nodes() if n["Alive"]),
            "history": summary.stages["baseline"].history,
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

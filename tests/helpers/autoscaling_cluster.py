"""Run jobs on a Ray cluster whose teacher nodes Ray's own autoscaler launches; write what
happened.

    python autoscaling_cluster.py AUTO_JOB UNHOSTABLE_JOB OUT_JSON TEMP_DIR GCS_PORT

The head is started with ``ray start --head --autoscaling-config=FILE``, as the cluster
launcher starts one, so that Ray's autoscaler (its ``monitor`` process) runs on it. Its node
provider is Ray's fake multi-node provider: a node it "launches" is one more raylet on this
machine. (``ray.cluster_utils.AutoscalingCluster`` does the same, but runs ``ray stop --force``
first, which would stop every Ray on the machine, and reads an example config that Ray's wheel
does not ship, so the provider is named as an external module here.) The config has CPU-only
head and a ``teacher`` node type, none up at the start:

1. auto: a job whose pool is ``max_actors: auto`` with ``{teacher: 1}`` per actor: the pool is
   sized from the autoscaler's node types, its actors wait for teacher nodes, the autoscaler
   launches them, and the job finishes.
2. unhostable: a job whose actors ask for a resource no node type offers is refused before
   training, naming it.

Every process of the cluster is stopped by pid before this exits (never ``ray stop``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HEAD_ID = "f" * 51 + "00000"  # the fake provider's fixed head node id
TEACHER_NODES = 2  # the teacher node type's max_workers
PROVIDER = "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def autoscaling_config(gcs_port: int) -> dict[str, Any]:
    """A launcher-style config: a 2-CPU head, and teacher nodes (1 CPU, ``teacher: 1``) that
    the autoscaler may add up to ``TEACHER_NODES`` and removes after 6 s idle."""
    return {
        "cluster_name": "raydistill-test",
        "max_workers": TEACHER_NODES,
        "provider": {
            "type": "external",
            "module": PROVIDER,
            "gcs_address": f"127.0.0.1:{gcs_port}",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
        },
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 2}, "node_config": {}, "max_workers": 0},
            "teacher": {
                "resources": {"CPU": 1, "teacher": 1, "object_store_memory": 100 * 1024**2},
                "node_config": {},
                "min_workers": 0,
                "max_workers": TEACHER_NODES,
            },
        },
        "head_node_type": "ray.head.default",
        "idle_timeout_minutes": 0.1,
        "upscaling_speed": 1.0,
        "auth": {},
        "docker": {},
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }


def start_head(temp_dir: Path, port: int) -> None:
    """``ray start --head`` with the autoscaler, its GCS on ``port``."""
    config = temp_dir / "autoscaling.json"
    config.write_text(json.dumps(autoscaling_config(port)))
    env = {
        **os.environ,
        "RAY_FAKE_CLUSTER": "1",  # the fake provider refuses to run without it
        "AUTOSCALER_UPDATE_INTERVAL_S": "1",
        "RAY_OVERRIDE_NODE_ID_FOR_TESTING": HEAD_ID,
    }
    ray_cli = str(Path(sys.executable).with_name("ray"))
    done = subprocess.run(
        [
            ray_cli,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            "--num-cpus=2",
            "--object-store-memory=100000000",
            f"--autoscaling-config={config}",
            f"--temp-dir={temp_dir}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            "--disable-usage-stats",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"ray start failed: {(done.stdout + done.stderr)[-3000:]}")


def teacher_nodes() -> list[str]:
    import ray

    return [n["NodeID"] for n in ray.nodes() if n["Alive"] and "teacher" in n["Resources"]]


def main(auto_job: str, unhostable_job: str, out: str, temp_dir: str, gcs_port: str) -> None:
    import ray
    from ray_processes import stop_cluster

    from raydistill.config import JobError, load_job
    from raydistill.pipeline import run_job
    from raydistill.runtime import quiet_data

    os.environ["RAY_AUTH_MODE"] = "disabled"  # a loopback-only cluster needs no token auth
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    temp, port = Path(temp_dir), int(gcs_port)
    start_head(temp, port)
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    try:
        ray.init(address=f"127.0.0.1:{port}", log_to_driver=True)
        quiet_data()
        result: dict[str, Any] = {"teacher_nodes_before": len(teacher_nodes())}
        started, peak, done = time.monotonic(), [0], threading.Event()

        def watch() -> None:  # idle teacher nodes go after 6 s: count them while the job runs
            while not done.wait(0.5):
                peak[0] = max(peak[0], len(teacher_nodes()))

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            summary = run_job(load_job(auto_job), log=log)
        finally:
            done.set()
            watcher.join(5)
        result.update(
            seconds=round(time.monotonic() - started, 1),
            teacher_nodes_peak=peak[0],
            scores=[s.as_dict() for s in summary.scores],
        )
        try:
            run_job(load_job(unhostable_job), log=log)
            result["unhostable"] = None
        except JobError as exc:
            result["unhostable"] = str(exc)
        Path(out).write_text(json.dumps(result, indent=1))
    finally:
        ray.shutdown()
        stop_cluster(temp, port)


if __name__ == "__main__":
    main(*sys.argv[1:6])

"""Stop one Ray cluster's processes by pid, leaving every other Ray on the machine running."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def stop_cluster(temp_dir: Path, gcs_port: int) -> None:
    """Stop only this session's Ray processes (``ray stop`` would stop every Ray on the machine,
    including a user's running jobs)."""
    # psutil is vendored by Ray: importable once ray is
    import ray  # noqa: F401, I001
    import psutil

    # The Ray client server names only the GCS address; the dashboard and runtime-env agents
    # name nothing of ours and are found as children of the raylet, before it stops.
    gcs = ("--address=", "--gcs-address=")
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            args = proc.info["cmdline"] or ()
            if any(
                str(temp_dir) in a or (a.startswith(gcs) and a.endswith(f":{gcs_port}"))
                for a in args
            ):
                found[proc.pid] = proc
                found.update((child.pid, child) for child in proc.children(recursive=True))
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    found.pop(os.getpid(), None)  # the caller itself may name the temp dir on its command line
    ours = list(found.values())
    for proc in ours:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    # some of Ray's processes outlive SIGTERM (a measured teardown waited the whole 15 s it
    # was given): they are killed after 5 s instead
    _, alive = psutil.wait_procs(ours, timeout=5)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()

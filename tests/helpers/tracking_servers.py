"""A real ``mlflow server`` on 127.0.0.1 for the tracking tests, and W&B's offline files read back.

The server runs in its own process group with a sqlite backend store and an artifact root in
the test's directory, is waited for by polling its ``/health`` endpoint, and is stopped by its
pid. W&B's offline run (``<dir>/wandb/offline-run-*/run-<id>.wandb``) is its transaction log:
LevelDB's log format (32 KiB blocks of checksummed records) after a 7-byte W&B header, each
record one ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def mlflow_server(directory: Path, startup_s: float = 180.0) -> Iterator[str]:
    """An MLflow tracking server storing under ``directory``; yields its URL."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{directory / 'mlflow.db'}",
        "--artifacts-destination",
        str(directory / "artifacts"),
    ]
    log = open(directory / "server.log", "w")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while not _healthy(url):
            if server.poll() is not None or time.monotonic() > deadline:
                tail = (directory / "server.log").read_text()[-3000:]
                raise RuntimeError(f"mlflow server did not start ({server.returncode}): {tail}")
            time.sleep(0.3)
        yield url
    finally:
        _stop(server)
        log.close()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
            return answer.status == 200
    except OSError:
        return False


def _stop(server: subprocess.Popen) -> None:
    # uvicorn's graceful stop waits for idle keep-alive clients and outlasted 15 s here; the
    # server's store is a test's scratch sqlite file, so a short grace then SIGKILL loses nothing.
    for sig, wait_s in ((signal.SIGTERM, 2), (signal.SIGKILL, 15)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            return
        try:
            server.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


HEADER_BYTES = 7  # ":W&B", magic 0xBEE1, version
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def wandb_records(run_file: Path) -> list[Any]:
    """Every record of a W&B offline run's ``run-<id>.wandb`` file, in order."""
    from wandb.proto import wandb_internal_pb2

    data = run_file.read_bytes()
    assert data[:4] == b":W&B", run_file
    records, offset, pending = [], HEADER_BYTES, b""
    while offset + 7 <= len(data):
        if BLOCK - offset % BLOCK < 7:  # a block's tail too short for a header is padding
            offset += BLOCK - offset % BLOCK
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
        if length == 0 and kind == 0:
            break
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def wandb_runs(wandb_dir: Path) -> list[dict[str, Any]]:
    """Each offline run under ``wandb_dir`` as a dict: its group, job type, name, config,
    history rows ({key: value} by ``_step``) and logged artifacts (name, type)."""
    import json

    runs = []
    for run_file in sorted(wandb_dir.glob("wandb/offline-run-*/run-*.wandb")):
        found: dict[str, Any] = {
            "history": {},
            "artifacts": [],
            "config": {},
            "dir": run_file.parent,
        }
        for record in wandb_records(run_file):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                found.update(
                    group=record.run.run_group,
                    job_type=record.run.job_type,
                    name=record.run.display_name,
                    id=record.run.run_id,
                )
                for item in record.run.config.update:
                    found["config"][item.key] = json.loads(item.value_json)
            elif kind == "config":
                for item in record.config.update:
                    found["config"][item.key] = json.loads(item.value_json)
            elif kind == "history":
                row = {i.key or ".".join(i.nested_key): _value(i) for i in record.history.item}
                found["history"][row.get("_step")] = row
            elif kind == "artifact":
                found["artifacts"].append((record.artifact.name, record.artifact.type))
        runs.append(found)
    return runs


def _value(item: Any) -> Any:
    """A history item's value: JSON text in ``value_json``, or one typed field."""
    import json

    if item.value_json:
        return json.loads(item.value_json)
    for name in ("number", "integer", "boolean", "text"):
        if item.HasField(name):
            return getattr(item, name)
    return json.loads(item.json) if item.json else None

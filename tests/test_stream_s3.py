"""File sources on object storage: an ``s3://`` source read through a real S3 API server
(moto, on loopback, started and stopped here) plans and streams exactly as its local copy."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from test_stream import _all_ids, _rows, write_images, write_parquet

from raydistill.config import DataConfig, JobError
from raydistill.data.listing import filesystem
from raydistill.data.sources import load_splits

MOTO = Path(sys.executable).with_name("moto_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, with the AWS variables pyarrow reads pointing at it."""
    if not MOTO.exists():
        pytest.fail(f"{MOTO} is missing: the test extras install moto[server]")
    port = _free_port()
    server = subprocess.Popen(
        [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    saved = {
        k: os.environ.get(k)
        for k in (
            "AWS_ENDPOINT_URL",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_DEFAULT_REGION",
        )
    }
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ACCESS_KEY_ID="test",
            AWS_SECRET_ACCESS_KEY="test",
            AWS_DEFAULT_REGION="us-east-1",
        )
        filesystem.cache_clear()
        yield endpoint
    finally:
        server.kill()
        server.wait()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        filesystem.cache_clear()


def _upload(endpoint: str, local: Path, bucket: str, prefix: str) -> str:
    import pyarrow.fs as pafs

    s3 = pafs.S3FileSystem(endpoint_override=endpoint, allow_bucket_creation=True)
    s3.create_dir(bucket)
    pafs.copy_files(str(local), f"{bucket}/{prefix}", destination_filesystem=s3)
    return f"s3://{bucket}/{prefix}"


@pytest.mark.parametrize("source", ["parquet", "image_folder"])
def test_an_s3_source_streams_like_its_local_copy(s3_endpoint, tmp_path, source):
    if source == "parquet":
        local = write_parquet(tmp_path / "pq", *_rows(n=300), files=3)
    else:
        local = write_images(tmp_path / "img", {"ant": 25, "bee": 20})
    remote = _upload(s3_endpoint, local, f"b-{source.replace('_', '-')}", "data")
    here = load_splits(DataConfig(source=source, path=str(local)))
    there = load_splits(DataConfig(source=source, path=remote))
    for name in ("train", "val", "test"):
        assert len(there[name]) == len(here[name]) > 0
        assert there[name].class_counts().tolist() == here[name].class_counts().tolist()
        assert _all_ids(there[name]) == _all_ids(here[name])  # keys are paths under the root
        a, b = there[name].head(500), here[name].head(500)
        assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.labels, b.labels)
    assert there["train"].fingerprint() == here["train"].fingerprint()  # same data, same stages
    shutil.rmtree(local)


def test_a_missing_s3_path_is_named(s3_endpoint, tmp_path):
    remote = _upload(s3_endpoint, write_parquet(tmp_path / "pq", *_rows(n=20), files=1), "b-x", "d")
    with pytest.raises(JobError, match=r"data.path: not found: s3://b-x/nope"):
        load_splits(DataConfig(source="parquet", path=remote.replace("/d", "/nope")))

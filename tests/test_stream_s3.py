"""File sources on object storage: an ``s3://`` source read through a real S3 API server
(moto, on loopback, started and stopped here) plans and streams exactly as its local copy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from moto_s3 import moto_server
from test_stream import _all_ids, _rows, write_images, write_parquet

from raydistill.config import DataConfig, JobError
from raydistill.data.listing import filesystem
from raydistill.data.sources import load_splits


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1, with the AWS variables pyarrow reads pointing at it."""
    filesystem.cache_clear()
    try:
        with moto_server() as endpoint:
            yield endpoint
    finally:
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

"""The Parquet teacher cache on a real local Ray: one pass, reuse, refusal, recovery."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from raydistill.config import JobError, load_job
from raydistill.data.sources import load_splits
from raydistill.pipeline import run_cache, run_job
from raydistill.teacher.cache import MANIFEST, verify_cache

pytestmark = pytest.mark.slow

SHORT = {
    "teacher.train": {"epochs": 3},
    "train.epochs": 3,
    "train.baseline": False,
    "scaling.workers": 1,
    "distill.teacher_pass": "cache",
}


def test_cache_written_once_reused_and_trained_from(ray_address, write_job):
    job = load_job(write_job({**SHORT, "cache.codec": "topk", "cache.k": 4}, name="cached"))
    splits = load_splits(job.data)
    manifest = run_cache(job, log=print)

    rows = len(splits["train"]) + len(splits["val"])
    assert manifest["teacher_forward_passes"] == rows
    assert manifest["rows"] == {"train": len(splits["train"]), "val": len(splits["val"])}
    assert manifest["logit_bytes_per_sample"] == 4 * (2 + 2) + 4
    table = pq.read_table(job.cache_dir / "train")
    assert table.num_rows == len(splits["train"])
    assert {"input", "label", "row_id", "teacher_topk_values", "teacher_topk_indices",
            "teacher_tail_logit"} <= set(table.column_names)
    assert sorted(table.column("label").to_pylist()) == sorted(splits["train"].labels.tolist())

    # train reads the cache; the manifest is untouched (no second teacher pass)
    before = (job.cache_dir / MANIFEST).read_text()
    summary = run_job(job, log=print)
    assert (job.cache_dir / MANIFEST).read_text() == before
    history = summary.stages["student"].history
    assert all(h["train_soft"] > 0 for h in history)
    assert summary.score("student (distilled)").accuracy > 0.3

    # a job asking for another codec is refused, naming what differs
    other = load_job(write_job({**SHORT, "cache.codec": "fp16"}, name="cached"))
    with pytest.raises(JobError, match=r"made for another job: differs in .*codec.kind"):
        run_job(other, log=print)

    # a damaged file is reported, never read as whole
    victim = next((job.cache_dir / "val").glob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(JobError, match="has changed"):
        verify_cache(job.cache_dir, json.loads(before)["key"])
    victim.unlink()
    with pytest.raises(JobError, match="is missing"):
        verify_cache(job.cache_dir, json.loads(before)["key"])

    # a cache without its manifest (a killed `cache` run) is rebuilt, not read
    (job.cache_dir / MANIFEST).unlink()
    rebuilt = run_cache(job, log=print)
    assert rebuilt["teacher_forward_passes"] == rows
    verify_cache(job.cache_dir, rebuilt["key"])

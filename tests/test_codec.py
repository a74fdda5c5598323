"""Teacher-logit codecs: what they keep, what they cost, the KD loss error of top-k, and that a
logit offset (which changes nothing a student learns) changes nothing they store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydistill.distill.losses import soft_target_loss
from raydistill.teacher.codec import LogitCodec


def _peaked_logits(n: int, c: int, seed: int = 0) -> np.ndarray:
    """Logits like a trained classifier's: one clear winner, a few runners-up, a long tail."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(n, c)).astype(np.float32)
    logits[np.arange(n), rng.integers(0, c, n)] += 9.0
    logits[np.arange(n), rng.integers(0, c, n)] += 5.0
    return logits


def test_dense_codecs_round_trip():
    logits = _peaked_logits(32, 10)
    assert torch.equal(
        LogitCodec("fp32").decode(LogitCodec("fp32").encode(logits), 10), torch.from_numpy(logits)
    )
    fp16 = LogitCodec("fp16")
    decoded = fp16.decode(fp16.encode(logits), 10)
    # fp16 stores log-probabilities: the logits less their logsumexp, same softmax
    log_p = torch.log_softmax(torch.from_numpy(logits).double(), -1).float()
    assert torch.allclose(decoded, log_p, atol=1e-2)
    assert torch.allclose(torch.softmax(decoded, -1), torch.softmax(log_p, -1), atol=1e-3)


def test_topk_keeps_top_probabilities_and_tail_mass_exactly_at_t1():
    logits = _peaked_logits(64, 1000)
    codec = LogitCodec("topk", k=16)
    decoded = codec.decode(codec.encode(logits), 1000)
    p_true = torch.softmax(torch.from_numpy(logits), -1)
    p_dec = torch.softmax(decoded, -1)
    top = torch.topk(p_true, 16, dim=-1).indices
    kept_true, kept_dec = p_true.gather(1, top), p_dec.gather(1, top)
    assert torch.allclose(kept_dec, kept_true, rtol=1e-2, atol=1e-5)  # fp16 values
    assert torch.allclose(1 - kept_dec.sum(1), 1 - kept_true.sum(1), atol=1e-3)
    assert torch.allclose(p_dec.sum(1), torch.ones(64), atol=1e-5)


def test_topk_with_k_at_least_classes_is_exact():
    logits = _peaked_logits(8, 10)
    codec = LogitCodec("topk", k=16)
    decoded = codec.decode(codec.encode(logits), 10)
    assert torch.allclose(
        torch.softmax(decoded, -1), torch.softmax(torch.from_numpy(logits), -1), atol=1e-3
    )


# The tail is spread evenly on decode, which is exact in mass at T=1; at higher temperatures the
# real tail's shape matters more (benchmarks/teacher_codecs.py prints the error by temperature).
@pytest.mark.parametrize(
    ("k", "temperature", "max_rel_error"), [(16, 1.0, 0.02), (128, 1.0, 0.01), (128, 2.0, 0.15)]
)
def test_topk_kd_loss_error_against_dense(k, temperature, max_rel_error):
    logits = _peaked_logits(256, 1000, seed=1)
    student = torch.from_numpy(_peaked_logits(256, 1000, seed=2))
    codec = LogitCodec("topk", k=k)
    dense = soft_target_loss(student, torch.from_numpy(logits), temperature).item()
    decoded = codec.decode(codec.encode(logits), 1000)
    approx = soft_target_loss(student, decoded, temperature).item()
    assert abs(approx - dense) / dense < max_rel_error


def test_bytes_per_sample():
    assert [LogitCodec("fp32").bytes_per_sample(c) for c in (10, 1000, 32000)] == [40, 4000, 128000]
    assert [LogitCodec("fp16").bytes_per_sample(c) for c in (10, 1000, 32000)] == [20, 2000, 64000]
    # k values (fp16) + k indices (int16 below 32768 classes, else int32) + one fp32 tail logit
    topk = LogitCodec("topk", k=16)
    assert [topk.bytes_per_sample(c) for c in (10, 1000, 32000, 50000)] == [44, 68, 68, 100]
    encoded = topk.encode(_peaked_logits(4, 1000))
    assert sum(a.nbytes for a in encoded.values()) == 4 * topk.bytes_per_sample(1000)


@pytest.mark.parametrize("codec", [LogitCodec("fp16"), LogitCodec("topk", k=16)], ids=str)
def test_a_logit_offset_costs_no_precision(codec):
    """+500 on every logit leaves the soft targets unchanged, so what a codec decodes must not
    depend on it (raw logits in float16 lost precision with magnitude: the top-k probability
    error grew from 0.001 to 0.031). Checked at T=1 (top probabilities) and T=4 (the tail)."""
    logits = _peaked_logits(256, 1000, seed=3)
    dense = torch.softmax(torch.from_numpy(logits).double(), -1)
    top = torch.topk(dense, 16, dim=-1).indices
    decoded = {}
    for offset in (0.0, 500.0):
        decoded[offset] = codec.decode(codec.encode(logits + np.float32(offset)), 1000)
        p = torch.softmax(decoded[offset].double(), -1)
        assert (p.gather(1, top) - dense.gather(1, top)).abs().max() < 2e-3, offset
        for t in (1.0, 4.0):
            p_t = torch.softmax(decoded[offset].double() / t, -1)
            dense_t = torch.softmax(torch.from_numpy(logits).double() / t, -1)
            if codec.kind == "fp16":  # dense: every class is kept, the soft targets match
                assert 0.5 * (p_t - dense_t).abs().sum(-1).max() < 1e-3, (offset, t)
    # the stored values themselves are offset-free (float32 input rounding aside)
    assert torch.allclose(decoded[0.0], decoded[500.0], atol=2e-2)
    assert torch.equal(decoded[0.0].argmax(-1), torch.from_numpy(logits).argmax(-1))


def test_decoded_values_are_log_probabilities():
    """Decode's output is usable as logits and is itself log p: softmax at any T matches."""
    logits = _peaked_logits(16, 50, seed=4) + 123.0
    for codec in (LogitCodec("fp16"), LogitCodec("topk", k=50)):
        decoded = codec.decode(codec.encode(logits), 50)
        assert decoded.max().item() <= 0.0
        assert torch.allclose(
            torch.logsumexp(decoded.double(), -1), torch.zeros(16).double(), atol=2e-2
        )
        for t in (1.0, 4.0):
            expected = torch.softmax(torch.from_numpy(logits) / t, -1)
            assert torch.allclose(torch.softmax(decoded / t, -1), expected, atol=2e-3)

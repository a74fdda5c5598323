"""Teacher-logit codecs: what they keep, what they cost, and the KD loss error of top-k."""

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
    assert torch.allclose(decoded, torch.from_numpy(logits), atol=1e-2)


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

"""Streaming class balancing: per-batch draws whose histogram meets the target."""

from __future__ import annotations

import numpy as np
import pytest

from raydistill.data.balance import ClassBalancer, balance_rng


def _imbalanced_labels() -> np.ndarray:
    counts = [400, 200, 100, 50, 25]  # mean 155
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.default_rng(0).permutation(labels)


def test_factors_follow_the_definition():
    counts = np.array([400, 200, 100, 50, 25])
    b = ClassBalancer.from_counts(counts, keep_ratio=0.7)
    assert b.target == pytest.approx(155.0)
    assert b.keep.tolist() == [0.7, 0.7, 1.0, 1.0, 1.0]
    assert b.repeat.tolist() == pytest.approx([1.0, 1.0, 1.55, 3.1, 6.2])
    assert b.expected_counts(counts).tolist() == pytest.approx([280, 140, 155, 155, 155])
    only_down = ClassBalancer.from_counts(counts, keep_ratio=0.5, repeat_rare=False, target=150)
    assert only_down.expected_counts(counts).tolist() == pytest.approx([200, 100, 100, 50, 25])


def test_streamed_histogram_matches_target_within_tolerance():
    labels = _imbalanced_labels()
    counts = np.bincount(labels)
    b = ClassBalancer.from_counts(counts, keep_ratio=0.7)
    epochs, seen = 20, np.zeros(5)
    for epoch in range(epochs):
        for step, start in enumerate(range(0, len(labels), 32)):
            batch = labels[start : start + 32]
            seen += np.bincount(batch[b.select(batch, balance_rng(0, epoch, 0, step))], minlength=5)
    per_epoch = seen / epochs
    assert np.allclose(per_epoch, b.expected_counts(counts), rtol=0.05)


def test_draws_are_new_each_epoch_and_repeatable():
    labels = _imbalanced_labels()[:64]
    b = ClassBalancer.from_counts(np.bincount(labels, minlength=5), keep_ratio=0.7)
    first = b.select(labels, balance_rng(3, 0, 0, 0))
    assert np.array_equal(first, b.select(labels, balance_rng(3, 0, 0, 0)))
    assert not np.array_equal(first, b.select(labels, balance_rng(3, 1, 0, 0)))
    assert np.all(np.diff(first) >= 0)  # batch order kept, repeats adjacent


def test_the_task_trains_on_every_draw_even_one_as_long_as_its_batch():
    """What a classification stage's batches hold: the balancer's draw, step after step. A draw
    that by chance has as many rows as its batch (dropped frequent rows, repeated rare ones) is
    still another set of rows; the stage once trained on the unbalanced batch then."""
    from types import SimpleNamespace

    import torch

    from raydistill.columns import LABEL, ROW_ID
    from raydistill.tasks.classification import ClassificationTask
    from raydistill.train.shards import InMemoryShard

    labels = _imbalanced_labels()
    counts = np.bincount(labels)
    b = ClassBalancer.from_counts(counts, keep_ratio=0.7)
    shard = InMemoryShard({LABEL: labels, ROW_ID: np.arange(len(labels))})
    job = SimpleNamespace(seed=0, data=SimpleNamespace(shuffle_buffer=0, labelled_fraction=None))
    spec = SimpleNamespace(job=job, train=SimpleNamespace(batch_size=32), balancer=b)
    task, epochs, seen, same_length = ClassificationTask(), 20, np.zeros(5), 0
    for epoch in range(epochs):
        starts = range(0, len(labels), 32)
        batches = task.train_batches(shard, spec, epoch, 0, seed=None)
        for step, (start, batch) in enumerate(zip(starts, batches, strict=True)):
            raw = labels[start : start + 32]
            drawn = raw[b.select(raw, balance_rng(0, epoch, 0, step))]
            same_length += len(drawn) == len(raw)
            assert torch.equal(batch[LABEL], torch.from_numpy(drawn)), (epoch, step)
            seen += np.bincount(batch[LABEL].numpy(), minlength=5)
    assert same_length > 0  # the case that was lost is among the draws
    assert np.allclose(seen / epochs, b.expected_counts(counts), rtol=0.05)

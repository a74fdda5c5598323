"""Rows held in worker memory (raydistill.train.shards), Ray-free: every row once per epoch
across the ranks, the same step count on every rank, a seeded order that changes per epoch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydistill.columns import INPUT, LABEL, ROW_ID, VIEW
from raydistill.train.shards import InMemoryShard, rank_rows


def _split(rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A split as a materialized dataset's blocks may come: row ids in no particular order."""
    ids = np.random.default_rng(seed).permutation(rows)
    return {
        INPUT: np.stack([np.full((2, 2), i, dtype=np.float32) for i in ids]),
        LABEL: ids % 3,
        ROW_ID: ids,
    }


def _epoch_ids(shard: InMemoryShard, batch: int, seed: int | None) -> tuple[list[int], int]:
    shuffle = 8 if seed is not None else None
    ids, steps = [], 0
    for b in shard.iter_torch_batches(
        batch, local_shuffle_buffer_size=shuffle, local_shuffle_seed=seed
    ):
        assert torch.equal(b[INPUT][:, 0, 0].long(), b[ROW_ID])  # columns stay row-aligned
        ids += b[ROW_ID].tolist()
        steps += 1
    return ids, steps


@pytest.mark.parametrize(("rows", "world"), [(103, 1), (103, 2), (100, 2), (101, 3), (7, 4)])
def test_every_row_once_per_epoch_across_ranks_with_equal_steps(rows: int, world: int) -> None:
    columns = _split(rows)
    shards = [InMemoryShard.for_rank(columns, r, world) for r in range(world)]
    per_rank = [_epoch_ids(s, 5, seed=11 + r) for r, s in enumerate(shards)]
    seen = [i for ids, _ in per_rank for i in ids]
    assert len(seen) == len(set(seen))  # no row twice
    # every row but the remainder of an equal split (the last row ids), as Ray Data drops it
    assert sorted(seen) == list(range(rows - rows % world))
    assert len({steps for _, steps in per_rank}) == 1  # the same steps on every rank


def test_sharding_depends_on_row_ids_not_on_the_order_rows_were_read_in() -> None:
    a, b = _split(50, seed=1), _split(50, seed=2)
    for rank in range(2):
        ids_a = InMemoryShard.for_rank(a, rank, 2).columns[ROW_ID]
        ids_b = InMemoryShard.for_rank(b, rank, 2).columns[ROW_ID]
        assert ids_a.tolist() == ids_b.tolist()
    # views of one row are told apart by their view
    views = {ROW_ID: np.array([1, 0, 1, 0]), VIEW: np.array([1, 1, 0, 0])}
    order = rank_rows(views, 0, 1)
    assert [(views[ROW_ID][i], views[VIEW][i]) for i in order] == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_the_seeded_order_differs_by_epoch_and_repeats_for_the_same_seed() -> None:
    shard = InMemoryShard.for_rank(_split(64), 0, 1)
    first, _ = _epoch_ids(shard, 8, seed=100)
    again, _ = _epoch_ids(shard, 8, seed=100)
    other, _ = _epoch_ids(shard, 8, seed=201)
    assert first == again
    assert first != other and sorted(first) == sorted(other)
    held, _ = _epoch_ids(shard, 8, seed=None)  # no shuffle (validation): row id order
    assert held == list(range(64))


def test_batches_are_fresh_tensors_and_numpy_batches_match() -> None:
    shard = InMemoryShard.for_rank(_split(10), 0, 1)
    batch = next(shard.iter_torch_batches(4))
    batch[INPUT].zero_()  # a step writing into its batch leaves the held rows alone
    assert next(shard.iter_torch_batches(4))[INPUT].sum() > 0
    numpy = next(shard.iter_batches(4, local_shuffle_buffer_size=8, local_shuffle_seed=3))
    tensors = next(shard.iter_torch_batches(4, local_shuffle_buffer_size=8, local_shuffle_seed=3))
    assert numpy[ROW_ID].tolist() == tensors[ROW_ID].tolist()
    assert tensors[LABEL].dtype == torch.int64 and tensors[INPUT].dtype == torch.float32


def test_a_derived_column_is_computed_once_per_key_and_follows_its_rows() -> None:
    shard = InMemoryShard.for_rank(_split(40), 0, 1)
    calls: list[int] = []

    def odd(columns: dict[str, np.ndarray]) -> np.ndarray:
        calls.append(len(columns[ROW_ID]))
        return columns[ROW_ID] % 2 == 1

    next(shard.iter_torch_batches(8))  # tensors made before the column: it is added to them
    for _ in range(3):  # once per stage, not per epoch or batch
        shard.derive("odd", key=("odd", 0), compute=odd)
    assert calls == [40]
    for seed in (5, 6):
        for b in shard.iter_torch_batches(
            8, local_shuffle_buffer_size=8, local_shuffle_seed=seed
        ):
            assert b["odd"].dtype == torch.bool
            assert torch.equal(b["odd"], b[ROW_ID] % 2 == 1)  # each row's own value
    shard.derive("odd", key=("odd", 1), compute=lambda c: c[ROW_ID] % 2 == 0)  # other settings
    assert torch.equal(next(shard.iter_torch_batches(40))["odd"], torch.arange(40) % 2 == 0)
    with pytest.raises(ValueError, match="held already"):
        shard.derive(LABEL, key=0, compute=lambda c: c[LABEL])
    with pytest.raises(ValueError, match="3 rows, not 40"):
        shard.derive("short", key=0, compute=lambda c: np.zeros(3))

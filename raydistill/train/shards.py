"""Rows held in a train worker's memory, and small splits sharded across workers by row id.

A stage's materialized split (the teacher pass ``once``'s rows, an in-memory source's rows)
whose rows take at most ``scaling.in_memory_max_mb`` is not streamed through Ray Data every
epoch: each worker reads the split's blocks from the object store once per stage
(:func:`read_blocks`), keeps its own rows (:func:`rank_rows`) and iterates them every epoch
in plain torch (:class:`InMemoryShard`). That removes Ray Data's per-batch iterator cost from
the epoch (the loop then runs at the speed of a plain PyTorch loop), and makes which worker
trains on which row a function of the row ids, not of Ray Data's timing-dependent streaming
split, so a job gives the same result run after run with any number of workers. Larger or
lazy splits (a per-epoch teacher pool, augmented views, a streamed file source) keep Ray
Data's streaming split.

Ray-free except :func:`read_blocks` and :func:`held_datasets`, which import Ray when called.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import torch

from raydistill.columns import ROW_ID, VIEW


def rank_rows(columns: dict[str, np.ndarray], rank: int, world_size: int) -> np.ndarray:
    """Indices of ``rank``'s rows: the rows ordered by ``row_id`` (then ``view``), every
    ``world_size``-th from position ``rank``, cut to ``len // world_size`` rows so that every
    rank holds as many rows as the others and takes as many steps (DDP's all-reduce hangs
    otherwise). The at most ``world_size - 1`` rows left over (the last by row id) are
    dropped, as Ray Data's equal split drops its remainder. Without a ``row_id`` column the
    rows keep the order they were read in."""
    rows = len(next(iter(columns.values()))) if columns else 0
    keys = [columns[k] for k in (VIEW, ROW_ID) if k in columns]  # lexsort: last key first
    order = np.lexsort(keys) if keys else np.arange(rows)
    return order[rank::world_size][: rows // world_size]


class InMemoryShard:
    """Rows held in memory (column -> array [N, ...]) with the two iterators the loop and the
    tasks use on a Ray Data shard: ``iter_torch_batches`` (tensors) and ``iter_batches``
    (numpy). With a shuffle buffer size the order is a full permutation seeded by
    ``local_shuffle_seed`` (a new one each epoch, as the loop's seed changes per epoch);
    without one the rows come in held order. Numeric columns become tensors once, so a batch
    costs one ``index_select`` (or a slice) per column. :meth:`derive` adds a column computed
    once from the held rows (a per-row value a step would otherwise compute per batch)."""

    def __init__(self, columns: dict[str, Any]) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        self.rows = lengths.pop() if lengths else 0
        self._tensors: dict[str, torch.Tensor] | None = None
        self._derived: dict[str, Hashable] = {}  # derived column -> the key it was computed for

    def derive(
        self, name: str, key: Hashable, compute: Callable[[dict[str, np.ndarray]], np.ndarray]
    ) -> None:
        """Hold ``compute(columns)`` (an array [rows, ...], one value per held row) as column
        ``name``; every later batch carries its rows' values. It is computed once per ``key``
        (the settings the values depend on): called again with the same key, nothing is done;
        with another key, the column is computed anew."""
        if name in self._derived and self._derived[name] == key:
            return
        if name in self.columns and name not in self._derived:
            raise ValueError(f"column {name!r} is held already (not a derived one)")
        values = np.asarray(compute(self.columns))
        if len(values) != self.rows:
            raise ValueError(f"derived column {name!r} has {len(values)} rows, not {self.rows}")
        self.columns[name] = values
        self._derived[name] = key
        if self._tensors is not None:
            self._tensors[name] = _as_tensor(values)

    @classmethod
    def for_rank(cls, columns: dict[str, np.ndarray], rank: int, world_size: int) -> InMemoryShard:
        """``rank``'s share of a whole split (see :func:`rank_rows`)."""
        index = rank_rows(columns, rank, world_size)
        return cls({k: v[index] for k, v in columns.items()})

    @property
    def nbytes(self) -> int:
        return sum(int(v.nbytes) for v in self.columns.values())

    def order(self, shuffle: int | None, seed: int | None) -> np.ndarray:
        """The epoch's row order: held order, or a permutation seeded by ``seed``."""
        if not shuffle:
            return np.arange(self.rows)
        return np.random.default_rng(seed).permutation(self.rows)

    def batches(self, batch_size: int, shuffle: int | None, seed: int | None) -> list[Any]:
        """Each batch's rows: a ``slice`` (held order) or an index array (shuffled)."""
        if not shuffle:
            return [slice(s, s + batch_size) for s in range(0, self.rows, batch_size)]
        order = self.order(shuffle, seed)
        return [order[s : s + batch_size] for s in range(0, self.rows, batch_size)]

    def iter_batches(
        self,
        batch_size: int,
        batch_format: str = "numpy",
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        for index in self.batches(batch_size, local_shuffle_buffer_size, local_shuffle_seed):
            yield {k: v[index] for k, v in self.columns.items()}

    def _as_tensors(self) -> dict[str, torch.Tensor]:
        if self._tensors is None:
            self._tensors = {k: _as_tensor(v) for k, v in self.columns.items()}
        return self._tensors

    def iter_torch_batches(
        self,
        batch_size: int,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        tensors = self._as_tensors()
        for index in self.batches(batch_size, local_shuffle_buffer_size, local_shuffle_seed):
            # a fresh tensor per batch, as Ray Data gives: a step may write into its batch
            if isinstance(index, slice):
                yield {k: _copy(v[index]) for k, v in tensors.items()}
            else:
                picked = torch.from_numpy(index)
                yield {
                    k: v.index_select(0, picked) if isinstance(v, torch.Tensor) else v[index]
                    for k, v in tensors.items()
                }


def _as_tensor(values: np.ndarray) -> Any:
    """A numeric column as a tensor of its own (a copy: the arrays may be read-only views of
    the object store); object and string columns have no tensor form (Ray Data refuses them
    too) and stay arrays."""
    return torch.from_numpy(np.array(values)) if values.dtype.kind in "biuf" else values


def _copy(value: Any) -> Any:
    return value.clone() if isinstance(value, torch.Tensor) else value.copy()


def read_blocks(refs: list[Any]) -> dict[str, np.ndarray]:
    """A whole split as numpy columns, from its Arrow blocks' object refs (zero-copy reads
    from this node's object store, one copy per column when concatenated)."""
    import ray
    from ray.data.block import BlockAccessor

    parts = [BlockAccessor.for_block(t).to_numpy() for t in ray.get(refs) if t.num_rows]
    if not parts:
        return {}
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def held_datasets(datasets: dict[str, Any], max_mb: float) -> dict[str, list[Any]]:
    """The datasets a stage's workers hold in memory: materialized ones (their rows are already
    in the object store, so reading them once changes nothing an epoch sees) whose rows take
    at most ``max_mb`` MB; name -> the object refs of its Arrow blocks. 0 holds none."""
    from ray.data.dataset import MaterializedDataset

    held: dict[str, list[Any]] = {}
    for name, ds in datasets.items():
        if max_mb <= 0 or not isinstance(ds, MaterializedDataset):
            continue
        size = ds.size_bytes()
        if size is not None and size <= max_mb * 1e6:
            held[name] = ds.to_arrow_refs()
    return held

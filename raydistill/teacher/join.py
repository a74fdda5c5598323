"""Joining a cache's teacher outputs back onto the inputs streamed from the source.

A cache built with ``cache.inputs: join`` (the default) holds, per row, its key (``row_id``,
and ``view`` with augmentation), its label and the teacher's encoded outputs; not the inputs,
which stay where the source keeps them. Training streams the inputs from the source as usual
and each read task attaches every row's own outputs by key: the outputs of a split (small next
to its inputs: 40 B a row for 10 fp32 logits) go to the object store once and every task looks
its rows up there (a broadcast join: no shuffle, no extra actors to schedule beside the
trainers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from raydistill.columns import INPUT, LABEL, ROW_ID, TEACHER_INPUT, TEXT, VIEW
from raydistill.config import JobError

INPUT_COLUMNS = (INPUT, TEACHER_INPUT, TEXT)  # what a joined cache leaves with the source
KEY_COLUMNS = (ROW_ID, VIEW)
MAX_BROADCAST_BYTES = 1 << 30  # a split's outputs above this do not travel to every task


def drop_inputs(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A teacher-labelled batch without its inputs: what a joined cache stores."""
    return {k: v for k, v in batch.items() if k not in INPUT_COLUMNS}


def _column_numpy(column: pa.ChunkedArray) -> np.ndarray:
    array = column.combine_chunks()
    if hasattr(array, "to_numpy_ndarray"):  # fixed-shape tensor extension column
        return np.asarray(array.to_numpy_ndarray())
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type):
        return np.stack([np.asarray(v) for v in array.to_pylist()])
    return array.to_numpy(zero_copy_only=False)


@dataclass(frozen=True)
class CachedOutputs:
    """One split's cached teacher outputs, sorted by key: ``keys`` int64 [N] (``row_id``, with
    ``view`` folded in when rows have views) and each output column as numpy [N, ...]."""

    keys: np.ndarray
    columns: dict[str, np.ndarray]
    labels: np.ndarray | None  # None: the rows have no label (a causal LM's token rows)

    @classmethod
    def from_table(cls, table: pa.Table, what: str) -> CachedOutputs:
        keys = _keys(
            table.column(ROW_ID).to_numpy(),
            table.column(VIEW).to_numpy() if VIEW in table.column_names else None,
        )
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        if len(keys) > 1 and (keys[1:] == keys[:-1]).any():
            dup = int(keys[1:][keys[1:] == keys[:-1]][0])
            raise JobError(f"{what}: row key {dup} appears twice (two rows share a key?)")
        skip = {*KEY_COLUMNS, LABEL, *INPUT_COLUMNS}
        columns = {
            name: _column_numpy(table.column(name))[order]
            for name in table.column_names
            if name not in skip
        }
        labels = table.column(LABEL).to_numpy()[order] if LABEL in table.column_names else None
        return cls(keys, columns, labels)

    @property
    def nbytes(self) -> int:
        return int(self.keys.nbytes + sum(v.nbytes for v in self.columns.values()))


def _keys(row_id: np.ndarray, view: np.ndarray | None) -> np.ndarray:
    """One int64 key per (row_id, view): row ids are 63-bit hashes or small indices, and at
    most 64 views, so the view goes into the top bits of a remixed id."""
    keys = np.asarray(row_id, dtype=np.int64)
    if view is None:
        return keys
    shifted = (keys.astype(np.uint64) & np.uint64((1 << 57) - 1)) | (
        np.asarray(view, dtype=np.uint64) << np.uint64(57)
    )
    return shifted.astype(np.int64)


_RESOLVED: dict[str, CachedOutputs] = {}  # per process: each task's lookup table, fetched once


def _outputs(ref: Any) -> CachedOutputs:
    if isinstance(ref, CachedOutputs):
        return ref
    import ray

    key = ref.hex()
    if key not in _RESOLVED:
        _RESOLVED.clear()  # one split's table at a time is enough for a read task
        _RESOLVED[key] = ray.get(ref)
    return _RESOLVED[key]


def attach_outputs(batch: dict[str, np.ndarray], outputs: Any, what: str) -> dict[str, Any]:
    """``batch`` (streamed inputs with ``row_id`` [and ``view``]) with each row's cached
    teacher outputs; a row the cache does not hold ends the run naming it."""
    table = _outputs(outputs)
    keys = _keys(batch[ROW_ID], batch.get(VIEW))
    pos = np.searchsorted(table.keys, keys)
    pos = np.minimum(pos, len(table.keys) - 1)
    missing = table.keys[pos] != keys
    if missing.any():
        row = int(np.asarray(batch[ROW_ID])[np.flatnonzero(missing)[0]])
        raise JobError(
            f"{what}: row {row} of the source has no teacher outputs in the cache (the source "
            "changed after the cache was built?): rebuild it with `raydistill cache JOB --fresh`"
        )
    if table.labels is not None and (table.labels[pos] != np.asarray(batch[LABEL])).any():
        row = int(np.asarray(batch[ROW_ID])[np.flatnonzero(table.labels[pos] != batch[LABEL])[0]])
        raise JobError(f"{what}: row {row} has another label in the source than in the cache")
    out = dict(batch)
    out.update({name: values[pos] for name, values in table.columns.items()})
    return out


def join_outputs(ds: Any, outputs: CachedOutputs, what: str) -> Any:
    """The lazy dataset ``ds`` with each row's cached outputs attached in its read tasks."""
    import ray

    if outputs.nbytes > MAX_BROADCAST_BYTES:
        raise JobError(
            f"{what}: this split's teacher outputs take {outputs.nbytes / 2**30:.1f} GiB, more "
            f"than a joined cache sends to every read task ({MAX_BROADCAST_BYTES / 2**30:.0f} "
            "GiB): use cache.codec: topk, or cache.inputs: copy"
        )
    ref = ray.put(outputs)
    return ds.map_batches(
        attach_outputs, fn_kwargs={"outputs": ref, "what": what}, batch_format="numpy"
    )

"""Stable row keys and the hash split: a row's split depends on its key alone.

A row's key is its file's path relative to the source root (image folders), that path plus the
row's index within the file (Parquet, JSON lines), or the value of ``data.key_column``. Its
64-bit hash decides its split and its ``row_id``, so the same row lands in the same split on
every run, with any number of read tasks or nodes and in any file order, and adding files
never moves an existing row to another split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

SPLIT_NAMES = ("train", "val", "test")
_MASK63 = np.uint64((1 << 63) - 1)


def text_hashes(keys: Iterable[str]) -> np.ndarray:
    """uint64 [N]: blake2b of each key's UTF-8 bytes (the same on every machine and run)."""
    return np.fromiter(
        (
            int.from_bytes(hashlib.blake2b(k.encode("utf-8"), digest_size=8).digest(), "little")
            for k in keys
        ),
        dtype=np.uint64,
    )


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: consecutive inputs give unrelated, uniform 64-bit outputs."""
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def row_hashes(file_key: str, first_row: int, rows: int) -> np.ndarray:
    """uint64 [rows]: hashes of rows ``first_row .. first_row + rows - 1`` of one file."""
    base = text_hashes([file_key])[0]
    index = np.arange(first_row, first_row + rows, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _mix(base ^ _mix(index + np.uint64(0x9E3779B97F4A7C15)))


def value_hashes(values: np.ndarray | list) -> np.ndarray:
    """uint64 [N]: hashes of ``data.key_column`` values (integers or strings)."""
    array = np.asarray(values)
    if np.issubdtype(array.dtype, np.integer):
        return _mix(array.astype(np.uint64) ^ np.uint64(0xD6E8FEB86659FD93))
    return text_hashes(str(v) for v in array)


def row_ids(hashes: np.ndarray) -> np.ndarray:
    """int64 [N] ``row_id`` values (non-negative) from key hashes."""
    return (hashes & _MASK63).astype(np.int64)


def _unit(hashes: np.ndarray, salt: int) -> np.ndarray:
    """A uniform float in [0, 1) per hash; ``salt`` gives an independent draw."""
    mixed = _mix(hashes ^ np.uint64(salt)) if salt else hashes
    return (mixed >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def split_mask(hashes: np.ndarray, split: str, val: float, test: float, seed: int) -> np.ndarray:
    """bool [N]: which rows belong to ``split`` when ``val`` and ``test`` shares are cut by hash
    (``seed``, ``data.split.seed``, picks another cut)."""
    u = _unit(hashes, 0x5EED0000 + seed) if seed else _unit(hashes, 0)
    if split == "test":
        return u < test
    if split == "val":
        return (u >= test) & (u < test + val)
    if split == "train":
        return u >= test + val
    raise ValueError(f"unknown split {split!r} (one of {SPLIT_NAMES})")


def subset_mask(hashes: np.ndarray, share: float | None, seed: int) -> np.ndarray:
    """bool [N]: the rows ``data.subset`` keeps (drawn independently of the split)."""
    if share is None or share >= 1:
        return np.ones(len(hashes), dtype=bool)
    return _unit(hashes, 0x50B5E7 + seed) < share


def labelled_mask(row_ids: np.ndarray, share: float | None, seed: int) -> np.ndarray:
    """bool [N]: the training rows whose labels the student sees under
    ``data.labelled_fraction`` (``share``), drawn from each ``row_id`` alone (int64 [N]), so a
    row is labelled or not on every run, worker count and epoch, and apart from the split."""
    ids = np.asarray(row_ids, dtype=np.int64)
    if share is None or share >= 1:
        return np.ones(len(ids), dtype=bool)
    return _unit(_mix(ids.astype(np.uint64)), 0x1ABE1ED + seed) < share

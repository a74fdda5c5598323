"""Plan a file source's splits in the driver: list, hash-split and count, without holding rows.

``plan_splits(data)`` returns train/val/test :class:`~raydistill.data.stream.StreamedSplit`
objects. Image folders are split on their listing (each path's hash); Parquet and JSON lines
are split row by row inside the reader, and their class counts come from one pass over the
label column alone (the inputs are not read).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa

from raydistill.config import DataConfig, JobError
from raydistill.data.hf import (
    ARROW_SUFFIX,
    HashSplit,
    arrow_chunks,
    class_names,
    hf_splits,
    table_items,
)
from raydistill.data.keys import SPLIT_NAMES, row_hashes, row_ids, text_hashes, value_hashes
from raydistill.data.listing import (
    IMAGE_SUFFIXES,
    TABLE_SUFFIXES,
    Listed,
    image_classes,
    list_files,
    open_file,
    parquet_row_groups,
)
from raydistill.data.shards import SHARD_SUFFIXES, read_samples
from raydistill.data.stream import (
    IMAGE_KINDS,
    ROWS_PER_CHUNK,
    StreamedSplit,
    StreamSource,
    csv_chunks,
    read_rows,
)

Out = TypeVar("Out")
STREAMED_SOURCES = ("parquet", "jsonl", "csv", "image_folder", "webdataset", "hf_dataset")


def streams(data: DataConfig) -> bool:
    """Whether the job's source is planned and streamed (file sources of tensors and images)."""
    return data.source in STREAMED_SOURCES and data.text is None


def split_roots(data: DataConfig) -> dict[str, str]:
    """Where each split's files are: ``data.split``'s locations, or ``data.path`` for all."""
    locations = data.split.locations()
    if locations is not None:
        return locations
    return dict.fromkeys(SPLIT_NAMES, str(data.path))


def _digest(files: list[Listed], extra: object = None) -> str:
    listing = [[f.key, f.size] for f in files]
    return hashlib.sha256(json.dumps([listing, extra]).encode()).hexdigest()


def _base_source(data: DataConfig, split: str, root: str, hashed: bool) -> StreamSource:
    return StreamSource(
        kind=data.source,
        root=root,
        split=split,
        input_column=(
            tuple(data.input_column) if isinstance(data.input_column, list) else data.input_column
        ),
        label_column=data.label_column,
        key_column=data.key_column,
        image_size=tuple(data.image_size) if data.image_size else None,
        channels=data.channels,
        hash_split=(data.split.val, data.split.test, data.split.seed) if hashed else None,
        subset=data.subset if hashed or data.split.locations() is not None else None,
        subset_seed=data.split.seed,
        skip_bad=data.skip_bad,
    )


# ---------------------------------------------------------------------------- image folders


def _plan_images(data: DataConfig, roots: dict[str, str], hashed: bool) -> dict[str, StreamedSplit]:
    classes = image_classes(roots["train"])
    index = {name: i for i, name in enumerate(classes)}
    num_classes = data.num_classes or len(classes)
    if len(classes) > num_classes:
        raise JobError(
            f"data.num_classes: {num_classes}, but {roots['train']} has "
            f"{len(classes)} class folders ({', '.join(classes[:5])}...)"
        )
    out: dict[str, StreamedSplit] = {}
    listings: dict[str, tuple[list[Listed], np.ndarray]] = {}
    for split, root in roots.items():
        if root not in listings:
            files = [f for f in list_files(root, IMAGE_SUFFIXES) if "/" in f.key]
            for f in files:
                if f.key.split("/")[0] not in index:
                    raise JobError(
                        f"data: {root} has class folder '{f.key.split('/')[0]}', "
                        f"which the train split ({roots['train']}) lacks"
                    )
            listings[root] = (files, text_hashes(f.key for f in files))
        files, hashes = listings[root]
        if not files:
            raise JobError(f"data.path: no images under {root} ({', '.join(classes)})")
        source = _base_source(data, split, root, hashed)
        keep = np.flatnonzero(source.keep(hashes))
        labels = np.asarray([index[files[i].key.split("/")[0]] for i in keep], dtype=np.int64)
        items = pa.table(
            {
                "path": pa.array([files[i].path for i in keep], type=pa.string()),
                "key": pa.array([files[i].key for i in keep], type=pa.string()),
                "label": pa.array(labels, type=pa.int64()),
                "row_id": pa.array(row_ids(hashes[keep]), type=pa.int64()),
            }
        )
        out[split] = StreamedSplit(
            source,
            items,
            np.bincount(labels, minlength=num_classes),
            (),
            _digest(files, classes),
            len(files),
            sum(f.size for f in files),
        )
    return _finish(out, num_classes)


# ---------------------------------------------------------------------------- tar shards


def _plan_shards(data: DataConfig, roots: dict[str, str], hashed: bool) -> dict[str, StreamedSplit]:
    """WebDataset shards' splits: every sample listed from its shard's headers (its image's
    byte range and its class), cut by the hash of its key like an image folder's files."""
    out: dict[str, StreamedSplit] = {}
    listings: dict[str, tuple[list[Listed], list, np.ndarray]] = {}
    for split, root in roots.items():
        if root not in listings:
            shards = list_files(root, SHARD_SUFFIXES)
            if not shards:
                raise JobError(f"data.path: no .tar shards under {root}")
            listed = in_parallel(lambda shard, root=root: read_samples(root, shard), shards)
            samples = [(sh, s) for sh, found in zip(shards, listed, strict=True) for s in found]
            listings[root] = (shards, samples, text_hashes(s.key for _, s in samples))
        shards, samples, hashes = listings[root]
        source = _base_source(data, split, root, hashed)
        keep = [samples[i] for i in np.flatnonzero(source.keep(hashes))]
        labels = np.asarray([s.label for _, s in keep], dtype=np.int64)
        items = pa.table(
            {
                "path": pa.array([shard.path for shard, _ in keep], type=pa.string()),
                "key": pa.array([s.key for _, s in keep], type=pa.string()),
                "offset": pa.array([s.offset for _, s in keep], type=pa.int64()),
                "size": pa.array([s.size for _, s in keep], type=pa.int64()),
                "label": pa.array(labels, type=pa.int64()),
                "row_id": pa.array(row_ids(hashes[source.keep(hashes)]), type=pa.int64()),
            }
        )
        out[split] = StreamedSplit(
            source, items, labels, (), _digest(shards), len(shards), sum(f.size for f in shards)
        )
    found = [split.counts for split in out.values() if len(split.counts)]
    top = max((int(x.max()) for x in found), default=-1)
    num_classes = data.num_classes or top + 1
    if min((int(x.min()) for x in found), default=0) < 0 or top >= num_classes:
        raise JobError(
            f"data: a .cls class in {roots['train']} is outside num_classes={num_classes}"
        )
    for split in out.values():  # the plan held labels; the split keeps their counts
        split.counts = np.bincount(split.counts, minlength=num_classes)
    return _finish(out, num_classes)


# ---------------------------------------------------------------------------- tables


def _label_chunks(root: str, kind: str, item: dict, columns: list[str]) -> Iterator[pa.Table]:
    """One work item's label (and key) columns, a chunk at a time: the plan's only read."""
    if str(item["path"]).endswith(ARROW_SUFFIX):  # hf_dataset's save_to_disk files
        yield from arrow_chunks(root, item["path"], item["group"], columns, ROWS_PER_CHUNK)
        return
    if kind in ("parquet", "hf_dataset"):
        import pyarrow.parquet as pq

        reader = pq.ParquetFile(open_file(root, item["path"]))
        for batch in reader.iter_batches(row_groups=[item["group"]], columns=columns):
            yield pa.Table.from_batches([batch])
        return
    if kind == "csv":
        for chunk in csv_chunks(root, item["path"], columns):
            _check_labels(chunk, columns[0], item["path"])
            yield chunk
        return
    import pyarrow.json as pajson

    try:
        table = pajson.read_json(open_file(root, item["path"]))
    except pa.ArrowInvalid as exc:
        raise JobError(f"data: cannot read {item['path']} as JSON lines: {exc}") from None
    for column in columns:
        if column not in table.column_names:
            raise JobError(
                f"data: column '{column}' not in {item['path']} (columns: {table.column_names})"
            )
    _check_labels(table, columns[0], item["path"])
    yield table.select(columns)


def _check_labels(table: pa.Table, column: str, path: str) -> None:
    label_type = table.schema.field(column).type
    if not pa.types.is_integer(label_type):
        raise JobError(
            f"data: labels in {path} (column '{column}') must be integers, got {label_type}"
        )


def _table_items(data: DataConfig, root: str) -> tuple[list[dict], str, list[Listed]]:
    if data.source == "hf_dataset":
        key = [data.key_column] if data.key_column else []
        items, rows, files = table_items(root, [data.input_column, data.label_column, *key])
        return items, _digest(files, rows), files
    files = list_files(root, TABLE_SUFFIXES[data.source])
    if not files:
        raise JobError(f"data.path: no {data.source} files under {root}")
    if data.source == "parquet":
        inputs = data.input_column
        columns = [*(inputs if isinstance(inputs, list) else [inputs]), data.label_column]
        if data.key_column:
            columns.append(data.key_column)
        groups = parquet_row_groups(root, files, columns, label=data.label_column)
        items = [
            {"path": g.path, "key": g.key, "group": g.group, "first_row": g.first_row}
            for g in groups
        ]
        return items, _digest(files, [g.rows for g in groups]), files
    items = [{"path": f.path, "key": f.key, "group": -1, "first_row": 0} for f in files]
    return items, _digest(files), files


def _label_pass(data: DataConfig, root: str, items: list[dict], sources: list[StreamSource]):
    """Labels per split of one location, streamed: ``{split: labels int64}`` (labels only).
    Work items are read side by side (:func:`in_parallel`), their labels kept in item order."""
    columns = [data.label_column] + ([data.key_column] if data.key_column else [])

    def item_labels(item: dict) -> dict[str, list[np.ndarray]]:
        labels: dict[str, list[np.ndarray]] = {s.split: [] for s in sources}
        first = item["first_row"]
        for chunk in _label_chunks(root, data.source, item, columns):
            if data.key_column:
                column = chunk.column(data.key_column).to_numpy(zero_copy_only=False)
                hashes = value_hashes(column)
            else:
                hashes = row_hashes(item["key"], first, chunk.num_rows)
            values = chunk.column(data.label_column).to_numpy(zero_copy_only=False)
            for source in sources:
                labels[source.split].append(values[source.keep(hashes)].astype(np.int64))
            first += chunk.num_rows
        return labels

    per_item = in_parallel(item_labels, items)
    return {
        s.split: np.concatenate([a for labels in per_item for a in labels[s.split]] or [_NONE])
        for s in sources
    }


_NONE = np.zeros(0, np.int64)
PLAN_THREADS = 16  # files the plan reads at once: object-store latency, not CPU, bounds it


def in_parallel(read: Callable[[Any], Out], items: list[Any]) -> list[Out]:
    """``[read(item) for item in items]``, up to :data:`PLAN_THREADS` at a time: the plan's
    reads (label columns, shard headers) are small and wait on storage, so over ``s3://`` a
    thousand files take seconds instead of minutes. The first error is raised as it is."""
    if len(items) <= 1:
        return [read(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(PLAN_THREADS, len(items))) as pool:
        return list(pool.map(read, items))


def _rows_of(data: DataConfig, roots: dict[str, str], label: int, most: int = 5) -> str:
    """Where the first rows of ``label`` are (``row 17 of <file>``): a second label pass,
    made only to name a bad label."""
    found: list[str] = []
    for root in dict.fromkeys(roots.values()):
        for item in _table_items(data, root)[0]:
            first = item["first_row"]
            for chunk in _label_chunks(root, data.source, item, [data.label_column]):
                values = chunk.column(data.label_column).to_numpy(zero_copy_only=False)
                rows = (np.flatnonzero(values == label) + first).tolist()
                found += [f"row {r} of {item['path']}" for r in rows[: most - len(found)]]
                first += chunk.num_rows
                if len(found) >= most:
                    return ", ".join(found)
    return ", ".join(found)


def _plan_tables(
    data: DataConfig,
    roots: dict[str, str],
    hashed: bool | dict[str, HashSplit],
    classes: list[str] | None = None,
) -> dict[str, StreamedSplit]:
    """Plan table splits; ``hashed``: whether rows are cut by ``data.split``'s shares, or per
    split the cut (hf_dataset, with ``data.subset`` then always kept); ``classes``: the label
    column's class names (a ClassLabel), which fix the class count unless ``data.num_classes``."""
    by_root: dict[str, list[str]] = {}
    for split, root in roots.items():
        by_root.setdefault(root, []).append(split)
    planned: dict[str, tuple[StreamSource, pa.Table, np.ndarray, str]] = {}
    for root, splits in by_root.items():
        items, digest, files = _table_items(data, root)
        sources = [
            replace(_base_source(data, s, root, True), hash_split=hashed[s])
            if isinstance(hashed, dict)
            else _base_source(data, s, root, hashed)
            for s in splits
        ]
        labels = _label_pass(data, root, items, sources)
        table = pa.Table.from_pylist(items)
        for source in sources:
            planned[source.split] = (source, table, labels[source.split], digest, files)
    found = [v[2] for v in planned.values() if len(v[2])]
    top = max((int(x.max()) for x in found), default=-1)
    low = min((int(x.min()) for x in found), default=0)
    num_classes = data.num_classes or (len(classes) if classes else top + 1)
    if data.num_classes is None:
        from raydistill.data.sources import check_class_sizes

        total = sum(np.bincount(v[2], minlength=num_classes) for v in planned.values())
        check_class_sizes(total, lambda label: _rows_of(data, roots, label))
    if low < 0 or top >= num_classes:
        bad = low if low < 0 else top
        raise JobError(
            f"data: label {bad} in {data.path or roots['train']} is outside "
            f"num_classes={num_classes}"
        )
    out = {
        split: StreamedSplit(
            source,
            table,
            np.bincount(labels, minlength=num_classes),
            (),
            digest,
            len(files),
            sum(f.size for f in files),
        )
        for split, (source, table, labels, digest, files) in planned.items()
    }
    for split in out.values():
        split.class_names = tuple(classes) if classes else None
    return _finish(out, num_classes)


def _finish(splits: dict[str, StreamedSplit], num_classes: int) -> dict[str, StreamedSplit]:
    """Fix the class count and the input shape (the first training row's; images resize to
    it) in every split's source; refuse an empty split."""
    for name, split in splits.items():
        if not len(split):
            raise JobError(f"data: the {name} split ({split.source.root}) has no rows")
    train = splits["train"]
    train.source = replace(train.source, num_classes=num_classes)
    first = train.head(1).inputs[0]
    # decoded images (a folder's, or a datasets.Image column's) all resize to the first's size
    images = train.source.kind in IMAGE_KINDS or (
        train.source.kind == "hf_dataset" and first.ndim == 3
    )
    size = tuple(first.shape[-2:]) if images else None
    for split in splits.values():
        split.source = replace(split.source, num_classes=num_classes)
        if size is not None and split.source.image_size is None:
            split.source = replace(split.source, image_size=size)
        split.input_shape = tuple(first.shape)
    return {k: splits[k] for k in SPLIT_NAMES if k in splits}


def _plan_hf(data: DataConfig, whole: bool = False) -> dict[str, StreamedSplit]:
    """A saved ``datasets`` dataset's splits (:func:`raydistill.data.hf.hf_splits`); ``whole``:
    every row of its train split (or of the one dataset), uncut."""
    where = hf_splits(data)
    if whole:
        where = {"train": (where["train"][0], None)}
    roots = {split: root for split, (root, _) in where.items()}
    hashed = {split: cut for split, (_, cut) in where.items()}
    names = class_names(roots["train"], data.label_column)
    return _plan_tables(data, roots, False if whole else hashed, names)


def plan_splits(data: DataConfig) -> dict[str, StreamedSplit]:
    """Train, val and test of a file source, planned (see the module docstring)."""
    if data.source == "hf_dataset":
        return _plan_hf(data)
    return _planner(data)(data, split_roots(data), data.split.locations() is None)


def whole_source(data: DataConfig) -> StreamedSplit:
    """Every row of ``data.path``, unsplit and in listing order (``data.subset`` not applied):
    what :func:`raydistill.data.sources.load_arrays` reads, through the same reader."""
    if data.source == "hf_dataset":
        return _plan_hf(data, whole=True)["train"]
    return _planner(data)(data, {"train": str(data.path)}, False)["train"]


def _planner(data: DataConfig):
    return {"image_folder": _plan_images, "webdataset": _plan_shards}.get(data.source, _plan_tables)


__all__ = ["STREAMED_SOURCES", "plan_splits", "read_rows", "streams", "whole_source"]

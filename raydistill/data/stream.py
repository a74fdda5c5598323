"""Streamed splits: file sources read lazily, row by row group or image by image.

The driver plans: it lists the files (and Parquet footers), decides each image's split from the
hash of its key (:mod:`raydistill.data.keys`), and counts classes by streaming the label column
alone. Rows are read and decoded where they are consumed: in Ray Data's read tasks for training
and teacher passes (:meth:`StreamedSplit.dataset`), or batch by batch in the driver for the test
table (:meth:`StreamedSplit.iter_arrays`), never all at once. Both go through one reader,
:func:`read_rows`, so a row is the same wherever it is read.

Rows are ``input`` float32 [*shape], ``label`` int64 and ``row_id`` int64 (the key's hash).
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from raydistill.columns import INPUT, LABEL, ROW_ID
from raydistill.config import JobError
from raydistill.data.arrays import LabelledArrays, register_tensor_types
from raydistill.data.hf import ARROW_SUFFIX, arrow_chunks
from raydistill.data.keys import row_hashes, row_ids, split_mask, subset_mask, value_hashes
from raydistill.data.listing import open_file
from raydistill.data.shards import member_bytes

IMAGE_KINDS = ("image_folder", "webdataset")  # sources whose work items are single images
ROWS_PER_CHUNK = 4096  # rows a Parquet/JSON read yields at a time (bounds a read task's memory)
IMAGES_PER_BATCH = 64  # images one decode call reads


@dataclass(frozen=True)
class StreamSource:
    """Everything a reader needs to turn work items into one split's rows; pickled into every
    Ray Data read task, so it holds settings, never rows."""

    kind: str  # parquet | jsonl | image_folder | webdataset | hf_dataset
    root: str
    split: str
    input_column: str | tuple[str, ...] = "input"  # a tuple: numeric feature columns
    label_column: str = "label"
    key_column: str | None = None
    image_size: tuple[int, int] | None = None
    channels: int = 3
    num_classes: int = 0
    hash_split: tuple[float, float, int] | None = None  # (val, test, seed); None: all rows
    subset: float | None = None
    subset_seed: int = 0
    skip_bad: bool = False

    def keep(self, hashes: np.ndarray) -> np.ndarray:
        """bool [N]: rows of this split (and of ``data.subset``)."""
        mask = subset_mask(hashes, self.subset, self.subset_seed)
        if self.hash_split is not None:
            val, test, seed = self.hash_split
            mask &= split_mask(hashes, self.split, val, test, seed)
        return mask


def _bad(source: StreamSource, what: str) -> None:
    """A bad file or row: the run ends naming it, or with ``data.skip_bad`` it is skipped."""
    if not source.skip_bad:
        raise JobError(f"data: {what} (set data.skip_bad: true to skip such rows)")
    print(f"[data] skipped: {what}", flush=True)


def _decode_image(source: StreamSource, path: str, data: bytes | None = None) -> np.ndarray | None:
    """float32 [C, H, W] in [0, 1] of the image file at ``path`` (or of its bytes ``data``),
    converted to ``source.channels`` and resized to ``source.image_size``; None if bad."""
    from PIL import Image, UnidentifiedImageError

    try:
        if data is None:
            with open_file(source.root, path) as f:
                data = f.read()
        with Image.open(io.BytesIO(data)) as img:
            img = img.convert("L" if source.channels == 1 else "RGB")
            h, w = source.image_size or (img.height, img.width)
            if img.size != (w, h):
                img = img.resize((w, h))
            array = np.asarray(img, dtype=np.float32) / 255.0
    except UnidentifiedImageError:
        _bad(source, f"cannot read image {path}: not an image format PIL can decode")
        return None
    except (OSError, JobError, ValueError) as exc:
        _bad(source, f"cannot read image {path}: {str(exc).splitlines()[0]}")
        return None
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def _image_rows(source: StreamSource, items: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    images, keep = [], []
    ranged = "offset" in items  # a shard member: one ranged read of its tar
    for i, path in enumerate(items["path"]):
        if ranged:
            data = member_bytes(
                source.root, str(path), int(items["offset"][i]), int(items["size"][i])
            )
            image = _decode_image(source, f"{items['key'][i]} in {path}", data)
        else:
            image = _decode_image(source, str(path))
        if image is not None:
            images.append(image)
            keep.append(i)
    shape = (0, source.channels, *(source.image_size or (0, 0)))
    return {
        INPUT: np.stack(images) if images else np.zeros(shape, dtype=np.float32),
        LABEL: np.asarray(items["label"], dtype=np.int64)[keep],
        ROW_ID: np.asarray(items["row_id"], dtype=np.int64)[keep],
    }


def is_image_column(column: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a column holds encoded images as ``datasets.Image`` stores them:
    ``struct<bytes: binary, path: string>``."""
    kind = column.type
    return pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0


def _input_array(
    source: StreamSource, column: pa.ChunkedArray | pa.Array, where: str, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """float32 [N, *shape] inputs of a chunk (rows ``index`` of file ``where``) and bool [N]:
    which rows decoded (an encoded image that does not is reported by :func:`_bad`)."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if not is_image_column(column):
        if hasattr(column, "to_numpy_ndarray"):  # fixed-shape tensor extension column
            inputs = np.asarray(column.to_numpy_ndarray(), dtype=np.float32)
        else:
            inputs = np.stack([np.asarray(v, dtype=np.float32) for v in column.to_pylist()])
        return inputs, np.ones(len(inputs), dtype=bool)
    images: list[np.ndarray | None] = []
    for row, cell in zip(index, column.to_pylist(), strict=True):
        image = None
        if cell is None or (cell["bytes"] is None and not cell["path"]):
            _bad(source, f"row {row} of {where} has no image")
        elif cell["bytes"] is not None:
            name = f"{cell['path'] or 'the image'} in row {row} of {where}"
            image = _decode_image(source, name, cell["bytes"])
        else:  # datasets.Image of a file path, not embedded
            image = _decode_image(source, str(cell["path"]))
        if image is not None and source.image_size is None:  # the rest resize to the first
            source = replace(source, image_size=tuple(image.shape[-2:]))
        images.append(image)
    blank = np.zeros((source.channels, *(source.image_size or (0, 0))), dtype=np.float32)
    ok = np.asarray([image is not None for image in images], dtype=bool)
    return np.stack([blank if im is None else im for im in images]), ok


def _table_rows(source: StreamSource, table: pa.Table, key: str, first: int) -> dict | None:
    """Rows ``first ..`` of one file's chunk ``table``, filtered to the split and checked."""
    if source.key_column is not None:
        hashes = value_hashes(table.column(source.key_column).to_numpy(zero_copy_only=False))
    else:
        hashes = row_hashes(key, first, table.num_rows)
    keep = source.keep(hashes)
    if not keep.any():
        return None
    table = table.filter(pa.array(keep))
    index = np.flatnonzero(keep) + first
    labels = table.column(source.label_column).to_numpy(zero_copy_only=False)
    if isinstance(source.input_column, tuple):  # feature columns: one float32 vector a row
        features = [table.column(c).to_numpy(zero_copy_only=False) for c in source.input_column]
        inputs = np.stack(features, axis=1).astype(np.float32)
        decoded = np.ones(len(inputs), dtype=bool)
    else:
        column = table.column(source.input_column)
        inputs, decoded = _input_array(source, column, key, index)
    good = (labels >= 0) & (labels < source.num_classes)
    good &= np.isfinite(inputs.reshape(len(inputs), -1)).all(axis=1)
    for i in np.flatnonzero(~good & decoded)[: 1 if not source.skip_bad else None]:
        why = (
            "NaN or infinite input"
            if 0 <= labels[i] < source.num_classes
            else (f"label {labels[i]} outside num_classes={source.num_classes}")
        )
        _bad(source, f"row {index[i]} of {key}: {why}")
    good &= decoded
    return {
        INPUT: inputs[good],
        LABEL: labels[good].astype(np.int64),
        ROW_ID: row_ids(hashes[keep][good]),
    }


def _read_chunks(source: StreamSource, item: dict[str, Any]) -> Iterator[tuple[pa.Table, int]]:
    """``(chunk, index of its first row in the file)`` for one work item."""
    inputs = source.input_column
    columns = [*(inputs if isinstance(inputs, tuple) else (inputs,)), source.label_column]
    if source.key_column is not None:
        columns.append(source.key_column)
    path = str(item["path"])
    if path.endswith(ARROW_SUFFIX):  # hf_dataset's save_to_disk files
        yield from zip(
            arrow_chunks(source.root, path, int(item["group"]), columns, ROWS_PER_CHUNK),
            itertools.count(int(item["first_row"]), ROWS_PER_CHUNK),
        )
        return
    if source.kind in ("parquet", "hf_dataset"):
        import pyarrow.parquet as pq

        register_tensor_types()
        reader = pq.ParquetFile(open_file(source.root, path))
        first = int(item["first_row"])
        for batch in reader.iter_batches(
            batch_size=ROWS_PER_CHUNK, row_groups=[int(item["group"])], columns=columns
        ):
            yield pa.Table.from_batches([batch]), first
            first += batch.num_rows
        return
    if source.kind == "csv":
        first = 0
        for chunk in csv_chunks(source.root, path, columns):
            yield chunk, first
            first += chunk.num_rows
        return
    import pyarrow.json as pajson

    try:
        table = pajson.read_json(open_file(source.root, path))
    except pa.ArrowInvalid as exc:
        raise JobError(f"data: cannot read {path} as JSON lines: {exc}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise JobError(f"data: column '{missing[0]}' not in {path} ({table.column_names})")
    for start in range(0, table.num_rows, ROWS_PER_CHUNK):
        yield table.slice(start, ROWS_PER_CHUNK), start


def csv_chunks(root: str, path: str, columns: list[str]) -> Iterator[pa.Table]:
    """``columns`` of one CSV file, :data:`ROWS_PER_CHUNK`-sized blocks at a time (a
    streaming read: the file is never whole in memory); a missing column is named."""
    import pyarrow.csv as pacsv

    try:
        reader = pacsv.open_csv(
            open_file(root, path),
            read_options=pacsv.ReadOptions(block_size=1 << 20),
            convert_options=pacsv.ConvertOptions(include_columns=columns),
        )
    except (pa.ArrowInvalid, KeyError) as exc:
        missing = [c for c in columns if f"'{c}'" in str(exc)]
        what = f"column '{missing[0]}' not in {path}" if missing else f"cannot read {path}"
        raise JobError(f"data: {what} as CSV: {str(exc).splitlines()[0]}") from None
    for batch in reader:
        table = pa.Table.from_batches([batch])
        for start in range(0, table.num_rows, ROWS_PER_CHUNK):
            yield table.slice(start, ROWS_PER_CHUNK)


def read_rows(items: dict[str, np.ndarray], source: StreamSource) -> Iterator[dict[str, Any]]:
    """The rows of a batch of work items (image paths, Parquet row groups or JSON files) that
    belong to ``source.split``: the one reader of training, teacher passes and evaluation."""
    if source.kind in IMAGE_KINDS:
        yield _image_rows(source, items)
        return
    for i in range(len(items["path"])):
        item = {k: v[i] for k, v in items.items()}
        for chunk, first in _read_chunks(source, item):
            rows = _table_rows(source, chunk, str(item["key"]), first)
            if rows is not None and len(rows[LABEL]):
                yield rows


@dataclass
class StreamedSplit:
    """One split of a file source, planned but not read.

    ``items`` lists its work items (image paths with labels and row ids, or Parquet row groups,
    or JSON files); ``rows`` and ``counts`` (rows per class) come from the plan's label pass.
    Duck-types what a task asks of :class:`~raydistill.data.arrays.LabelledArrays`: ``len``,
    ``num_classes``, ``fingerprint``, ``class_counts``, ``head`` and ``iter_arrays``.
    """

    source: StreamSource
    items: pa.Table
    counts: np.ndarray
    input_shape: tuple[int, ...]
    listing_digest: str
    files: int = 0
    file_bytes: int = 0
    class_names: tuple[str, ...] | None = None  # a ClassLabel's names (hf_dataset)

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    def __len__(self) -> int:
        return int(self.counts.sum())

    def class_counts(self) -> np.ndarray:
        return self.counts

    @property
    def nbytes(self) -> int:
        """Bytes of this split's decoded inputs (float32) and labels."""
        return len(self) * (4 * int(np.prod(self.input_shape)) + 16)

    def fingerprint(self) -> str:
        """sha256 of the listing (file keys, sizes, row groups) and the split's settings: a
        file added, removed or resized, or another split rule, changes it."""
        settings = replace(self.source, root="", skip_bad=False)
        digest = hashlib.sha256(self.listing_digest.encode())
        digest.update(json.dumps(settings.__dict__, sort_keys=True, default=str).encode())
        return digest.hexdigest()

    def iter_arrays(self, batch_rows: int = 512) -> Iterator[LabelledArrays]:
        """The split's rows in this process, ``batch_rows`` at a time, in plan order."""
        step = IMAGES_PER_BATCH if self.source.kind in IMAGE_KINDS else 1
        pending: list[dict[str, np.ndarray]] = []
        held = 0
        for start in range(0, self.items.num_rows, step):
            chunk = self.items.slice(start, step).to_pydict()
            for rows in read_rows({k: np.asarray(v) for k, v in chunk.items()}, self.source):
                pending.append(rows)
                held += len(rows[LABEL])
                while held >= batch_rows:
                    out, pending, held = _take(pending, batch_rows)
                    yield self._arrays(out)
        if held:
            yield self._arrays(_take(pending, held)[0])

    def head(self, rows: int) -> LabelledArrays:
        """The split's first ``rows`` rows (fewer when it is smaller)."""
        for arrays in self.iter_arrays(rows):
            return arrays
        raise JobError(f"data: the {self.source.split} split of {self.source.root} has no rows")

    def _arrays(self, rows: dict[str, np.ndarray]) -> LabelledArrays:
        return LabelledArrays(rows[INPUT], rows[LABEL], self.num_classes)

    def dataset(self, items_per_block: int | None = None) -> Any:
        """A lazy Ray dataset of the split: work items spread over read tasks (one per
        ``items_per_block`` items: 256 images, or one Parquet row group or JSON file), decoded
        there."""
        import ray.data

        per_block = items_per_block or (256 if self.source.kind in IMAGE_KINDS else 1)
        n = self.items.num_rows
        blocks = [self.items.slice(i, per_block) for i in range(0, n, per_block)] or [self.items]
        return ray.data.from_arrow(blocks).map_batches(
            read_rows,
            fn_kwargs={"source": self.source},
            batch_format="numpy",
            batch_size=IMAGES_PER_BATCH if self.source.kind in IMAGE_KINDS else 1,
        )


def _take(
    pending: list[dict[str, np.ndarray]], rows: int
) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]], int]:
    """The first ``rows`` rows of ``pending`` chunks, the chunks left, and their rows."""
    merged = {k: np.concatenate([p[k] for p in pending]) for k in pending[0]}
    out = {k: v[:rows] for k, v in merged.items()}
    rest = {k: v[rows:] for k, v in merged.items()}
    left = len(rest[LABEL])
    return out, ([rest] if left else []), left


def describe_streamed(splits: dict[str, StreamedSplit]) -> str:
    """What a streamed source holds, from its plan: rows per split, decoded bytes, files."""
    roots = {s.source.root: s for s in splits.values()}
    files = sum(s.files for s in roots.values())
    on_disk = sum(s.file_bytes for s in roots.values())
    rows = sum(len(s) for s in splits.values())
    decoded = sum(s.nbytes for s in splits.values())
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in splits.items())
    names = splits["train"].class_names
    named = f" ({', '.join(names[:5])}{', ...' if len(names) > 5 else ''})" if names else ""
    return (
        f"{sizes} rows, {splits['train'].num_classes} classes{named}; streams {rows:,} rows "
        f"({decoded / 1e6:,.1f} MB decoded) from {files:,} files ({on_disk / 1e6:,.1f} MB)"
    )

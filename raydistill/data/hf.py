"""``data.source: hf_dataset``: a dataset saved by Hugging Face ``datasets``, read by the
streamed data plane (:mod:`raydistill.data.plan`, :mod:`raydistill.data.stream`) without
importing ``datasets``.

Three layouts are recognised at ``data.path`` (local, or any pyarrow filesystem URI):

- ``Dataset.save_to_disk``: ``state.json``, ``dataset_info.json`` and
  ``data-0000i-of-0000n.arrow`` files (Arrow IPC streams, one record batch per writer batch);
- ``DatasetDict.save_to_disk``: ``dataset_dict.json`` (``{"splits": [...]}``) and one such
  directory per split;
- ``Dataset.to_parquet``: a ``.parquet`` file or a directory of them.

``datasets`` keeps its features (``ClassLabel`` names, ``Image``) in each file's schema metadata
(``huggingface``); they are read from the first file's schema. ``Image`` columns are structs
``{bytes, path}`` and are decoded per row in the reader like an image folder's files
(``data.channels``, ``data.image_size``).

What is lazy: the driver lists the files and reads each Arrow file's record-batch headers (local
files are memory-mapped, so only headers and, in the label pass, the label column's pages are
touched) or each Parquet footer; rows are read in the read tasks, one record batch or row group
per work item, with only the mapped columns. Not lazy: an Arrow IPC stream has no footer, so
on a remote filesystem listing and each read stream the file from its start (export remote
datasets with ``to_parquet``). Text rows (``data.text``) are read into memory, like every
text source.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from raydistill.config import DataConfig, JobError
from raydistill.data.keys import SPLIT_NAMES
from raydistill.data.listing import Listed, filesystem, list_files, open_file, parquet_row_groups

ARROW_SUFFIX = ".arrow"
PARQUET_SUFFIXES = (".parquet", ".pq")
VAL_NAMES = ("validation", "valid", "val", "dev")  # what hub datasets call their val split

HashSplit = tuple[float, float, int] | None  # (val, test, seed) shares cut by hash, or None


def _read_json(root: str, name: str) -> Any | None:
    """``root/name`` parsed, or None when it does not exist."""
    import pyarrow.fs as pafs

    fs, base = filesystem(root)
    path = f"{base}/{name}"
    if fs.get_file_info(path).type != pafs.FileType.File:
        return None
    with fs.open_input_stream(path) as f:
        try:
            return json.loads(f.read())
        except ValueError as exc:
            raise JobError(f"data.path: cannot read {root}/{name}: {exc}") from None


def saved_splits(path: str) -> dict[str, str] | None:
    """``{split name: its directory}`` of a saved DatasetDict, None for one saved dataset; a
    path that is neither is refused."""
    import pyarrow.fs as pafs

    fs, base = filesystem(path)
    info = fs.get_file_info(base)
    if info.type == pafs.FileType.NotFound:
        raise JobError(f"data.path: not found: {path}")
    if info.type == pafs.FileType.File:
        if base.lower().endswith(PARQUET_SUFFIXES):
            return None
    else:
        listed = _read_json(path, "dataset_dict.json")
        if isinstance(listed, dict) and isinstance(listed.get("splits"), list):
            return {str(name): f"{path.rstrip('/')}/{name}" for name in listed["splits"]}
        if _read_json(path, "state.json") is not None or _parquet_files(path):
            return None
    raise JobError(
        f"data.path: {path} is not a dataset saved by datasets (no dataset_dict.json, state.json"
        " or .parquet files): write it with save_to_disk or to_parquet"
    )


def hf_splits(data: DataConfig) -> dict[str, tuple[str, HashSplit]]:
    """Where each of train/val/test comes from: ``{split: (location, hash split)}``.

    One dataset is cut by hash (``data.split.val``/``test`` shares). A DatasetDict's splits are
    named by ``data.split.train``/``val``/``test``, or else taken by name: ``train``,
    ``validation`` (or ``valid``, ``val``, ``dev``) and ``test``; a missing val split is cut
    from train by hash (and a missing test too), a missing test with a val split is val's.
    """
    path = str(data.path)
    saved = saved_splits(path)
    named = data.split.locations()
    if named is None:  # shares (SplitConfig refuses a mix of shares and names)
        shares = (float(data.split.val), float(data.split.test or 0), data.split.seed)
    if saved is None:
        if named is not None:
            raise JobError(
                f"data.split.train: {path} holds one dataset, not a DatasetDict: its rows are"
                " cut by the data.split.val/test shares (leave split.train unset)"
            )
        return dict.fromkeys(SPLIT_NAMES, (path, shares))
    if named is not None:
        for key, name in named.items():
            if name not in saved:
                raise JobError(
                    f"data.split.{key}: no split '{name}' in {path} (splits: {', '.join(saved)})"
                )
        return {k: (saved[name], None) for k, name in named.items()}
    if "train" not in saved:
        raise JobError(
            f"data.path: {path} has no 'train' split (splits: {', '.join(saved)}); name the"
            " splits with data.split.train/val/test"
        )
    train = saved["train"]
    val = next((saved[n] for n in VAL_NAMES if n in saved), None)
    test = saved.get("test")
    if val is not None:
        return {"train": (train, None), "val": (val, None), "test": (test or val, None)}
    if test is not None:  # val cut from train, no test share
        cut = (shares[0], 0.0, shares[2])
        return {"train": (train, cut), "val": (train, cut), "test": (test, None)}
    return dict.fromkeys(SPLIT_NAMES, (train, shares))


def _parquet_files(root: str) -> list[Listed]:
    """A Parquet export's files: ``root`` itself, or the files directly in it."""
    return [f for f in list_files(root, PARQUET_SUFFIXES) if "/" not in f.key]


def _files(root: str) -> tuple[list[Listed], bool]:
    """The data files of one saved dataset in row order, and whether they are Arrow IPC
    streams (those ``state.json`` lists) or Parquet."""
    state = _read_json(root, "state.json")
    if isinstance(state, dict):
        names = [str(f.get("filename")) for f in state.get("_data_files") or []]
        listed = {f.key: f for f in list_files(root, (ARROW_SUFFIX,))}
        for name in names:
            if name not in listed:
                raise JobError(f"data: {root}/{name} is missing (its state.json lists it)")
        if names:
            return [listed[n] for n in names], True
    parquet = _parquet_files(root)
    if not parquet:
        raise JobError(f"data.path: no .arrow or .parquet files in {root}")
    return parquet, False


def _open_stream(root: str, path: str) -> pa.ipc.RecordBatchStreamReader:
    """A reader of one Arrow IPC stream file: memory-mapped when local (batches are then read
    without copying, so skipping one touches only its header)."""
    try:
        source = pa.memory_map(path) if "://" not in root else open_file(root, path)
        return pa.ipc.open_stream(source)
    except (OSError, pa.ArrowInvalid) as exc:
        raise JobError(f"data: cannot read {path} as an Arrow IPC stream: {exc}") from None


def _check_schema(schema: pa.Schema, path: str, columns: list[str]) -> None:
    for column in columns:
        if column not in schema.names:
            raise JobError(f"data: column '{column}' not in {path} (columns: {schema.names})")
    label = schema.field(columns[1]).type
    if not pa.types.is_integer(label):
        raise JobError(
            f"data: labels in {path} (column '{columns[1]}') must be integers or a ClassLabel,"
            f" got {label}"
        )


def table_items(root: str, columns: list[str]) -> tuple[list[dict], list[int], list[Listed]]:
    """Work items of one saved dataset (one per record batch or Parquet row group), their row
    counts and the files; ``columns`` (input, label, key) are checked in every file's schema."""
    files, arrow = _files(root)
    if not arrow:
        groups = parquet_row_groups(root, files, columns)
        items = [
            {"path": g.path, "key": g.key, "group": g.group, "first_row": g.first_row}
            for g in groups
        ]
        return items, [g.rows for g in groups], files
    items, rows = [], []
    for file in files:
        reader = _open_stream(root, file.path)
        _check_schema(reader.schema, file.path, columns)
        first = 0
        for group, batch in enumerate(reader):
            items.append({"path": file.path, "key": file.key, "group": group, "first_row": first})
            rows.append(batch.num_rows)
            first += batch.num_rows
    return items, rows, files


def arrow_chunks(root: str, path: str, group: int, columns: list[str], rows: int) -> Iterator:
    """``columns`` of record batch ``group`` of an Arrow IPC stream file, ``rows`` at a time."""
    for i, batch in enumerate(_open_stream(root, path)):
        if i == group:
            table = pa.Table.from_batches([batch.select(columns)])
            for start in range(0, table.num_rows, rows):
                yield table.slice(start, rows)
            return


def features(root: str) -> dict[str, Any]:
    """The ``datasets`` features of a saved dataset (``{}`` when its files carry none)."""
    files, arrow = _files(root)
    if arrow:
        schema = _open_stream(root, files[0].path).schema
    else:
        import pyarrow.parquet as pq

        schema = pq.ParquetFile(open_file(root, files[0].path)).schema_arrow
    raw = (schema.metadata or {}).get(b"huggingface")
    try:
        return json.loads(raw)["info"]["features"] if raw else {}
    except (ValueError, KeyError, TypeError):
        return {}


def class_names(root: str, column: str) -> list[str] | None:
    """The names of a ``ClassLabel`` column (its ids are their positions), else None."""
    feature = features(root).get(column)
    if isinstance(feature, dict) and feature.get("_type") == "ClassLabel":
        return [str(n) for n in feature.get("names") or []] or None
    return None


def read_table(data: DataConfig, columns: list[str]) -> tuple[pa.Table, list[str] | None]:
    """Every row of the train split (or the one dataset) of ``data.path`` with those of
    ``columns`` it has, in memory (text rows), and the label column's class names."""
    saved = saved_splits(str(data.path))
    root = str(data.path) if saved is None else hf_splits(data)["train"][0]
    files, arrow = _files(root)
    present: list[str] = []
    tables = []
    for file in files:
        if arrow:
            table = _open_stream(root, file.path).read_all()
        else:
            import pyarrow.parquet as pq

            table = pq.read_table(open_file(root, file.path))
        present = table.column_names
        tables.append(table.select([c for c in columns if c in present]))
    for column in columns[:2]:  # the text and label columns are required
        if column not in present:
            raise JobError(f"data: column '{column}' not in {root} (columns: {present})")
    return pa.concat_tables(tables), class_names(root, data.label_column)

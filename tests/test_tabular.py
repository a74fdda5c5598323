"""Tabular rows streamed: ``input_column: [a, b, ...]`` reads numeric feature columns as one
float32 vector per row, from CSV (a streaming read, ``ROWS_PER_CHUNK`` rows at a time), Parquet
or JSON lines, split by the hash of each row's key like any file source. Ray-free, on the
digits' 64 pixels written as 64 columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from test_webdataset import split_rows

from raydistill.config import DataConfig, JobError
from raydistill.data.digits import load_digits_arrays
from raydistill.data.sources import load_splits

FEATURES = [f"px{i}" for i in range(64)]


def _table(rows: int = 600) -> pa.Table:
    digits = load_digits_arrays()
    pixels = digits.inputs[:rows].reshape(rows, 64)
    columns = {"id": pa.array(np.arange(rows) * 7 + 3)}
    columns.update({name: pa.array(pixels[:, i]) for i, name in enumerate(FEATURES)})
    columns["label"] = pa.array(digits.labels[:rows].astype(np.int64))
    return pa.table(columns)


def _write(root: Path, table: pa.Table, kind: str, files: int = 2) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(np.array_split(np.arange(table.num_rows), files)):
        chunk = table.take(pa.array(part))
        if kind == "csv":
            pacsv.write_csv(chunk, root / f"part-{i}.csv")
        else:
            pq.write_table(chunk, root / f"part-{i}.parquet", row_group_size=100)
    return root


def test_csv_and_parquet_of_one_table_give_the_same_splits_and_feature_vectors(tmp_path):
    table = _table()
    csv = DataConfig(
        source="csv",
        path=str(_write(tmp_path / "csv", table, "csv")),
        input_column=FEATURES,
        key_column="id",
    )
    assert csv.text is None  # feature columns named: numbers, not text
    parquet = csv.model_copy(
        update={"source": "parquet", "path": str(_write(tmp_path / "pq", table, "parquet", 3))}
    )
    from_csv, from_parquet = split_rows(load_splits(csv)), split_rows(load_splits(parquet))
    assert sum(len(v[1]) for v in from_csv.values()) == 600
    for name in ("train", "val", "test"):
        inputs, labels = from_csv[name]
        assert inputs.shape[1:] == (64,) and inputs.dtype == np.float32
        # the same rows in the same split, whatever the format and the files' cut
        assert sorted(map(tuple, inputs.tolist())) == sorted(
            map(tuple, from_parquet[name][0].tolist())
        )
        assert sorted(labels.tolist()) == sorted(from_parquet[name][1].tolist())
    # each row's features are its digit's pixels, carrying its label
    digits = load_digits_arrays()
    flat = digits.inputs[:600].reshape(600, 64).astype(np.float32)
    inputs, labels = from_csv["train"]
    for row, label in zip(inputs[:50], labels[:50], strict=True):
        match = np.flatnonzero((flat == row).all(axis=1))
        assert len(match) and label in digits.labels[match]
    splits = load_splits(csv)
    assert splits["train"].input_shape == (64,)
    counts = np.bincount(from_csv["train"][1], minlength=10)
    assert splits["train"].class_counts().tolist() == counts.tolist()


def test_a_csv_larger_than_a_chunk_streams_in_pieces_with_every_row(tmp_path, monkeypatch):
    from raydistill.data import stream

    monkeypatch.setattr(stream, "ROWS_PER_CHUNK", 64)  # 600 rows: ten chunks of one file
    data = DataConfig(
        source="csv", path=str(_write(tmp_path / "c", _table(), "csv", 1)), input_column=FEATURES
    )
    assert sum(len(v[1]) for v in split_rows(load_splits(data)).values()) == 600


def test_bad_tabular_input_is_named(tmp_path):
    table = _table(100)
    root = _write(tmp_path / "c", table, "csv", 1)
    # one column named (as every resolved job.yaml names it): csv rows stay text
    assert DataConfig(source="csv", path=str(root), input_column="px0").text is not None
    with pytest.raises(ValueError, match=r"feature columns \(one or more\) is for parquet"):
        DataConfig(source="image_folder", path=str(root), input_column=FEATURES)
    with pytest.raises(ValueError, match=r"feature columns \(one or more\)"):
        DataConfig(source="parquet", path=str(root), input_column=[])
    with pytest.raises(JobError, match=r"column 'nope' not in .*part-0.csv"):
        load_splits(DataConfig(source="csv", path=str(root), input_column=[*FEATURES, "nope"]))
    names = table.set_column(table.num_columns - 1, "label", pa.array(["x"] * 100))
    bad = _write(tmp_path / "names", names, "csv", 1)
    with pytest.raises(JobError, match=r"labels in .*part-0.csv \(column 'label'\) must be int"):
        load_splits(DataConfig(source="csv", path=str(bad), input_column=FEATURES))
    # an empty cell is a NaN feature: named, or skipped and counted
    holes = table.set_column(1, "px0", pa.array([None] + [0.0] * 99, type=pa.float64()))
    holed = DataConfig(
        source="csv", path=str(_write(tmp_path / "holes", holes, "csv", 1)), input_column=FEATURES
    )
    with pytest.raises(JobError, match=r"row 0 of part-0.csv: NaN or infinite input"):
        split_rows(load_splits(holed))
    kept = split_rows(load_splits(holed.model_copy(update={"skip_bad": True})))
    assert sum(len(v[1]) for v in kept.values()) == 99

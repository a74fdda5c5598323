"""File sources (NumPy archives, Parquet tables) read into checked arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raydistill.config import DataConfig, JobError
from raydistill.data import load_digits_arrays
from raydistill.data.sources import load_arrays, load_splits, to_arrow


@pytest.fixture
def digits():
    return load_digits_arrays()


def test_npz_source(tmp_path, digits):
    path = tmp_path / "d.npz"
    np.savez(path, inputs=digits.inputs, labels=digits.labels)
    arrays = load_arrays(DataConfig(source="npz", path=str(path)))
    assert arrays.num_classes == 10 and np.array_equal(arrays.inputs, digits.inputs)
    splits = load_splits(DataConfig(source="npz", path=str(path)))
    assert sum(len(s) for s in splits.values()) == 1797


def test_parquet_source_with_tensor_or_list_column(tmp_path, digits):
    pq.write_table(to_arrow(digits), tmp_path / "tensor.parquet")
    arrays = load_arrays(DataConfig(source="parquet", path=str(tmp_path / "tensor.parquet")))
    assert np.array_equal(arrays.inputs, digits.inputs)
    flat = pa.table(
        {"x": [row.ravel().tolist() for row in digits.inputs[:50]], "y": digits.labels[:50]}
    )
    pq.write_table(flat, tmp_path / "flat.parquet")
    cfg = DataConfig(
        source="parquet",
        path=str(tmp_path / "flat.parquet"),
        input_column="x",
        label_column="y",
        num_classes=10,
    )
    arrays = load_arrays(cfg)
    assert arrays.inputs.shape == (50, 64) and arrays.labels.tolist() == digits.labels[:50].tolist()


def test_bad_sources_are_clear(tmp_path, digits):
    with pytest.raises(ValueError, match="source 'npz' needs a path"):
        DataConfig(source="npz")
    with pytest.raises(ValueError, match="not found"):
        DataConfig(source="npz", path=str(tmp_path / "missing.npz"))
    np.savez(tmp_path / "bad.npz", inputs=digits.inputs[:5], labels=np.array([0, 1, 2, 3, 12]))
    with pytest.raises(JobError, match="row 4: label 12 is outside num_classes=10"):
        load_arrays(DataConfig(source="npz", path=str(tmp_path / "bad.npz"), num_classes=10))
    pq.write_table(pa.table({"input": [[1.0]], "target": [0]}), tmp_path / "cols.parquet")
    with pytest.raises(JobError, match="column 'label' not in"):
        load_arrays(DataConfig(source="parquet", path=str(tmp_path / "cols.parquet")))


def test_image_folder_source(tmp_path, digits):
    from PIL import Image

    for label in (0, 1, 2):
        folder = tmp_path / "imgs" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in np.flatnonzero(digits.labels == label)[:12]:
            Image.fromarray((digits.inputs[i, 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    cfg = DataConfig(source="image_folder", path=str(tmp_path / "imgs"), channels=1)
    arrays = load_arrays(cfg)
    assert arrays.inputs.shape == (36, 1, 8, 8) and arrays.num_classes == 3
    assert np.bincount(arrays.labels).tolist() == [12, 12, 12]
    first = np.flatnonzero(digits.labels == 0)[:12]
    assert np.allclose(arrays.inputs[:12], digits.inputs[sorted(first, key=str)], atol=1 / 255)
    rgb = load_arrays(
        DataConfig(source="image_folder", path=str(tmp_path / "imgs"), image_size=(16, 16))
    )
    assert rgb.inputs.shape == (36, 3, 16, 16)
    (tmp_path / "imgs" / "class_0" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(JobError, match=r"cannot read image .*broken\.png"):
        load_arrays(cfg)


def test_jsonl_source(tmp_path, digits):
    import json

    path = tmp_path / "rows.jsonl"
    with open(path, "w") as f:
        for x, y in zip(digits.inputs[:30], digits.labels[:30], strict=True):
            f.write(json.dumps({"input": x.tolist(), "label": int(y)}) + "\n")
    arrays = load_arrays(DataConfig(source="jsonl", path=str(path), num_classes=10))
    assert arrays.inputs.shape == (30, 1, 8, 8)
    assert (
        np.allclose(arrays.inputs, digits.inputs[:30])
        and arrays.labels.tolist() == digits.labels[:30].tolist()
    )

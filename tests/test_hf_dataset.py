"""``data.source: hf_dataset``: datasets the test writes with ``datasets`` (save_to_disk of a
Dataset and a DatasetDict, a Parquet export), read by the streamed data plane Ray-free, with
column mapping, ClassLabel classes, shipped splits and bad input named before training."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from raydistill.config import DataConfig, JobError
from raydistill.data.digits import load_digits_arrays
from raydistill.data.keys import row_hashes, row_ids, split_mask
from raydistill.data.sources import load_arrays, load_splits

datasets = pytest.importorskip("datasets")

ROWS = 90
NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "none"]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """The first ROWS digits as uint8 8x8 pixels (what a PNG holds) and their labels."""
    digits = load_digits_arrays()
    pixels = np.round(digits.inputs[:ROWS, 0] * 255).astype(np.uint8)
    return pixels, digits.labels[:ROWS]


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def _image_dataset(pixels: np.ndarray, labels: np.ndarray):
    """Images as ``datasets.Image`` (PNG bytes) in ``img``, labels a ClassLabel ``fine_label``
    with one more name than the digits use (so num_classes comes from the feature)."""
    features = datasets.Features(
        {"img": datasets.Image(), "fine_label": datasets.ClassLabel(names=NAMES)}
    )
    rows = {
        "img": [{"bytes": _png(p), "path": None} for p in pixels],
        "fine_label": labels.tolist(),
    }
    return datasets.Dataset.from_dict(rows, features=features)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """One digits dataset written three ways: save_to_disk (2 shards), a DatasetDict with
    train/test, and a Parquet export."""
    root = tmp_path_factory.mktemp("hf")
    pixels, labels = _digits()
    ds = _image_dataset(pixels, labels)
    ds.save_to_disk(str(root / "one"), num_shards=2)
    datasets.DatasetDict(
        {"train": ds.select(range(60)), "test": ds.select(range(60, ROWS))}
    ).save_to_disk(str(root / "dict"))
    (root / "pq").mkdir()
    ds.to_parquet(str(root / "pq" / "digits.parquet"))
    return {"one": root / "one", "dict": root / "dict", "pq": root / "pq"}


def _config(path: Path, **changes) -> DataConfig:
    fields = {"input_column": "img", "label_column": "fine_label", "channels": 1}
    return DataConfig(source="hf_dataset", path=str(path), **{**fields, **changes})


def test_a_saved_dataset_of_images_reads_its_rows_decoded_with_classlabel_classes(saved):
    pixels, labels = _digits()
    arrays = load_arrays(_config(saved["one"]))
    assert arrays.num_classes == len(NAMES)  # the ClassLabel's names, not the top label + 1
    np.testing.assert_array_equal(arrays.labels, labels)
    assert arrays.inputs.shape == (ROWS, 1, 8, 8)
    np.testing.assert_allclose(arrays.inputs[:, 0], pixels / 255.0, atol=1e-6)
    # the Parquet export reads the same rows
    exported = load_arrays(_config(saved["pq"]))
    np.testing.assert_array_equal(exported.labels, labels)
    np.testing.assert_array_equal(exported.inputs, arrays.inputs)
    rgb = load_arrays(_config(saved["pq"], channels=3))
    assert rgb.inputs.shape == (ROWS, 3, 8, 8)


def test_one_saved_dataset_is_cut_by_the_hash_of_file_and_row(saved):
    _, labels = _digits()
    splits = load_splits(_config(saved["one"]))
    assert splits["train"].class_names == tuple(NAMES)
    assert sum(len(s) for s in splits.values()) == ROWS
    # shard i holds rows 0-44 and 45-89: a row's split is the hash of its file and index
    keys = {"data-00000-of-00002.arrow": 0, "data-00001-of-00002.arrow": 45}
    hashes = np.concatenate([row_hashes(k, 0, 45) for k in keys])
    for name, split in splits.items():
        want = split_mask(hashes, name, 0.2, 0.2, 0)
        np.testing.assert_array_equal(_labels(split), labels[want])
        assert sorted(_row_ids(split)) == sorted(row_ids(hashes[want]).tolist())


def _labels(split) -> np.ndarray:
    return np.concatenate([a.labels for a in split.iter_arrays(16)])


def _row_ids(split) -> list[int]:
    from raydistill.data.stream import read_rows

    ids: list[int] = []
    for i in range(split.items.num_rows):
        item = {k: np.asarray(v) for k, v in split.items.slice(i, 1).to_pydict().items()}
        ids += [int(r) for rows in read_rows(item, split.source) for r in rows["row_id"]]
    return ids


def test_a_dataset_dicts_test_split_is_kept_and_val_is_cut_from_train(saved, tmp_path):
    _, labels = _digits()
    splits = load_splits(_config(saved["dict"]))
    np.testing.assert_array_equal(_labels(splits["test"]), labels[60:])
    assert len(splits["train"]) + len(splits["val"]) == 60
    assert 0 < len(splits["val"]) < 30
    trained = np.concatenate([_labels(splits["train"]), _labels(splits["val"])])
    np.testing.assert_array_equal(np.sort(trained), np.sort(labels[:60]))
    # a validation split is val as it is
    ds = datasets.load_from_disk(str(saved["dict"]))
    three = datasets.DatasetDict(
        {"train": ds["train"], "validation": ds["test"].select(range(10)), "test": ds["test"]}
    )
    three.save_to_disk(str(tmp_path / "three"))
    shipped = load_splits(_config(tmp_path / "three"))
    assert [len(shipped[k]) for k in ("train", "val", "test")] == [60, 10, 30]
    np.testing.assert_array_equal(_labels(shipped["val"]), labels[60:70])
    # splits named in the job: val is the dict's test split, test then val's
    named = load_splits(_config(saved["dict"], split={"train": "train", "val": "test"}))
    assert [len(named[k]) for k in ("train", "val", "test")] == [60, 30, 30]


def test_text_rows_and_tensor_columns_map_their_columns(tmp_path):
    text = datasets.Dataset.from_dict(
        {
            "sentence": [f"row {i} is {'good' if i % 2 else 'bad'}" for i in range(12)],
            "label": [i % 2 for i in range(12)],
        },
        features=datasets.Features(
            {
                "sentence": datasets.Value("string"),
                "label": datasets.ClassLabel(names=["neg", "pos", "meh"]),
            }
        ),
    )
    text.save_to_disk(str(tmp_path / "text"))
    rows = load_arrays(
        DataConfig(source="hf_dataset", path=str(tmp_path / "text"), text={"column": "sentence"})
    )
    assert rows.num_classes == 3
    assert rows.texts.tolist() == text["sentence"]
    assert rows.labels.tolist() == text["label"]
    vectors = np.arange(24 * 6, dtype=np.float32).reshape(24, 2, 3)
    tensors = datasets.Dataset.from_dict(
        {"x": vectors.tolist(), "y": [i % 3 for i in range(24)]},
        features=datasets.Features(
            {"x": datasets.Array2D((2, 3), "float32"), "y": datasets.Value("int64")}
        ),
    )
    tensors.save_to_disk(str(tmp_path / "tensors"))
    arrays = load_arrays(
        DataConfig(
            source="hf_dataset", path=str(tmp_path / "tensors"), input_column="x", label_column="y"
        )
    )
    assert arrays.num_classes == 3
    np.testing.assert_array_equal(arrays.inputs, vectors)


def test_bad_hf_input_is_one_line_before_training(saved, tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not a dataset")
    with pytest.raises(JobError, match=r"junk is not a dataset saved by datasets"):
        load_splits(_config(tmp_path / "junk"))
    with pytest.raises(JobError, match=r"column 'image' not in .* \(columns: \['img', 'fine_"):
        load_splits(_config(saved["one"], input_column="image"))
    with pytest.raises(
        JobError,
        match=r"data.split.val: no split 'validation' in .*\(splits:"
        r" train, test\)",
    ):
        load_splits(_config(saved["dict"], split={"train": "train", "val": "validation"}))
    with pytest.raises(JobError, match=r"data.split.train: .* holds one dataset"):
        load_splits(_config(saved["one"], split={"train": "train", "val": "test"}))
    with pytest.raises(ValueError, match=r"data.path: not found"):
        _config(tmp_path / "nope")


def test_a_corrupt_image_is_named_with_its_row(tmp_path):
    pixels, labels = _digits()
    ds = _image_dataset(pixels[:30], labels[:30])
    rows = ds.to_dict()
    rows["img"][0] = {"bytes": b"not a png", "path": None}
    bad = datasets.Dataset.from_dict(rows, features=ds.features)
    bad.save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(JobError, match=r"cannot read image .*row 0 of data-00000-of-00001"):
        load_arrays(_config(tmp_path / "bad"))
    arrays = load_arrays(_config(tmp_path / "bad", skip_bad=True))
    np.testing.assert_array_equal(arrays.labels, labels[1:30])


@pytest.mark.slow
def test_a_saved_dataset_streams_through_ray_data(saved, ray_address):
    """The read tasks decode the same rows as the driver's reader."""
    splits = load_splits(_config(saved["dict"]))
    rows = splits["test"].dataset().take_all()
    _, labels = _digits()
    assert sorted(int(r["label"]) for r in rows) == sorted(labels[60:].tolist())
    assert {tuple(np.asarray(r["input"]).shape) for r in rows} == {(1, 8, 8)}

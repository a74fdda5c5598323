"""The streamed data plane, Ray-free: file sources planned from their listing, hash splits,
class counts from the label column, bad input named before anything is read."""

from __future__ import annotations

import itertools
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from raydistill.config import DataConfig, JobError
from raydistill.data.balance import ClassBalancer
from raydistill.data.keys import row_hashes, row_ids, split_mask
from raydistill.data.sources import load_splits
from raydistill.data.stream import StreamedSplit


def write_parquet(
    directory: Path,
    inputs: np.ndarray,
    labels: np.ndarray,
    files: int = 2,
    row_group: int = 64,
    **extra: np.ndarray,
) -> Path:
    """``inputs`` [N, ...] float32 and ``labels`` [N] as ``files`` Parquet files of
    ``row_group``-row groups, tensor column ``input``."""
    from ray.data.extensions import ArrowTensorArray

    directory.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(labels), files + 1).astype(int)
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        columns = {
            "input": ArrowTensorArray.from_numpy(np.ascontiguousarray(inputs[a:b])),
            "label": pa.array(labels[a:b], type=pa.int64()),
            **{k: pa.array(v[a:b]) for k, v in extra.items()},
        }
        pq.write_table(
            pa.table(columns), directory / f"part-{i:03d}.parquet", row_group_size=row_group
        )
    return directory


def write_images(root: Path, per_class: dict[str, int], size: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:04d}.png")
    return root


def _rows(inputs_shape=(1, 4, 4), n=600, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *inputs_shape), dtype=np.float32), rng.integers(0, classes, n)


def _all_ids(split: StreamedSplit) -> list[int]:
    from raydistill.data.stream import read_rows

    ids: list[int] = []
    step = 64 if split.source.kind == "image_folder" else 1
    for start in range(0, split.items.num_rows, step):
        chunk = split.items.slice(start, step).to_pydict()
        for rows in read_rows({k: np.asarray(v) for k, v in chunk.items()}, split.source):
            ids += rows["row_id"].tolist()
    return ids


def test_a_parquet_split_is_the_hash_of_file_and_row_and_the_same_every_time(tmp_path):
    inputs, labels = _rows()
    write_parquet(tmp_path / "pq", inputs, labels, files=3)
    data = DataConfig(source="parquet", path=str(tmp_path / "pq"))
    first, again = load_splits(data), load_splits(data)
    ids = {k: _all_ids(s) for k, s in first.items()}
    assert ids == {k: _all_ids(s) for k, s in again.items()}
    everything = [i for v in ids.values() for i in v]
    assert len(everything) == len(set(everything)) == 600  # a partition of the rows
    # the rule itself: row r of file f is in the split its (f, r) hash says
    hashes = np.concatenate(
        [
            row_hashes(f"part-{i:03d}.parquet", 0, n)
            for i, n in enumerate(np.diff(np.linspace(0, 600, 4).astype(int)))
        ]
    )
    for name in ("train", "val", "test"):
        want = set(row_ids(hashes[split_mask(hashes, name, 0.2, 0.2, 0)]).tolist())
        assert set(ids[name]) == want
        assert len(first[name]) == len(want)
    assert 0.12 < len(ids["val"]) / 600 < 0.28 and 0.12 < len(ids["test"]) / 600 < 0.28
    # the plan's counts come from the label column and match the rows read
    counts = np.bincount(
        np.concatenate([b.labels for b in first["train"].iter_arrays(100)]), minlength=4
    )
    assert counts.tolist() == first["train"].class_counts().tolist()


def test_moving_files_or_adding_one_moves_no_row_to_another_split(tmp_path):
    root = write_images(tmp_path / "a", {"cat": 30, "dog": 30})
    before = {
        k: set(_all_ids(s))
        for k, s in load_splits(DataConfig(source="image_folder", path=str(root))).items()
    }
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(root, moved)
    write_images(moved, {"cat": 0, "emu": 12}, seed=1)  # a new class folder, new files
    after = {
        k: set(_all_ids(s))
        for k, s in load_splits(DataConfig(source="image_folder", path=str(moved))).items()
    }
    for name in before:
        assert before[name] <= after[name]  # every old row kept its split (and row_id)
    assert sum(len(v) for v in after.values()) == 72


def test_an_image_folder_streams_images_resized_with_labels_from_folders(tmp_path):
    root = write_images(tmp_path / "img", {"a": 20, "b": 10}, size=9)
    data = DataConfig(source="image_folder", path=str(root), image_size=(4, 5), channels=1)
    splits = load_splits(data)
    batch = splits["train"].head(100)
    assert batch.inputs.shape[1:] == (1, 4, 5) and batch.inputs.dtype == np.float32
    assert 0 <= batch.inputs.min() and batch.inputs.max() <= 1
    assert splits["train"].num_classes == 2 and set(batch.labels.tolist()) <= {0, 1}
    assert sum(len(s) for s in splits.values()) == 30
    assert splits["train"].input_shape == (1, 4, 5)


def test_shipped_split_locations_are_read_as_they_are(tmp_path):
    inputs, labels = _rows(n=300)
    for name, (a, b) in {"train": (0, 200), "val": (200, 260), "test": (260, 300)}.items():
        write_parquet(tmp_path / name, inputs[a:b], labels[a:b], files=1)
    data = DataConfig(
        source="parquet",
        split={
            "train": str(tmp_path / "train"),
            "val": str(tmp_path / "val"),
            "test": str(tmp_path / "test"),
        },
    )
    splits = load_splits(data)
    assert {k: len(v) for k, v in splits.items()} == {"train": 200, "val": 60, "test": 40}
    got = np.concatenate([b.labels for b in splits["val"].iter_arrays(16)])
    assert got.tolist() == labels[200:260].tolist()  # every row, in file order


def test_a_key_column_decides_the_split(tmp_path):
    inputs, labels = _rows(n=200)
    keys = np.arange(1000, 1200)
    write_parquet(tmp_path / "one", inputs, labels, files=1, id=keys)
    # the same rows shuffled across other files: each id keeps its split
    order = np.random.default_rng(3).permutation(200)
    write_parquet(tmp_path / "two", inputs[order], labels[order], files=4, id=keys[order])
    got = []
    for name in ("one", "two"):
        splits = load_splits(
            DataConfig(source="parquet", path=str(tmp_path / name), key_column="id")
        )
        got.append({k: sorted(_all_ids(s)) for k, s in splits.items()})
    assert got[0] == got[1]


def test_class_counts_balance_a_streamed_imbalanced_set_to_the_target(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], [900, 200, 60])
    inputs = rng.random((len(labels), 3), dtype=np.float32)
    write_parquet(tmp_path / "pq", inputs, labels[rng.permutation(len(labels))], files=3)
    train = load_splits(DataConfig(source="parquet", path=str(tmp_path / "pq")))["train"]
    counts = train.class_counts()
    balancer = ClassBalancer.from_counts(counts, keep_ratio=None, repeat_rare=True, target=None)
    seen = np.zeros(3)
    for step, batch in enumerate(train.iter_arrays(128)):
        kept = balancer.select(batch.labels, np.random.default_rng(step))
        seen += np.bincount(batch.labels[kept], minlength=3)
    target = balancer.expected_counts(counts)
    assert np.allclose(seen, target, rtol=0.15), (seen, target)
    assert seen[2] / seen[1] > 0.8 and counts[2] / counts[1] < 0.4  # the rare class lifted


def test_bad_sources_are_named_before_any_row_is_read(tmp_path):
    inputs, labels = _rows(n=50)
    write_parquet(tmp_path / "pq", inputs, labels, files=1)
    with pytest.raises(JobError, match=r"column 'pixels' not in .*part-000.parquet"):
        load_splits(DataConfig(source="parquet", path=str(tmp_path / "pq"), input_column="pixels"))
    pq.write_table(
        pa.table({"input": [[0.0]] * 9, "label": ["cat"] * 9}), tmp_path / "strings.parquet"
    )
    with pytest.raises(JobError, match=r"labels in .*strings.parquet .* must be integers"):
        load_splits(DataConfig(source="parquet", path=str(tmp_path / "strings.parquet")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobError, match="no parquet files under"):
        load_splits(DataConfig(source="parquet", path=str(tmp_path / "empty")))
    (tmp_path / "flat").mkdir()
    with pytest.raises(JobError, match="has no class folders"):
        load_splits(DataConfig(source="image_folder", path=str(tmp_path / "flat")))


def test_a_split_location_that_does_not_exist_is_named(tmp_path):
    write_parquet(tmp_path / "train", *_rows(n=20), files=1)
    with pytest.raises(ValueError, match=r"data.split.val: not found: .*/nope"):
        DataConfig(
            source="parquet",
            split={"train": str(tmp_path / "train"), "val": str(tmp_path / "nope")},
        )
    with pytest.raises(ValueError, match=r"data\.split\.test: with split\.train a location"):
        DataConfig(
            source="parquet",
            split={"train": str(tmp_path / "train"), "val": str(tmp_path / "train"), "test": 0.2},
        )


def test_a_bad_row_mid_stream_is_named_or_skipped_and_counted(tmp_path, capsys):
    inputs, labels = _rows(n=400)
    inputs[333, 0, 0, 0] = np.nan
    write_parquet(tmp_path / "pq", inputs, labels, files=1)
    data = DataConfig(
        source="parquet", path=str(tmp_path / "pq"), split={"val": 0.01, "test": 0.01}
    )
    splits = load_splits(data)
    with pytest.raises(JobError, match=r"row 333 of part-000.parquet: NaN or infinite input"):
        list(splits["train"].iter_arrays(64))
    skipping = load_splits(data.model_copy(update={"skip_bad": True}))
    rows = sum(len(b) for b in skipping["train"].iter_arrays(64))
    assert rows == len(skipping["train"]) - 1
    assert "[data] skipped: row 333 of part-000.parquet" in capsys.readouterr().out


def test_validate_plans_rows_and_bytes_without_reading_inputs(tmp_path):
    inputs, labels = _rows(inputs_shape=(3, 8, 8), n=256)
    write_parquet(tmp_path / "pq", inputs, labels, files=2)
    train = load_splits(DataConfig(source="parquet", path=str(tmp_path / "pq")))["train"]
    assert train.nbytes == len(train) * (3 * 8 * 8 * 4 + 16)


def test_validate_prints_what_the_job_will_stream(tmp_path):
    import yaml
    from click.testing import CliRunner

    from raydistill.cli import main

    inputs, labels = _rows(inputs_shape=(1, 8, 8), n=300, classes=10)
    write_parquet(tmp_path / "pq", inputs, labels, files=3)
    raw = yaml.safe_load((Path(__file__).parents[1] / "jobs" / "digits.yaml").read_text())
    raw["data"] = {"source": "parquet", "path": str(tmp_path / "pq")}
    raw["output"] = {"storage_path": str(tmp_path / "runs")}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(raw))
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "job.yaml")])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stderr.splitlines() if x.startswith("# data: "))
    splits = load_splits(DataConfig(source="parquet", path=str(tmp_path / "pq")))
    sizes = ", ".join(f"{k} {len(v):,}" for k, v in splits.items())
    assert line.startswith(f"# data: {sizes} rows, 10 classes; streams 300 rows"), line
    assert f"({300 * (64 * 4 + 16) / 1e6:,.1f} MB decoded) from 3 files" in line
    assert not (tmp_path / "runs").exists()


def test_the_plan_reads_files_side_by_side_in_order_and_names_the_first_bad_one():
    import threading

    from raydistill.data.plan import in_parallel

    seen: set[int] = set()

    def read(i: int) -> int:
        seen.add(threading.get_ident())
        time.sleep(0.02)  # storage latency: the reads overlap
        if i in (7, 9):
            raise JobError(f"data: cannot read file {i}")
        return i * i

    assert in_parallel(read, list(range(7))) == [i * i for i in range(7)]
    assert len(seen) > 1
    with pytest.raises(JobError, match="file 7"):
        in_parallel(read, list(range(12)))

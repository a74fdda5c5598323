"""WebDataset-style tar shards as a streamed source (raydistill/data/shards.py): samples listed
from the headers, split by the hash of their key, each image read as one ranged read of its
shard. Real shards of the digits as PNGs; Ray-free except the last test, a short job on them."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from raydistill.config import DataConfig, JobError, load_job
from raydistill.data.digits import load_digits_arrays
from raydistill.data.sources import load_splits

ROOT = Path(__file__).resolve().parents[1]


def _png(pixels: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_shards(root: Path, rows: int = 300, shards: int = 3, extra=None) -> Path:
    """The first ``rows`` digits as PNG + ``.cls`` samples in ``shards`` tars under ``root``
    (``extra``: members added to the last shard as they are, for bad-input tests)."""
    digits = load_digits_arrays()
    root.mkdir(parents=True, exist_ok=True)
    for s, part in enumerate(np.array_split(np.arange(rows), shards)):
        with tarfile.open(root / f"shard-{s:04d}.tar", "w") as tar:
            for i in part:
                _add(tar, f"digits/{i:05d}.png", _png(digits.inputs[i, 0]))
                _add(tar, f"digits/{i:05d}.cls", str(int(digits.labels[i])).encode())
            for name, data in (extra or {}).items() if s == shards - 1 else ():
                _add(tar, name, data)
    return root


def split_rows(splits) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every split's rows read in this process: ``{split: (inputs, labels)}``."""
    out = {}
    for name, split in splits.items():
        batches = list(split.iter_arrays(1000))
        out[name] = (
            np.concatenate([b.inputs for b in batches]),
            np.concatenate([b.labels for b in batches]),
        )
    return out


def test_shards_stream_every_sample_once_with_its_own_image_and_class(tmp_path):
    root = write_shards(tmp_path / "shards")
    data = DataConfig(source="webdataset", path=str(root), channels=1)
    splits = load_splits(data)
    assert splits["train"].num_classes == 10
    assert sum(len(s) for s in splits.values()) == 300
    rows = split_rows(splits)
    # each decoded image is one of the digits, carrying that digit's label
    digits = load_digits_arrays()
    quantized = (digits.inputs[:300] * 255).astype(np.uint8) / 255.0  # as the PNGs hold them
    found = 0
    for inputs, labels in rows.values():
        assert inputs.shape[1:] == (1, 8, 8) and inputs.dtype == np.float32
        for image, label in zip(inputs, labels, strict=True):
            match = np.flatnonzero(np.abs(quantized - image).reshape(300, -1).max(axis=1) < 1e-6)
            assert len(match) >= 1 and label in digits.labels[match], "an image lost its class"
            found += 1
    assert found == 300
    # the plan's class counts are the rows' own
    train_labels = rows["train"][1]
    assert (
        splits["train"].class_counts().tolist() == np.bincount(train_labels, minlength=10).tolist()
    )
    # the same split on every run, and when the shards are cut differently
    again = split_rows(load_splits(data))
    assert all(np.array_equal(rows[k][1], again[k][1]) for k in rows)
    recut = write_shards(tmp_path / "recut", shards=1)
    # the key names the shard, so another cut is another set of keys: same sizes, same classes
    sizes = {
        k: len(s) for k, s in load_splits(data.model_copy(update={"path": str(recut)})).items()
    }
    assert sum(sizes.values()) == 300 and all(0.1 < v / 300 < 0.8 for v in sizes.values())


def test_images_resize_and_a_bad_image_is_named_or_skipped(tmp_path, capsys):
    root = write_shards(
        tmp_path / "s", extra={"digits/zz.png": b"not a png", "digits/zz.cls": b"3"}
    )
    data = DataConfig(source="webdataset", path=str(root), channels=1, image_size=(4, 6))
    splits = load_splits(data)
    bad = next(k for k, s in splits.items() if "zz" in "".join(s.items.column("key").to_pylist()))
    with pytest.raises(JobError, match=r"cannot read image .*digits/zz in .*shard-0002.tar"):
        split_rows({bad: splits[bad]})
    skipping = load_splits(data.model_copy(update={"skip_bad": True}))
    rows = split_rows(skipping)
    assert sum(len(r[1]) for r in rows.values()) == 300  # the 301st sample skipped
    assert "[data] skipped: cannot read image" in capsys.readouterr().out
    assert rows["train"][0].shape[1:] == (1, 4, 6)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"digits/lost.png": _png(np.zeros((8, 8)))},
            r"sample 'digits/lost' of shard-0002.tar has no a? ?\.cls",
        ),
        ({"digits/alone.cls": b"4"}, r"sample 'digits/alone' of shard-0002.tar has no an image"),
        (
            {"digits/odd.png": _png(np.zeros((8, 8))), "digits/odd.cls": b"cat"},
            r"holds 'cat', not an integer",
        ),
    ],
)
def test_a_sample_without_its_parts_is_named_when_planned(tmp_path, extra, message):
    root = write_shards(tmp_path / "s", rows=30, extra=extra)
    with pytest.raises(JobError, match=message):
        load_splits(DataConfig(source="webdataset", path=str(root), channels=1))


def test_not_a_tar_and_no_shards_are_named(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobError, match=r"no \.tar shards under"):
        load_splits(DataConfig(source="webdataset", path=str(tmp_path / "empty")))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.tar").write_bytes(b"\x00" * 10 + b"garbage" * 200)
    with pytest.raises(JobError, match=r"cannot read x.tar as a tar shard"):
        load_splits(DataConfig(source="webdataset", path=str(tmp_path / "bad")))


@pytest.mark.slow
def test_a_job_on_shards_trains_on_ray_with_the_teacher_scoring_its_digits(
    ray_address, digits_teacher, tmp_path
):
    from raydistill.pipeline import run_job

    root = write_shards(tmp_path / "shards", rows=600, shards=4)
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["data"] = {"source": "webdataset", "path": str(root), "channels": 1}
    raw["output"] = {"storage_path": str(tmp_path / "runs")}
    raw["teacher"]["checkpoint"] = digits_teacher
    raw["train"].update({"epochs": 1, "baseline": False})
    raw["scaling"]["teacher_pool"] = {"min_actors": 1, "max_actors": 1, "num_cpus": 0.5}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    lines: list[str] = []
    summary = run_job(load_job(path), log=lines.append)
    assert any("streams 600 rows" in line and "from 4 files" in line for line in lines), lines
    # the digits teacher scores the digits read back from the shards: rows kept their classes
    assert summary.score("teacher").accuracy > 0.8
    assert summary.stages["student"].history[0]["train_soft"] > 0  # the pool labelled them

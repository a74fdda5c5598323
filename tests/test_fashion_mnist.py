"""Fashion-MNIST: the idx reader on files the tests write (and on the real files when the Debian
package is installed), the splits, the job's models, and the job end to end at reduced size."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from raydistill.config import JobError, load_job
from raydistill.data.idx import (
    FASHION_MNIST_DIR,
    FASHION_MNIST_FILES,
    IdxError,
    load_fashion_mnist,
    read_idx,
)
from raydistill.data.sources import load_splits
from raydistill.models import build_model, count_parameters

ROOT = Path(__file__).resolve().parents[1]
JOB = ROOT / "jobs" / "fashion-mnist.yaml"
REAL = Path(FASHION_MNIST_DIR)
REAL_INSTALLED = all(
    (REAL / f"{stem}.gz").is_file() for pair in FASHION_MNIST_FILES.values() for stem in pair
)


def _idx_bytes(array: np.ndarray) -> bytes:
    """The idx encoding, written out by hand: 0, 0, type 0x08 (uint8), ndim, big-endian dims."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _learnable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Images whose class k is a bright 7x7 square at a class-specific place, over noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 28, 28))
    for i, k in enumerate(labels):
        r, c = 7 * (k // 4), 7 * (k % 4)
        images[i, r : r + 7, c : c + 7] += 180
    return images.astype(np.uint8), labels.astype(np.uint8)


def write_fashion_dir(directory: Path, train: int = 600, test: int = 200, gz: bool = True) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for part, n, seed in (("train", train, 0), ("test", test, 1)):
        images, labels = _learnable(n, seed)
        for stem, array in zip(FASHION_MNIST_FILES[part], (images, labels), strict=True):
            data = _idx_bytes(array)
            if gz:
                (directory / f"{stem}.gz").write_bytes(gzip.compress(data))
            else:
                (directory / stem).write_bytes(data)
    return directory


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trips(tmp_path: Path, gz: bool) -> None:
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.gz" if gz else "a")
    data = _idx_bytes(array)
    path.write_bytes(gzip.compress(data) if gz else data)
    got = read_idx(path)
    assert got.shape == (2, 3, 4) and got.dtype == np.uint8
    assert got[1, 2, 3] == 23 and np.array_equal(got, array)


def test_read_idx_rejects_malformed_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x01\x02\x08\x01" + struct.pack(">I", 2) + b"\x00\x00")
    with pytest.raises(IdxError, match="not an idx file"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"\x00\x00")
    with pytest.raises(IdxError, match=r"header says \(5,\) \(5 bytes\) but 2 bytes follow"):
        read_idx(short)


def test_load_fashion_mnist_from_written_files(tmp_path: Path) -> None:
    parts = load_fashion_mnist(write_fashion_dir(tmp_path / "fm", gz=False))
    train, test = parts["train"], parts["test"]
    assert train.inputs.shape == (600, 1, 28, 28) and test.inputs.shape == (200, 1, 28, 28)
    assert train.inputs.dtype == np.float32 and train.num_classes == 10
    images, labels = _learnable(600, 0)
    assert np.array_equal(train.labels, labels)
    assert train.inputs[5, 0, 3, 4] == pytest.approx(images[5, 3, 4] / 255.0)
    assert 0.0 <= train.inputs.min() and train.inputs.max() <= 1.0


def test_missing_file_names_it_and_how_to_install(tmp_path: Path) -> None:
    directory = write_fashion_dir(tmp_path / "fm")
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(IdxError) as info:
        load_fashion_mnist(directory)
    message = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz not found" in message
    assert "apt-get install -y dataset-fashion-mnist" in message
    job = load_job(JOB, [f"data.path={directory}"])  # validates without the files...
    with pytest.raises(JobError, match=r"t10k-labels-idx1-ubyte\.gz not found"):
        load_splits(job.data)  # ...and says what is missing when read


def test_splits_keep_the_official_test_part_and_subset(tmp_path: Path) -> None:
    directory = write_fashion_dir(tmp_path / "fm")
    job = load_job(JOB, [f"data.path={directory}", "data.split.val=0.25"])
    splits = load_splits(job.data)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [450, 150, 200]
    assert np.bincount(splits["val"].labels).tolist() == [15] * 10  # stratified
    _, test_labels = _learnable(200, 1)
    assert np.array_equal(splits["test"].labels, test_labels)
    small = load_splits(load_job(JOB, [f"data.path={directory}", "data.subset=0.5"]).data)
    assert [len(small[k]) for k in ("train", "val", "test")] == [240, 60, 100]
    assert np.bincount(small["test"].labels).tolist() == [10] * 10
    again = load_splits(load_job(JOB, [f"data.path={directory}", "data.subset=0.5"]).data)
    assert np.array_equal(again["train"].inputs, small["train"].inputs)  # seeded


@pytest.mark.skipif(not REAL_INSTALLED, reason=f"dataset-fashion-mnist not installed in {REAL}")
def test_real_fashion_mnist_files() -> None:
    parts = load_fashion_mnist()
    assert len(parts["train"]) == 60_000 and len(parts["test"]) == 10_000
    assert np.bincount(parts["train"].labels).tolist() == [6000] * 10
    assert np.bincount(parts["test"].labels).tolist() == [1000] * 10
    assert parts["train"].inputs.max() == 1.0 and parts["train"].inputs.min() == 0.0


def test_job_models_fit_the_brief() -> None:
    job = load_job(JOB)
    teacher = build_model(job.teacher, 10)
    student = build_model(job.student, 10)
    assert count_parameters(teacher) == 11_172_810  # ResNet-18 widths, 1 input channel
    assert count_parameters(student) * 20 <= count_parameters(teacher)
    assert type(teacher).__module__ == "torchvision.models.resnet"
    import torch

    x = torch.zeros(2, 1, 28, 28)
    assert teacher.eval()(x).shape == (2, 10) and student.eval()(x).shape == (2, 10)


def test_pooled_cnn_taps_match_the_resnet_stages() -> None:
    """The student's documented taps have the shapes of the width-w teacher's layer1-3, so AT
    pairs need no adapter; and the pools shrink the map the head sees to 7x7."""
    import torch

    from raydistill.distill.taps import FeatureTap
    from raydistill.models.zoo import pooled_cnn, small_input_resnet18

    student, teacher = pooled_cnn(width=4).eval(), small_input_resnet18(width=4).eval()
    x = torch.rand(3, 1, 28, 28)
    with FeatureTap(student, ["features.5", "features.12", "features.16"]) as s_taps:
        assert student(x).shape == (3, 10)
    with FeatureTap(teacher, ["layer1", "layer2", "layer3"]) as t_taps:
        teacher(x)
    shapes = [list(s_taps.features[n].shape) for n in ("features.5", "features.12", "features.16")]
    assert shapes == [list(t_taps.features[n].shape) for n in ("layer1", "layer2", "layer3")]
    assert shapes == [[3, 4, 28, 28], [3, 8, 14, 14], [3, 16, 7, 7]]


@pytest.mark.slow
def test_fashion_job_end_to_end_with_dkd_and_attention_transfer(ray_address, tmp_path) -> None:
    """The real job at reduced size on written idx files: teacher stage (the adapted ResNet-18
    at width 4), then a DKD + attention-transfer student fed by the teacher pool."""
    from raydistill.pipeline import run_job

    directory = write_fashion_dir(tmp_path / "fm")
    job = load_job(
        JOB,
        [
            f"data.path={directory}",
            f"output.storage_path={tmp_path / 'runs'}",
            "name=fm-e2e",
            "teacher.args.width=4",
            "teacher.train={epochs: 2, lr: 0.01}",
            "student.args.width=2",
            "train.epochs=3",
            "train.baseline=false",
            "scaling.workers=1",
            "distill.method=dkd",
            "distill.feature_layers=[{student: features.12, teacher: layer2}]",
            "distill.feature_loss=at",
            "distill.feature_weight=5",
        ],
    )
    summary = run_job(job, log=print)
    teacher = json.loads((job.run_dir / "teacher" / "history.json").read_text())
    assert len(teacher) == 2 and teacher[-1]["train_loss"] < teacher[0]["train_loss"]
    history = summary.stages["student"].history
    assert len(history) == 3
    # both new terms reached the workers: DKD soft term and the attention-transfer term (<= 2)
    assert all(h["train_soft"] > 0 and 0 < h["train_feature"] <= 2 for h in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert [s.name for s in summary.scores] == ["teacher", "student (distilled)"]
    assert (
        summary.score("teacher").parameters >= 20 * summary.score("student (distilled)").parameters
    )
    assert "| student (distilled) |" in (job.run_dir / "summary.md").read_text()

"""TensorBoard events written by the Ray Train callback, read back from the event files."""

from __future__ import annotations

import math
import pickle
import struct
from pathlib import Path

import pytest

from raydistill.tracking import TensorBoardLogger, scalar_metrics


def read_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in a directory's event files (TFRecord framing: length, crc, data, crc)."""
    from tensorboardX.proto import event_pb2

    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                found.setdefault(value.tag, []).append((event.step, value.simple_value))
    return found


def _epoch(epoch: int) -> dict:
    return {
        "epoch": epoch,
        "train_loss": 2.0 / (epoch + 1),
        "val_acc": 0.5 + 0.1 * epoch,
        "temperature": 4.0 - epoch,
        "alpha": 0.9,
        "class_counts": [10, 12],
        "stopped_early": False,
        "val_loss": float("nan"),
    }


def test_scalar_metrics_keeps_finite_numbers_only():
    assert scalar_metrics(_epoch(1)) == {
        "train_loss": 1.0,
        "val_acc": pytest.approx(0.6),
        "temperature": 3.0,
        "alpha": 0.9,
    }


def test_each_report_becomes_events_by_epoch(tmp_path):
    logger = TensorBoardLogger(tmp_path / "tb" / "student")
    for epoch in range(3):
        # what Ray Train passes: one metrics dict per worker, rank 0 first
        logger.after_report(None, [_epoch(epoch), {"epoch": epoch, "val_acc": 0.0}], None)
    logger.close()  # the writer thread has written everything once closed
    scalars = read_scalars(tmp_path / "tb" / "student")
    assert scalars["val_acc"] == [(1, 0.5), (2, pytest.approx(0.6)), (3, pytest.approx(0.7))]
    assert [v for _, v in scalars["temperature"]] == [4.0, 3.0, 2.0]
    assert "class_counts" not in scalars and "val_loss" not in scalars


def test_the_callback_travels_to_the_controller_without_its_writer(tmp_path):
    logger = TensorBoardLogger(tmp_path / "a")
    logger.after_report(None, [_epoch(0)], None)
    copy = pickle.loads(pickle.dumps(logger))  # Ray ships callbacks to the Train controller
    assert copy._writer is None and copy.log_dir == logger.log_dir
    copy.after_report(None, [_epoch(1)], None)
    copy.close()
    logger.close()
    # two event files (original and copy); their names may sort either way within one second
    assert sorted(s for s, _ in read_scalars(tmp_path / "a")["alpha"]) == [1, 2]


def test_progress_lines_inside_long_epochs_only():
    from raydistill.train.loop import StepProgress

    progress = StepProgress("student", total_epochs=5, every_s=30)
    progress.start(epoch=0, now=100.0)
    # steps of 64 samples, one per second: a line once 30 s have passed, none before
    lines = [progress.update(step, 64, 100.0 + step + 1) for step in range(40)]
    printed = [line for line in lines if line is not None]
    assert len(printed) == 1 and lines.index(printed[0]) == 29  # step 30 ends at t=130
    assert printed[0] == "[student] epoch 1/5 step 30: 1920 samples, 64 samples/s (worker 0)"
    progress.finish()  # the first epoch saw 40 * 64 = 2560 samples

    progress.start(epoch=1, now=200.0)
    lines = [progress.update(s, 128, 200.0 + s + 1, " T=4.00 alpha=0.90") for s in range(30)]
    # twice the rate: past the previous epoch's 2560 samples already, so nothing left
    assert lines[-1] == (
        "[student] epoch 2/5 step 30: 3840 samples, 128 samples/s (worker 0) T=4.00 alpha=0.90,"
        " epoch eta 0s"
    )
    progress.finish()
    progress.start(epoch=2, now=300.0)
    # the second epoch's 3840 samples at 64 per 31 s: 3776 left
    assert progress.update(0, 64, 331.0).endswith(f"epoch eta {math.ceil(3776 / (64 / 31))}s")

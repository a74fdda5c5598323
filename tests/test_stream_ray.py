"""The streamed data plane on a real local Ray: a split larger than the object store reaches 2
train workers once per epoch; a streamed image folder trains end to end; a corrupt image found
mid-stream ends the run naming it, or is skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_stream import write_parquet

from raydistill.cli import main
from raydistill.config import load_job
from raydistill.data.keys import row_hashes, row_ids, split_mask
from raydistill.pipeline import run_job

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
HELPERS = Path(__file__).parent / "helpers"
STORE = 80 * 2**20  # the test Ray's object store: smaller than the training split


@pytest.mark.budget(seconds=300, reason="a Ray of its own (small object store), 2 workers")
def test_a_split_larger_than_the_object_store_reaches_two_workers_once(tmp_path):
    rows, per_file = 16_000, 3_200
    rng = np.random.default_rng(0)
    source = tmp_path / "pq"
    for f in range(rows // per_file):  # one file at a time: this process never holds them all
        inputs = rng.random((per_file, 3, 32, 32), dtype=np.float32)
        labels = rng.integers(0, 10, per_file)
        write_parquet(source / f"f{f}", inputs, labels, files=1, row_group=800)
    out = tmp_path / "out"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a Ray of its own
    ray_tmp = Path(tempfile.mkdtemp(prefix="rd-stream-", dir="/tmp"))  # sockets: short paths
    env["RAY_TMPDIR"] = str(ray_tmp)
    env["RAY_AUTH_MODE"] = "disabled"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(HELPERS)])
    try:
        done = subprocess.run(
            [sys.executable, str(HELPERS / "stream_epoch.py"), str(source), str(out), str(STORE)],
            env=env,
            capture_output=True,
            text=True,
            timeout=540,
        )
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((out / "result.json").read_text())
    assert result["train_bytes"] > 1.2 * STORE  # the split does not fit the object store
    # the train split by its rule: row r of file f is in train when its hash says so
    hashes = np.concatenate(
        [row_hashes(f"f{f}/part-000.parquet", 0, per_file) for f in range(rows // per_file)]
    )
    want = set(row_ids(hashes[split_mask(hashes, "train", 0.2, 0.2, 0)]).tolist())
    assert result["train_rows"] == len(want)
    ranks = [np.load(out / f"rank-{r}.npy").tolist() for r in (0, 1)]
    seen = ranks[0] + ranks[1]
    assert len(seen) == len(set(seen)), "a row reached the trainers twice in one epoch"
    assert set(seen) <= want
    # Ray Train's equal split may hold back fewer rows than there are workers, never more
    assert len(want) - len(seen) < 2, len(want) - len(seen)
    assert abs(len(ranks[0]) - len(ranks[1])) <= 1  # each worker its share
    # one read task or one per row group: the same rows
    assert result["val_one_task"] == result["val_many_tasks"] and result["val_blocks"] > 1


def _image_job(tmp_path: Path, teacher: str, broken: bool, changes: dict | None = None) -> Path:
    """A digits image folder (``digit_<k>/<i>.png``, 8x8 grayscale) and a short job on it with
    the session's digits ``teacher`` (trained on the same digits as arrays); with ``broken``,
    one undecodable image sits late in the listing (found mid-stream)."""
    from PIL import Image

    from raydistill.data.digits import load_digits_arrays

    digits = load_digits_arrays()
    root = tmp_path / "images"
    for i in range(600):
        folder = root / f"digit_{digits.labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((digits.inputs[i, 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    if broken:  # a name whose hash puts it in the train split: read by the first epoch
        (root / "digit_9" / "zz-broken-2.png").write_bytes(b"\x89PNG, but not really")
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["data"] = {"source": "image_folder", "path": str(root), "channels": 1}
    raw["output"] = {"storage_path": str(tmp_path / "runs")}
    raw["teacher"]["checkpoint"] = teacher
    raw["train"].update({"epochs": 2, "baseline": False})
    raw["scaling"]["teacher_pool"] = {"min_actors": 1, "max_actors": 1, "num_cpus": 0.5}
    for key, value in (changes or {}).items():
        section, name = key.split(".")
        raw[section][name] = value
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_corrupt_image_found_mid_stream_ends_the_run_with_one_line(
    ray_address, digits_teacher, tmp_path
):
    job = _image_job(tmp_path, digits_teacher, broken=True)
    result = CliRunner().invoke(main, ["train", str(job)])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    error = [line for line in lines if line.startswith("error: ")]
    # one line of the run's own (Ray logs the failed read task's traceback beside it)
    assert len(error) == 1, result.stderr[-2000:]
    assert not error[0].startswith("error: ray::"), error[0]  # the error, not Ray's wrapper
    broken = tmp_path / "images" / "digit_9" / "zz-broken-2.png"
    assert f"data: cannot read image {broken}" in error[0], error[0]
    assert "data.skip_bad" in error[0]


@pytest.mark.budget(seconds=300, reason="a cache pass and a 2-epoch student, streamed")
def test_a_streamed_image_folder_trains_end_to_end_skipping_a_bad_image(
    ray_address, digits_teacher, tmp_path, capfd
):
    # and the teacher pass over more rows than `once` may hold goes through the (joined) cache
    changes = {"data.skip_bad": True, "distill.once_max_mb": 0.05}
    job = load_job(_image_job(tmp_path, digits_teacher, broken=True, changes=changes))
    summary = run_job(job, log=print)
    out = capfd.readouterr().out
    assert "[data] skipped: cannot read image" in out and "zz-broken-2.png" in out
    assert "streams 601 rows" in out  # the plan lists the bad file; the reader skips it
    assert "the teacher pass is written through the cache at" in out
    assert (job.cache_dir / "manifest.json").is_file()
    # one worker on the session's one node trains in this process, streaming its rows
    assert "[student] one worker, train and val streamed, one node: training in this process" in out
    teacher = summary.score("teacher")
    # the digits teacher scores its digits as PNGs: the streamed rows carry their own labels
    assert teacher.accuracy > 0.8, teacher
    history = summary.stages["student"].history
    assert history[0]["train_soft"] > 0  # the teacher pool labelled the streamed rows
    assert len(history) == 2

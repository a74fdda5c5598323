"""What a killed run leaves behind is recognised as unfinished, never read as whole (issue #8,
item 4), checked without Ray on directories shaped as a kill leaves them.

The Ray runs that kill a real driver and a real cache build are in test_e2e_digits.py
(``test_driver_killed_mid_run_resumes_from_checkpoint``) and test_cache.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import raydistill.teacher.cache as cache
from raydistill.config import JobError, load_job
from raydistill.data.sources import load_splits
from raydistill.models import build_model, save_weights
from raydistill.pipeline import planned_teacher_passes
from raydistill.train.stage import HISTORY_FILE, WEIGHTS_FILE, finished_stage, latest_checkpoint
from raydistill.train.state import STATE_FILE, load_state, save_state

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the teacher cache


@pytest.fixture
def cached_job(write_job, tmp_path):
    """A cache job, its teacher weights, its splits, and a complete cache written by hand in
    the layout and manifest format ``write_cache`` uses (the teacher pass itself needs Ray)."""
    job = load_job(write_job({"distill.teacher_pass": "cache"}, name="cached"))
    teacher = save_weights(build_model(job.teacher, 10, load=False), tmp_path / "teacher.pt")
    splits = load_splits(job.data)
    directory = job.cache_dir
    directory.mkdir(parents=True)
    (directory / cache.BUILD_MARKER).write_text("built by raydistill\n")
    files = []
    for split in cache.SPLITS:
        (directory / split).mkdir(parents=True)
        for part in range(2):  # several files per split, as Ray Data writes them
            rows = np.arange(part, len(splits[split]), 2)
            table = pa.table({"row_id": rows, "label": splits[split].labels[rows]})
            path = directory / split / f"part-{part}.parquet"
            pq.write_table(table, path)
            files.append(cache.file_entry(directory, path))
    manifest = {
        "format": cache.FORMAT,
        "key": cache.cache_key(job, teacher, splits),
        "rows": {k: len(splits[k]) for k in cache.SPLITS},
        "teacher_forward_passes": sum(len(splits[k]) for k in cache.SPLITS),
        "logit_bytes_per_sample": 40,
        "parquet_bytes": sum(f["bytes"] for f in files),
        "seconds": 0.0,
        "files": files,
    }
    (directory / cache.MANIFEST).write_text(json.dumps(manifest))
    return job, teacher, splits


@pytest.fixture
def rebuilds(monkeypatch) -> list[Path]:
    """Records every cache rebuild instead of running the teacher pool."""
    calls: list[Path] = []

    def fake_write(job, teacher_weights, splits, directory, log=print):
        calls.append(directory)
        return {"rebuilt": True}

    monkeypatch.setattr(cache, "write_cache", fake_write)
    return calls


def test_a_complete_cache_is_reused_as_it_is(cached_job, rebuilds):
    job, teacher, splits = cached_job
    manifest = cache.ensure_cache(job, teacher, splits, log=print)
    assert manifest["files"] and rebuilds == []
    assert planned_teacher_passes(job, splits) == 0


def test_a_cache_killed_before_its_manifest_is_rebuilt_not_read(cached_job, rebuilds):
    """A killed ``raydistill cache`` leaves Parquet without a manifest (written last)."""
    job, teacher, splits = cached_job
    (job.cache_dir / cache.MANIFEST).unlink()
    victim = job.cache_dir / "train" / "part-1.parquet"
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])  # killed mid-write
    lines: list[str] = []
    assert cache.ensure_cache(job, teacher, splits, log=lines.append) == {"rebuilt": True}
    assert rebuilds == [job.cache_dir]
    assert any("unfinished" in line and "rebuilding" in line for line in lines), lines
    # the planner counts the teacher pass the rebuild will run
    assert planned_teacher_passes(job, splits) > 0
    with pytest.raises(JobError, match="missing or unfinished"):
        cache.verify_cache(job.cache_dir, cache.cache_key(job, teacher, splits))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (lambda f: f.write_bytes(f.read_bytes()[:100]), "has changed"),
        (lambda f: f.write_bytes(f.read_bytes() + b"\0"), "has changed"),
        (lambda f: f.unlink(), "is missing"),
    ],
    ids=["truncated", "appended", "deleted"],
)
def test_a_damaged_complete_cache_is_refused_in_one_line(cached_job, rebuilds, damage, says):
    job, teacher, splits = cached_job
    damage(job.cache_dir / "val" / "part-0.parquet")
    with pytest.raises(JobError, match=f"file val/part-0.parquet {says}") as err:
        cache.ensure_cache(job, teacher, splits, log=print)
    assert "\n" not in str(err.value) and rebuilds == []


def test_a_cache_made_with_other_teacher_weights_is_refused(cached_job, rebuilds, tmp_path):
    job, _, splits = cached_job
    torch.manual_seed(7)
    other = save_weights(build_model(job.teacher, 10, load=False), tmp_path / "other.pt")
    with pytest.raises(JobError, match=r"made for another job: differs in teacher\.weights_sha256"):
        cache.ensure_cache(job, other, splits, log=print)
    assert rebuilds == []


def test_a_rebuild_killed_midway_leaves_the_old_cache_whole(cached_job, monkeypatch):
    """A rebuild writes into a sibling build directory and renames it into place: killed in
    the teacher pass, the old cache is still whole (its manifest vouches for its own files,
    never for new, partial ones), and the failed build's directory is gone (one a SIGKILL
    leaves is cleared by the next build: test_trust_cache.py)."""
    job, teacher, splits = cached_job
    before = (job.cache_dir / cache.MANIFEST).read_text()

    class Killed(Exception):
        pass

    def killed_mid_pass(job, teacher_weights, splits, directory, log=print):
        assert directory.parent == job.cache_dir.parent and directory != job.cache_dir
        (directory / "train").mkdir()
        (directory / "train" / "part-0.parquet").write_bytes(b"half a file")
        raise Killed

    monkeypatch.setattr(cache, "_teacher_pass", killed_mid_pass)
    with pytest.raises(Killed):
        cache.write_cache(job, teacher, splits, job.cache_dir)
    assert (job.cache_dir / cache.MANIFEST).read_text() == before
    cache.verify_cache(job.cache_dir, cache.cache_key(job, teacher, splits))
    assert not list(job.cache_dir.parent.glob(f".{job.cache_dir.name}.build-*"))


# ---------------------------------------------------------------- stage checkpoints


def _checkpoint(stage: Path, epoch: int) -> Path:
    directory = stage / f"checkpoint_{epoch:06d}"
    directory.mkdir(parents=True)
    save_state(directory, {"epoch": epoch, "history": [{"epoch": e} for e in range(epoch + 1)]})
    return directory


def test_resume_takes_the_newest_checkpoint_that_reads_whole(tmp_path):
    stage = tmp_path / "student"
    _checkpoint(stage, 0)
    second = _checkpoint(stage, 1)
    assert latest_checkpoint(stage) == second
    # killed while Ray copied the newest one: a truncated state file, and one not written yet
    third = _checkpoint(stage, 2)
    state = third / STATE_FILE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    (stage / "checkpoint_000003").mkdir()
    assert latest_checkpoint(stage) == second
    assert load_state(second)["epoch"] == 1


def test_a_stage_is_finished_only_once_its_weights_are_written(tmp_path):
    run_dir = tmp_path / "run"
    stage = run_dir / "student"
    _checkpoint(stage, 0)
    (stage / HISTORY_FILE).write_text("[]")
    assert finished_stage(run_dir, "student") is None  # history alone: killed before weights
    model = build_model(load_job(ROOT / "jobs" / "digits.yaml").student, 10, load=False)
    # a kill during save_weights leaves only its temporary file, never a partial model.pt
    (stage / (WEIGHTS_FILE + ".tmp")).write_bytes(b"partial")
    assert finished_stage(run_dir, "student") is None
    save_weights(model, stage / WEIGHTS_FILE)
    assert finished_stage(run_dir, "student") is not None

"""The teacher cache deletes only what it made, builds beside and renames into place, and two
builders of one ``cache.path`` never mix (issue 25, scenarios 1 and 3).

Ray-free: Ray's part of the teacher pass is replaced at its boundary (``training_datasets``,
``attach_teacher`` and ``write_parquet_files``) by the real teacher model run in this process
over the real splits, written as real Parquet files; everything else (lock, build directory,
manifest, checks, progress) is the cache's own code.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import raydistill.teacher.cache as cache
from raydistill.config import JobError, load_job
from raydistill.data.sources import load_splits
from raydistill.models import build_model, load_weights, save_weights
from raydistill.teacher.codec import LOGITS

Hook = Any


class _Labelled:
    """A split with the teacher attached: ``write_parquet`` runs the teacher and writes one
    Parquet file into the directory, as Ray Data's write does (one part per block)."""

    def __init__(self, arrays, job, weights: Path, num_classes: int, codec, hook: Hook) -> None:
        self.arrays, self.job, self.weights = arrays, job, Path(weights)
        self.num_classes, self.codec, self.hook = num_classes, codec, hook

    def map_batches(self, fn, **kwargs) -> _Labelled:
        # the cache drops the inputs of a joined cache's rows: this split writes none anyway
        assert fn.__name__ == "drop_inputs", fn
        return self

    def write_parquet(self, path: str) -> None:
        out = Path(path)
        out.mkdir(parents=True, exist_ok=True)
        logits = teacher_logits(self.job, self.weights, self.arrays.inputs, self.num_classes)
        encoded = self.codec.encode(logits)[LOGITS]
        rows = np.arange(len(self.arrays))
        table = pa.table(
            {
                "row_id": rows,
                "label": self.arrays.labels,
                LOGITS: pa.FixedSizeListArray.from_arrays(
                    pa.array(encoded.reshape(-1)), self.num_classes
                ),
            }
        )
        pq.write_table(table, out / f"part-{uuid.uuid4().hex[:8]}.parquet")
        self.hook(self.weights, out)


def teacher_logits(job, weights: Path, inputs: np.ndarray, num_classes: int) -> np.ndarray:
    model = load_weights(build_model(job.teacher, num_classes, load=False), weights).eval()
    with torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(inputs))).numpy()


@pytest.fixture
def teacher_pass(monkeypatch):
    """Replaces Ray at the teacher pass's boundary; returns the list of files written and a
    settable hook called after each write with (teacher weights, split directory)."""
    state: dict[str, Any] = {"writes": [], "hook": lambda weights, directory: None}

    def datasets(job, splits):
        return {"train": splits["train"], "val": splits["val"]}

    def attach(ds, job, weights, num_classes, codec=None):
        def hook(w, directory):
            state["writes"].append((Path(w), directory))
            state["hook"](w, directory)

        return _Labelled(ds, job, weights, num_classes, codec, hook)

    def write(ds, directory: Path, on_rows) -> None:
        ds.write_parquet(str(directory))
        on_rows(len(ds.arrays))

    # the task's cache_datasets reads data.sources.training_datasets when it is called
    import raydistill.data.sources as sources

    monkeypatch.setattr(sources, "training_datasets", datasets)
    monkeypatch.setattr(cache, "attach_teacher", attach)
    monkeypatch.setattr(cache, "write_parquet_files", write)
    return state


def _job(write_job, cache_path: Path, name: str = "cached"):
    return load_job(
        write_job({"distill.teacher_pass": "cache", "cache.path": str(cache_path)}, name=name)
    )


def _teacher(job, path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    return save_weights(build_model(job.teacher, 10, load=False), path)


def _listed_logits(directory: Path, manifest: dict, split: str) -> tuple[np.ndarray, np.ndarray]:
    tables = [pq.read_table(directory / e["path"]) for e in manifest["files"]]
    tables = [
        t for t, e in zip(tables, manifest["files"], strict=True) if e["path"].startswith(split)
    ]
    table = pa.concat_tables(tables)
    rows = table.column("row_id").to_numpy()
    return rows, np.stack(table.column(LOGITS).to_numpy(zero_copy_only=False))


# ---------------------------------------------------------------- scenario 1: safe deletes


@pytest.mark.parametrize("where", ["user-folder", "parent-of-caches", "dot-dot"])
def test_a_cache_path_that_is_not_a_cache_is_refused_and_kept(
    write_job, tmp_path, teacher_pass, where
):
    """``cache.path: caches/`` (the folder holding caches), a data folder or ``..`` used to be
    wiped as "an unfinished cache" by a plain train; now it is refused in one line."""
    if where == "user-folder":
        target = tmp_path / "my-data"
        target.mkdir()
        (target / "labels.csv").write_text("a,b\n")
        path, keep = target, target / "labels.csv"
    elif where == "parent-of-caches":
        target = tmp_path / "caches"
        (target / "other-job").mkdir(parents=True)
        (target / "other-job" / cache.MANIFEST).write_text(json.dumps({"format": cache.FORMAT}))
        path, keep = target, target / "other-job" / cache.MANIFEST
    else:
        (tmp_path / "data").mkdir()
        (tmp_path / "notes.txt").write_text("keep me")
        path, keep = tmp_path / "data" / "..", tmp_path / "notes.txt"
    job = _job(write_job, path)
    weights = _teacher(job, tmp_path / "teacher.pt", 0)
    splits = load_splits(job.data)
    for call in (
        lambda: cache.ensure_cache(job, weights, splits, log=print),
        lambda: cache.ensure_cache(job, weights, splits, log=print, fresh=True),
        lambda: cache.write_cache(job, weights, splits, job.cache_dir),
    ):
        with pytest.raises(JobError, match="not made by raydistill") as err:
            call()
        assert str(job.cache_dir) in str(err.value) and "\n" not in str(err.value)
        assert keep.is_file()
    assert teacher_pass["writes"] == []  # refused before the teacher pass


def test_the_root_directory_is_never_a_cache():
    with pytest.raises(JobError, match="not made by raydistill"):
        cache.check_cache_dir(Path("/"))


def test_a_cache_is_built_beside_and_renamed_into_place(write_job, tmp_path, teacher_pass):
    directory = tmp_path / "caches" / "digits"
    job = _job(write_job, directory)
    weights = _teacher(job, tmp_path / "teacher.pt", 0)
    splits = load_splits(job.data)
    # what a killed build left: raydistill's (marker) is cleared, a stranger's is not touched
    killed = directory.parent / ".digits.build-killed"
    (killed / "train").mkdir(parents=True)
    (killed / cache.BUILD_MARKER).write_text("x")
    stranger = directory.parent / ".digits.build-not-ours"
    stranger.mkdir()
    (stranger / "mine.txt").write_text("x")

    def never_in_place(w, split_dir):
        assert not directory.exists()  # the cache appears whole or not at all
        assert split_dir.parent.parent == directory.parent
        assert split_dir.parent.name.startswith(".digits.build-")

    teacher_pass["hook"] = never_in_place
    manifest = cache.ensure_cache(job, weights, splits, log=print)
    assert (directory / cache.BUILD_MARKER).is_file()
    assert manifest["rows"] == {"train": len(splits["train"]), "val": len(splits["val"])}
    for entry in manifest["files"]:
        path = directory / entry["path"]
        assert entry["sha256"] == cache.file_sha256(path)
        assert entry["rows"] == pq.ParquetFile(path).metadata.num_rows
    assert not killed.exists() and (stranger / "mine.txt").is_file()

    # a rebuild replaces it the same way, and leaves nothing beside
    teacher_pass["hook"] = lambda w, split_dir: None
    old_files = {e["path"] for e in manifest["files"]}
    again = cache.ensure_cache(job, weights, splits, log=print, fresh=True)
    assert not old_files & {e["path"] for e in again["files"]}
    cache.verify_cache(directory, again["key"])
    left = sorted(p.name for p in directory.parent.iterdir())
    assert left == [".digits.build-not-ours", ".digits.lock", "digits"]


# ---------------------------------------------------------------- scenario 3: two builders


def test_two_jobs_building_one_cache_path_never_mix(write_job, tmp_path, teacher_pass):
    """Job B starts building the shared cache while job A is halfway through its own build
    (A has written its train file). Without a lock B wiped A's files and A's manifest ended up
    vouching for B's teacher outputs. Now B waits for A's lock, then refuses A's cache as made
    for another teacher, and every file the manifest lists holds A's outputs."""
    shared = tmp_path / "shared-cache"
    job_a, job_b = _job(write_job, shared, "a"), _job(write_job, shared, "b")
    teacher_a = _teacher(job_a, tmp_path / "teacher-a.pt", 1)
    teacher_b = _teacher(job_a, tmp_path / "teacher-b.pt", 2)
    splits = load_splits(job_a.data)
    outcome: dict[str, Any] = {}
    b_waits_or_ends = threading.Event()

    def log_b(line: str) -> None:
        if "waiting" in line:  # B is blocked on A's lock
            b_waits_or_ends.set()

    def build_b() -> None:
        try:
            outcome["b"] = cache.ensure_cache(job_b, teacher_b, splits, log=log_b)
        except JobError as exc:
            outcome["b"] = exc
        finally:
            b_waits_or_ends.set()

    builder_b = threading.Thread(target=build_b)
    once = threading.Lock()  # A writes train and val at once: both call the hook

    def start_b_midway(weights: Path, split_dir: Path) -> None:
        if weights != teacher_a:
            return
        with once:
            if builder_b.ident is None:
                builder_b.start()
        assert b_waits_or_ends.wait(120)  # B either blocks on the lock or runs through

    teacher_pass["hook"] = start_b_midway
    manifest = cache.ensure_cache(job_a, teacher_a, splits, log=print)
    builder_b.join(120)
    assert not builder_b.is_alive()

    final = cache.read_manifest(shared)
    assert final is not None
    assert final["key"]["teacher"]["weights_sha256"] == cache.file_sha256(teacher_a)
    for split in cache.SPLITS:
        rows, logits = _listed_logits(shared, final, split)
        assert sorted(rows.tolist()) == list(range(len(splits[split])))
        expected = teacher_logits(job_a, teacher_a, splits[split].inputs[rows], 10)
        np.testing.assert_allclose(logits, expected, atol=1e-5, err_msg=f"{split} is not A's")
    cache.verify_cache(shared, cache.cache_key(job_a, teacher_a, splits))
    assert final == manifest
    assert isinstance(outcome["b"], JobError)
    assert "made for another job: differs in teacher.weights_sha256" in str(outcome["b"])


def test_two_runs_of_one_job_share_one_teacher_pass(write_job, tmp_path, teacher_pass):
    """The quality benchmark's case: the same job twice at once. The second waits for the
    first's build and reuses it (one teacher pass, train and val, not two)."""
    shared = tmp_path / "shared-cache"
    job = _job(write_job, shared)
    weights = _teacher(job, tmp_path / "teacher.pt", 1)
    splits = load_splits(job.data)
    second: dict[str, Any] = {}
    waits_or_ends = threading.Event()

    def run_second() -> None:
        try:
            second["manifest"] = cache.ensure_cache(
                job, weights, splits, log=lambda line: "waiting" in line and waits_or_ends.set()
            )
        finally:
            waits_or_ends.set()

    thread = threading.Thread(target=run_second)
    once = threading.Lock()  # train and val are written at once: both call the hook

    def start_second(w: Path, split_dir: Path) -> None:
        with once:
            if thread.ident is None:
                thread.start()
        assert waits_or_ends.wait(120)

    teacher_pass["hook"] = start_second
    first = cache.ensure_cache(job, weights, splits, log=print)
    thread.join(120)
    assert second["manifest"] == first
    assert len(teacher_pass["writes"]) == 2  # train and val, once


# ---------------------------------------------------------------- what verify_cache checks


@pytest.fixture
def built(write_job, tmp_path, teacher_pass):
    job = _job(write_job, tmp_path / "cache")
    weights = _teacher(job, tmp_path / "teacher.pt", 0)
    splits = load_splits(job.data)
    manifest = cache.ensure_cache(job, weights, splits, log=print)
    return job.cache_dir, manifest


def test_a_file_the_manifest_does_not_list_is_refused_and_never_read(built):
    directory, manifest = built
    listed = cache.listed_files(directory, manifest, "train")
    stray = directory / "train" / "part-from-another-build.parquet"
    stray.write_bytes(listed[0].read_bytes())
    assert stray not in cache.listed_files(directory, manifest, "train")
    with pytest.raises(JobError, match=r"file train/part-from-another-build\.parquet is not in"):
        cache.verify_cache(directory, manifest["key"])


def test_a_file_changed_at_the_same_size_is_refused(built):
    """Sizes alone accepted another build's file of equal size; the content hash does not."""
    directory, manifest = built
    victim = directory / manifest["files"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(JobError, match=r"has changed \(its sha256") as err:
        cache.verify_cache(directory, manifest["key"])
    assert "\n" not in str(err.value)


def test_a_manifest_whose_rows_do_not_add_up_is_refused(built):
    directory, manifest = built
    manifest["rows"]["val"] += 1
    cache.atomic_write_json(directory / cache.MANIFEST, manifest)
    with pytest.raises(JobError, match=r"the val files hold \d+ rows, the manifest says"):
        cache.verify_cache(directory, manifest["key"])

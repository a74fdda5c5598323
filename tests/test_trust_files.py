"""Deleting only what raydistill made, writing files whole, and damaged files read back as one
line naming them (issue 25, scenarios 1 and 6). Ray-free."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import torch

from raydistill.config import JobError, load_job
from raydistill.files import (
    atomic_output,
    atomic_write_json,
    atomic_write_text,
    read_json,
    read_yaml,
    remove_owned_dir,
)
from raydistill.train.state import STATE_FILE, load_state, save_state

RUN_MARKERS = ["job.yaml"]


def _one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------- scenario 1: safe deletes


def test_fresh_never_deletes_a_user_folder_named_like_the_job(write_job, tmp_path, monkeypatch):
    """With ``storage_path: .`` and a job file ``src.yaml``, the run directory is ``./src``:
    a user's source folder there is refused in one line, and nothing in it is touched."""
    monkeypatch.chdir(tmp_path)
    source = tmp_path / "src"
    (source / "pkg").mkdir(parents=True)
    (source / "pkg" / "main.py").write_text("print('mine')\n")
    job = load_job(write_job({"output.storage_path": "."}, name="src"))
    assert job.run_dir == source

    with pytest.raises(JobError, match="not made by raydistill") as err:
        remove_owned_dir(job.run_dir, RUN_MARKERS, "run directory")
    assert str(source) in _one_line(err) and "job.yaml" in str(err.value)
    assert (source / "pkg" / "main.py").read_text() == "print('mine')\n"


def test_a_run_directory_is_removed_without_following_links_inside_it(tmp_path):
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "data.csv").write_text("1,2\n")
    run = tmp_path / "runs" / "digits"
    (run / "student").mkdir(parents=True)
    (run / "job.yaml").write_text("name: digits\n")
    (run / "student" / "model.pt").write_bytes(b"w")
    (run / "link-to-data").symlink_to(outside, target_is_directory=True)

    assert remove_owned_dir(run, RUN_MARKERS, "run directory") is True
    assert not run.exists()
    assert (outside / "data.csv").read_text() == "1,2\n"  # the link went, never its target
    assert remove_owned_dir(run, RUN_MARKERS, "run directory") is False  # nothing there


def test_a_symlink_is_refused_and_its_target_kept(tmp_path):
    real = tmp_path / "real-run"
    real.mkdir()
    (real / "job.yaml").write_text("name: x\n")
    link = tmp_path / "runs-link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(JobError, match="is a symlink") as err:
        remove_owned_dir(link, RUN_MARKERS, "run directory")
    assert str(link) in _one_line(err)
    assert link.is_symlink() and (real / "job.yaml").is_file()


def test_a_marker_must_be_a_plain_file_in_the_directory(tmp_path):
    """A ``job.yaml`` that is a symlink (or a directory) does not make a folder raydistill's."""
    folder = tmp_path / "home"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep")
    elsewhere = tmp_path / "job.yaml"
    elsewhere.write_text("name: x\n")
    (folder / "job.yaml").symlink_to(elsewhere)
    with pytest.raises(JobError, match="not made by raydistill"):
        remove_owned_dir(folder, RUN_MARKERS, "run directory")
    assert (folder / "notes.txt").read_text() == "keep"


def test_an_empty_directory_is_removed_and_a_file_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert remove_owned_dir(empty, RUN_MARKERS, "run directory") and not empty.exists()
    plain = tmp_path / "file"
    plain.write_text("x")
    with pytest.raises(JobError, match="is not a directory"):
        remove_owned_dir(plain, RUN_MARKERS, "run directory")
    assert plain.exists()


# ---------------------------------------------------------------- scenario 6: partial writes


class DiskFull(OSError):
    pass


def test_a_failed_write_leaves_the_previous_file_whole(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"acc": 0.9})
    with pytest.raises(DiskFull), atomic_output(target) as tmp:
        tmp.write_text('{"acc": 0.')  # half of the new content, then the disk is full
        raise DiskFull("No space left on device")
    assert read_json(target) == {"acc": 0.9}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]  # no temp left


def test_a_state_file_killed_mid_save_keeps_the_previous_epoch(tmp_path, monkeypatch):
    """``state.pt`` is written beside and renamed: a save that dies halfway (a full disk)
    leaves the previous epoch's state readable, not a truncated file."""
    import raydistill.train.state as state_module

    save_state(tmp_path, {"epoch": 3, "history": []})
    real_save = torch.save

    def dies_halfway(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as out:
            out.truncate(os.path.getsize(f) // 2)
        raise DiskFull("No space left on device")

    monkeypatch.setattr(state_module.torch, "save", dies_halfway)
    with pytest.raises(DiskFull):
        save_state(tmp_path, {"epoch": 4, "history": []})
    monkeypatch.setattr(state_module.torch, "save", real_save)
    assert load_state(tmp_path)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == [STATE_FILE]


def test_a_results_table_killed_mid_write_keeps_the_previous_one(tmp_path, monkeypatch):
    from raydistill.tune.results import TrialRow
    from raydistill.tune.search import _write_csv

    rows = [
        TrialRow(
            f"t{i}", {"lr": 0.1 * i}, [{"val_acc": 0.5, "epochs_done": 1}], "val_acc", "max", 1
        )
        for i in range(3)
    ]
    path = tmp_path / "results.csv"
    _write_csv(rows, path)
    before = path.read_text()
    assert len(list(csv.DictReader(before.splitlines()))) == 3

    def dies_after_one(self, records):
        records = list(records)
        self.writerow(records[0])
        raise DiskFull("No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerows", dies_after_one)
    with pytest.raises(DiskFull):
        _write_csv([*rows, rows[0]], path)
    assert path.read_text() == before


@pytest.mark.parametrize(
    ("reader", "content", "says"),
    [
        (read_json, '[{"epoch": 1, "val_acc": 0.9}, {"epo', "not valid JSON"),
        (read_yaml, "name: x\ntrain: {epochs: 3\n", "not valid YAML"),
    ],
    ids=["json", "yaml"],
)
def test_a_damaged_file_is_one_line_naming_it(tmp_path, reader, content, says):
    path = tmp_path / "history.json"
    path.write_text(content)
    with pytest.raises(JobError, match=says) as err:
        reader(path, "run history")
    assert _one_line(err).startswith(f"run history {path} is damaged")
    with pytest.raises(JobError, match="is missing"):
        reader(tmp_path / "absent.json", "run history")


def test_damaged_search_outputs_read_back_as_one_line(tmp_path):
    from raydistill.tune.record import read_best_job, read_summary

    (tmp_path / "best.yaml").write_text("# tuned\nname: x\ndistill: {temperature: [")
    with pytest.raises(JobError, match=r"tuned job .*best\.yaml is damaged") as err:
        read_best_job(tmp_path / "best.yaml")
    _one_line(err)
    (tmp_path / "summary.json").write_text('{"metric": "val_acc", "tri')
    with pytest.raises(JobError, match=r"search summary .*summary\.json is damaged") as err:
        read_summary(tmp_path)
    _one_line(err)


def test_a_damaged_cache_manifest_is_one_line_naming_it(tmp_path):
    from raydistill.teacher.cache import MANIFEST, read_manifest

    (tmp_path / MANIFEST).write_text('{"format": "raydistill.teacher_cache/1", "ke')
    with pytest.raises(JobError, match="is damaged") as err:
        read_manifest(tmp_path)
    assert str(tmp_path / MANIFEST) in _one_line(err)


def test_text_writes_replace_whole_files(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "summary.md", "| a |\n")
    assert path.read_text() == "| a |\n"
    atomic_write_text(path, "| b |\n")
    assert path.read_text() == "| b |\n"
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.md"]
    assert isinstance(path, Path)

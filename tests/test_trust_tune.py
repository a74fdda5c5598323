"""``tune --resume`` refuses a job that changed since the search started, naming the keys
(issue 25, scenario 4). Ray-free: the record is checked before Ray (or Tune) starts."""

from __future__ import annotations

import copy

import pytest

import raydistill.runtime
from raydistill.config import JobError, load_job
from raydistill.files import read_json
from raydistill.tune import record, search


def _tune_job(write_job, **changes):
    base = {
        "tune": {"space": {"distill.temperature": {"uniform": [1, 8]}}, "num_samples": 2},
        "train.epochs": 3,
        **changes,
    }
    return load_job(write_job(base, name="searched"))


def test_a_resumed_search_whose_job_changed_is_refused_naming_the_keys(write_job, tmp_path):
    job = _tune_job(write_job)
    tune_dir = tmp_path / "tune"
    raw = search._base_job(job)
    written = record.record_search_job(tune_dir, raw)
    assert written.is_file()
    record.check_search_job(tune_dir, raw)  # the same job resumes

    changed = copy.deepcopy(raw)
    changed["train"]["epochs"] = 6
    changed["distill"]["alpha"] = {"kind": "constant", "start": 0.5}
    with pytest.raises(JobError, match="the job changed since the search") as err:
        record.check_search_job(tune_dir, changed)
    text = str(err.value)
    assert "train.epochs" in text and "distill.alpha" in text and "--fresh" in text
    assert "\n" not in text and "distill.temperature" not in text


def test_a_search_without_a_record_resumes_with_a_note(tmp_path):
    lines: list[str] = []
    record.check_search_job(tmp_path, {"name": "x"}, log=lines.append)
    assert any("cannot be checked" in line for line in lines)
    (tmp_path / record.SEARCH_JOB).write_text('{"format": "raydistill.search_job/1", "job')
    with pytest.raises(JobError, match="is damaged"):
        record.check_search_job(tmp_path, {"name": "x"})


def test_run_tune_refuses_the_changed_resume_before_ray_starts(write_job, monkeypatch):
    """Through ``run_tune``: a search started with 3 epochs, resumed with 6, stops before any
    Ray session (the session factory here fails the test if reached)."""
    job = _tune_job(write_job)
    tune_dir = job.run_dir / search.TUNE_DIR
    record.record_search_job(tune_dir, search._base_job(job))

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray started for a resume that must be refused")

    monkeypatch.setattr(raydistill.runtime, "ray_session", no_ray)
    monkeypatch.setattr(search, "_check_resume", lambda tune_dir, resume: None)
    edited = _tune_job(write_job, **{"train.epochs": 6})
    with pytest.raises(JobError, match=r"train\.epochs"):
        search.run_tune(edited, resume=True, log=print)
    # a fresh start records the job it runs with
    monkeypatch.setattr(search, "check_search_job", None)  # not consulted without --resume
    with pytest.raises(AssertionError, match="Ray started"):
        search.run_tune(edited, resume=False, log=print)
    recorded = read_json(tune_dir / record.SEARCH_JOB)
    assert recorded["job"]["train"]["epochs"] == 6
    assert recorded["job_sha256"] == record.job_sha256(search._base_job(edited))

"""A rerun of an edited job never silently reuses or resumes a stage trained with other
settings (Ray-free: the checks run before Ray starts; ``ray_session`` is a tripwire)."""

from __future__ import annotations

import json
import re

import pytest
from tiny_run import build_tiny_run

from raydistill.config import JobError, load_job
from raydistill.data.sources import load_splits
from raydistill.fingerprint import (
    differences,
    record_fingerprint,
    stage_inputs,
    stages_to_retrain,
)
from raydistill.pipeline import prepare_run_dir, run_job


@pytest.fixture
def no_ray(monkeypatch):
    import raydistill.pipeline

    def tripwire(*args, **kwargs):
        raise RuntimeError("reached Ray")

    monkeypatch.setattr(raydistill.pipeline, "ray_session", tripwire)


@pytest.fixture
def trained(tmp_path):
    """A finished tiny run whose stages recorded the fingerprints ``raydistill train`` does."""
    job = build_tiny_run(tmp_path, epochs=1)
    splits = load_splits(job.data)
    teacher = job.run_dir / "teacher" / "model.pt"
    for role in ("teacher", "student", "baseline"):
        record_fingerprint(job.run_dir, role, stage_inputs(job, role, splits, teacher))
    return job, tmp_path / "tiny.yaml"


def test_the_same_job_reuses_its_stages(trained, no_ray):
    _job, path = trained
    # nothing changed: the stages are reused (and only then does the run reach Ray)
    with pytest.raises(RuntimeError, match="reached Ray"):
        run_job(load_job(path), log=lambda _: None)


@pytest.mark.parametrize(
    ("override", "stage", "says"),
    [
        ("train.epochs=6", "student", "train.epochs: 4 -> 6"),
        ("data.split.seed=3", "teacher", "data.split.seed: 0 -> 3"),
        ("distill.alpha=0.3", "student", "distill.alpha.start: 0.9 -> 0.3"),
        ("teacher.args={width: 16}", "teacher", "model.args.width: 12 -> 16"),
    ],
)
def test_an_edited_job_is_refused_naming_the_change(trained, no_ray, override, stage, says):
    job, path = trained
    before = (job.run_dir / "job.yaml").read_text()
    with pytest.raises(JobError) as err:
        run_job(load_job(path, [override]), log=lambda _: None)
    assert re.search(re.escape(f"[{stage}] ") + "[^|]*" + re.escape(says), str(err.value))
    assert "--fresh-stage" in str(err.value) and "--allow-changed" in str(err.value)
    assert (job.run_dir / "job.yaml").read_text() == before  # nothing was written


def test_a_new_split_seed_is_a_new_teacher_too(trained, no_ray):
    """A teacher that saw today's test rows must not be reused: rows change with the seed."""
    job, path = trained
    splits = load_splits(load_job(path, ["data.split.seed=3"]).data)
    old = json.loads((job.run_dir / "teacher" / "fingerprint.json").read_text())
    new = stage_inputs(load_job(path, ["data.split.seed=3"]), "teacher", splits)
    assert any(d.startswith("rows: ") for d in differences(old, new))


def test_allow_changed_and_fresh_stage(trained, no_ray):
    job, path = trained
    lines: list[str] = []
    edited = load_job(path, ["distill.alpha=0.3"])
    with pytest.raises(RuntimeError, match="reached Ray"):
        run_job(edited, log=lines.append, allow_changed=True)
    assert any("--allow-changed: a finished stage is reused" in line for line in lines)
    # the earlier job is kept beside the new one
    assert (job.run_dir / "job.1.yaml").is_file()
    assert "start: 0.3" in (job.run_dir / "job.yaml").read_text()
    # retraining the student keeps the teacher (and its weights)
    with pytest.raises(RuntimeError, match="reached Ray"):
        run_job(edited, log=lines.append, fresh_stages=("student",))
    assert not (job.run_dir / "student").exists()
    assert (job.run_dir / "teacher" / "model.pt").is_file()
    assert stages_to_retrain(["teacher"]) == ["teacher", "student"]
    with pytest.raises(JobError, match="--fresh-stage nope: one of teacher, student, baseline"):
        stages_to_retrain(["nope"])


def test_prepare_run_dir_keeps_every_earlier_job(tmp_path):
    job = build_tiny_run(tmp_path, epochs=1)
    for epochs in (5, 6):
        prepare_run_dir(job.model_copy(update={"seed": epochs}), False, lambda _: None)
    assert sorted(p.name for p in job.run_dir.glob("job*.yaml")) == [
        "job.1.yaml",
        "job.2.yaml",
        "job.yaml",
    ]

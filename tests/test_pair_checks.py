"""The driver's dry forward refuses a teacher/student pair that cannot be distilled."""

from __future__ import annotations

from pathlib import Path

import pytest

from raydistill.config import JobError, load_job
from raydistill.data import load_digits_arrays
from raydistill.models import build_model, save_weights
from raydistill.pipeline import check_pair

QUICKSTART = load_job(Path(__file__).resolve().parents[1] / "jobs" / "digits.yaml")


@pytest.fixture
def teacher_file(tmp_path):
    return save_weights(build_model(QUICKSTART.teacher, 10), tmp_path / "teacher.pt")


def test_matching_pair_gives_feature_shapes(write_job, teacher_file):
    job = load_job(
        write_job({"distill.feature_layers": [{"student": "features.7", "teacher": "features.7"}]})
    )
    student_shapes, teacher_shapes = check_pair(job, teacher_file, load_digits_arrays())
    assert student_shapes == {"features.7": (16, 4, 4)}
    assert teacher_shapes == {"features.7": (64, 4, 4)}


def test_output_shape_mismatch_is_refused(write_job, teacher_file):
    job = load_job(write_job({"student.args": {"width": 8, "num_classes": 5}}))
    with pytest.raises(JobError, match=r"teacher outputs \(1, 10\) but student outputs \(1, 5\)"):
        check_pair(job, teacher_file, load_digits_arrays())


def test_unknown_feature_layer_is_named(write_job, teacher_file):
    job = load_job(write_job({"distill.feature_layers": ["layer4"]}))
    with pytest.raises(JobError, match=r"distill\.feature_layers: .*layer4"):
        check_pair(job, teacher_file, load_digits_arrays())


def test_teacher_checkpoint_of_another_model_is_refused(write_job, tmp_path):
    other = save_weights(build_model(QUICKSTART.student, 10), tmp_path / "other.pt")
    job = load_job(write_job())
    with pytest.raises(JobError, match="does not fit the teacher"):
        check_pair(job, other, load_digits_arrays())


def test_cli_evaluate_scores_a_checkpoint(write_job, teacher_file, tmp_path):
    from click.testing import CliRunner

    from raydistill.cli import main

    job_file = write_job()
    runner = CliRunner()
    ok = runner.invoke(
        main, ["evaluate", str(job_file), "--model", "teacher", "--checkpoint", str(teacher_file)]
    )
    assert ok.exit_code == 0, ok.output
    assert "teacher (teacher.pt, test): accuracy" in ok.output and "65,834 parameters" in ok.output
    missing = runner.invoke(main, ["evaluate", str(job_file)])
    assert missing.exit_code == 2 and "train the job first" in missing.output
    wrong = runner.invoke(main, ["evaluate", str(job_file), "--checkpoint", str(teacher_file)])
    assert wrong.exit_code == 2 and "does not fit" in wrong.output

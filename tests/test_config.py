"""The job schema: good jobs resolve, bad ones fail with the offending key named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from raydistill.cli import main
from raydistill.config import JobError, apply_overrides, load_job

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_job_resolves_with_defaults():
    job = load_job(ROOT / "jobs" / "digits.yaml")
    assert job.name == "digits"
    assert job.teacher.checkpoint is None
    assert job.distill.temperature.kind == "constant" and job.distill.temperature.start == 4.0
    assert job.scaling.teacher_pool.num_cpus == 0.5
    # teacher.train overrides the student's train section key by key
    assert job.teacher_train().lr == 0.003 and job.train.lr == 0.01
    assert job.teacher_train().epochs == 20 and job.teacher_train().batch_size == 32
    assert job.data.labelled_fraction == 0.1
    assert job.run_dir == (Path("runs") / "digits").resolve()


def test_resolved_yaml_round_trips(tmp_path):
    job = load_job(ROOT / "jobs" / "digits.yaml", ["train.epochs=3"])
    path = tmp_path / "resolved.yaml"
    path.write_text(job.to_yaml())
    again = load_job(path)
    assert again == job
    assert again.train.epochs == 3


def test_overrides_parse_values_as_yaml():
    raw = apply_overrides(
        {"train": {"epochs": 1}},
        ["train.epochs=7", "distill.alpha=0.5", "scaling.teacher_pool.resources={teacher: 1}"],
    )
    assert raw["train"]["epochs"] == 7
    assert raw["distill"]["alpha"] == 0.5
    assert raw["scaling"]["teacher_pool"]["resources"] == {"teacher": 1}


def _error_for(write_job, changes) -> str:
    path = write_job(changes)
    with pytest.raises(JobError) as info:
        load_job(path)
    return str(info.value)


def test_unknown_key_is_named_with_a_hint(write_job):
    message = _error_for(write_job, {"train.epohcs": 3})
    assert "train.epohcs: unknown key" in message
    assert "did you mean 'epochs'" in message


def test_wrong_type_is_named(write_job):
    message = _error_for(write_job, {"train.epochs": "many"})
    assert "train.epochs:" in message and "integer" in message


@pytest.mark.parametrize(
    ("key", "value", "why"),
    [
        ("distill.alpha", 1.5, "within [0, 1]"),
        ("distill.temperature", -2.0, "must stay > 0"),
        (
            "distill.temperature",
            {"kind": "step", "start": 2.0, "step": -1.0, "every": 1},
            "must stay > 0",
        ),
        ("train.lr", 0, "greater than 0"),
        ("scaling.workers", 0, "greater than or equal to 1"),
    ],
)
def test_out_of_range_values_are_named(write_job, key, value, why):
    message = _error_for(write_job, {key: value})
    assert f"{key}:" in message
    assert why in message


def test_missing_checkpoint_file_is_named(write_job, tmp_path):
    message = _error_for(write_job, {"teacher.checkpoint": str(tmp_path / "nope.pt")})
    assert "teacher.checkpoint: file not found" in message


def test_missing_required_section(tmp_path):
    path = tmp_path / "j.yaml"
    path.write_text(yaml.safe_dump({"student": {"model": "raydistill.models.zoo:mlp"}}))
    with pytest.raises(JobError, match="teacher: required key is missing"):
        load_job(path)


def test_bad_model_spec(write_job):
    assert "is not a model spec" in _error_for(write_job, {"student.model": "resnet18"})


def test_malformed_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochs: 3\n")
    with pytest.raises(JobError, match="not valid YAML"):
        load_job(path)


def test_cli_validate_prints_resolved_job_and_fails_cleanly(write_job):
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(write_job()), "--set", "train.epochs=3"])
    assert ok.exit_code == 0, ok.output
    assert yaml.safe_load(ok.stdout)["train"]["epochs"] == 3
    bad = runner.invoke(main, ["validate", str(write_job()), "--set", "distill.alpha=2"])
    assert bad.exit_code == 2
    assert "distill.alpha" in bad.output and "Traceback" not in bad.output


def _sections(model: type, seen: set[type]) -> None:
    """Every pydantic model reachable from ``model`` through its fields' annotations."""
    import typing

    from pydantic import BaseModel

    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        todo = [field.annotation]
        while todo:
            annotation = todo.pop()
            todo.extend(typing.get_args(annotation))
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                _sections(annotation, seen)


def test_every_schema_field_has_a_description():
    # The job reference in the docs is generated from these descriptions.
    from raydistill.config import JobConfig

    seen: set[type] = set()
    _sections(JobConfig, seen)
    ours = [m for m in seen if m.__module__.startswith(("raydistill.config", "raydistill.distill"))]
    assert len(ours) >= 20  # the walk reached the nested sections
    missing = [
        f"{model.__name__}.{name}"
        for model in ours
        for name, field in model.model_fields.items()
        if not field.description
    ]
    assert missing == []


def test_public_names_stay_importable_from_the_package():
    import raydistill.config as config

    for name in config.__all__:
        assert getattr(config, name).__module__.startswith("raydistill.config"), name
    # one small module per part of the job
    sizes = {
        p.name: len(p.read_text().splitlines()) for p in Path(config.__file__).parent.glob("*.py")
    }
    assert len(sizes) >= 10 and max(sizes.values()) <= 250, sizes

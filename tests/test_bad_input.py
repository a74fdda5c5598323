"""Bad input is refused by the CLI: exit code 2, one line naming the file, key or row, and no run
directory that could pass for a finished one (issue #8, item 5).

Every case writes a small job (the quickstart with one thing broken) into ``tmp_path`` and runs
``raydistill validate`` or, where only reading the data or the weights can tell, ``raydistill
train``. The train cases must fail before Ray starts: ``ray_session`` is replaced by a tripwire,
so they stay Ray-free and fast. Only the NaN-loss case trains (on the session's Ray; slow).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner, Result

from raydistill.cli import main
from raydistill.config import ModelSpec
from raydistill.data import load_digits_arrays
from raydistill.models import build_model, save_weights

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
TEACHER = ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 32})
STUDENT = ModelSpec(model="raydistill.models.zoo:digits_cnn", args={"width": 8})


# ---------------------------------------------------------------- writing broken inputs


def _job(tmp_path: Path, changes: dict | None = None, name: str = "job") -> Path:
    """The quickstart job with dotted-key ``changes``, its runs under ``tmp_path/runs``."""
    raw = json.loads(json.dumps(QUICKSTART))
    raw["name"] = name
    raw["output"] = {"storage_path": str(tmp_path / "runs")}
    for key, value in (changes or {}).items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _text(content: str) -> Callable[[Path], Path]:
    def write(tmp_path: Path) -> Path:
        path = tmp_path / "job.yaml"
        path.write_text(content)
        return path

    return write


def _changed(changes: dict) -> Callable[[Path], Path]:
    return lambda tmp_path: _job(tmp_path, changes)


def _npz(tmp_path: Path, inputs: np.ndarray, labels: np.ndarray, **changes) -> Path:
    np.savez(tmp_path / "data.npz", inputs=inputs, labels=labels)
    return _job(
        tmp_path,
        {"data.source": "npz", "data.path": str(tmp_path / "data.npz"), **changes},
    )


def _digits(rows: int = 200) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits_arrays()
    return d.inputs[:rows].copy(), d.labels[:rows].copy()


def _label_out_of_range(tmp_path: Path) -> Path:
    inputs, labels = _digits()
    labels[17] = 12
    return _npz(tmp_path, inputs, labels, **{"data.num_classes": 10})


def _stray_label_in_parquet(tmp_path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    inputs, labels = _digits()
    labels[17] = 42  # among labels 0-9, and no data.num_classes to refuse it
    table = pa.table({"input": [row.ravel().tolist() for row in inputs], "label": labels.tolist()})
    pq.write_table(table, tmp_path / "data.parquet")
    return _job(tmp_path, {"data.source": "parquet", "data.path": str(tmp_path / "data.parquet")})


def _coco_job(tmp_path: Path) -> Path:
    from raydistill.detection.synthetic import write_shapes_coco

    data = write_shapes_coco(tmp_path / "data", train=2, val=1, size=32)
    raw = yaml.safe_load((ROOT / "jobs" / "shapes.yaml").read_text())
    raw["data"]["coco"]["train"] = {
        "images": str(tmp_path / "nope"),
        "annotations": str(data["train"][1]),
    }
    raw["data"]["coco"]["val"] = {"images": str(data["val"][0]), "annotations": str(data["val"][1])}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _nan_input(tmp_path: Path) -> Path:
    inputs, labels = _digits()
    inputs[23, 0, 4, 4] = np.nan
    return _npz(tmp_path, inputs, labels)


def _garbage_npz(tmp_path: Path) -> Path:
    path = _npz(tmp_path, *_digits())
    (tmp_path / "data.npz").write_bytes(b"PK\x03\x04 this zip ends here")
    return path


def _corrupt_image(tmp_path: Path) -> Path:
    from PIL import Image

    d = load_digits_arrays()
    for label in (0, 1):
        folder = tmp_path / "images" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in np.flatnonzero(d.labels == label)[:6]:
            Image.fromarray((d.inputs[i, 0] * 255).astype(np.uint8)).save(folder / f"{i}.png")
    (tmp_path / "images" / "class_1" / "broken.png").write_bytes(b"\x89PNG not really")
    return _job(
        tmp_path,
        {"data.source": "image_folder", "data.path": str(tmp_path / "images"), "data.channels": 1},
    )


def _weights(tmp_path: Path, spec: ModelSpec, name: str, num_classes: int = 10) -> str:
    return str(save_weights(build_model(spec, num_classes, load=False), tmp_path / name))


def _shape_mismatch(tmp_path: Path) -> Path:
    changes = {
        "teacher.checkpoint": _weights(tmp_path, TEACHER, "teacher.pt"),
        "student.args": {"width": 8, "num_classes": 5},
    }
    return _job(tmp_path, changes)


def _teacher_checkpoint_of_the_student(tmp_path: Path) -> Path:
    return _job(tmp_path, {"teacher.checkpoint": _weights(tmp_path, STUDENT, "student.pt")})


def _student_checkpoint_of_another_model(tmp_path: Path) -> Path:
    mlp = ModelSpec(model="raydistill.models.zoo:mlp")
    changes = {"student.checkpoint": _weights(tmp_path, mlp, "mlp.pt"), "distill.enabled": False}
    return _job(tmp_path, changes)


def _checkpoint_not_torch(tmp_path: Path) -> Path:
    (tmp_path / "teacher.pt").write_bytes(b"\x00 not a checkpoint")
    return _job(tmp_path, {"teacher.checkpoint": str(tmp_path / "teacher.pt")})


# ---------------------------------------------------------------- the table

# (id, command, writer, extra CLI args, what the one line must say; {dir} is tmp_path)
CASES = [
    (
        "malformed-yaml",
        "validate",
        _text("name: x\ntrain: {epochs: 3\n"),
        [],
        ["{dir}/job.yaml: not valid YAML: line 3, column 1:", "expected ',' or '}'"],
    ),
    (
        "tab-indented-yaml",
        "validate",
        _text("name: x\ntrain:\n\tepochs: 3\n"),
        [],
        ["{dir}/job.yaml: not valid YAML: line 3, column 1"],
    ),
    (
        "not-a-mapping",
        "validate",
        _text("- train\n- epochs\n"),
        [],
        ["{dir}/job.yaml: a job is a mapping of sections, got list"],
    ),
    (
        "missing-job-file",
        "validate",
        lambda tmp_path: tmp_path / "nope.yaml",
        [],
        ["{dir}/nope.yaml: job file not found"],
    ),
    (
        "unknown-key",
        "validate",
        _changed({"train.epohcs": 3}),
        [],
        ["{dir}/job.yaml: train.epohcs: unknown key (did you mean 'epochs'?)"],
    ),
    (
        "unknown-section",
        "validate",
        _changed({"trainer": {"epochs": 3}}),
        [],
        ["trainer: unknown key (did you mean 'train'?)"],
    ),
    (
        "wrong-type",
        "validate",
        _changed({"train.epochs": "many"}),
        [],
        ["train.epochs: Input should be a valid integer", "(got 'many')"],
    ),
    (
        "wrong-type-section",
        "validate",
        _changed({"teacher": "resnet18"}),
        [],
        ["teacher: Input should be a valid dictionary"],
    ),
    (
        "negative-temperature",
        "validate",
        _changed({"distill.temperature": -1.0}),
        [],
        ["distill.temperature: must stay > 0, reaches -1"],
    ),
    (
        "alpha-above-one",
        "validate",
        _changed({"distill.alpha": 1.5}),
        [],
        ["distill.alpha: must stay within [0, 1], reaches 1.5"],
    ),
    (
        "alpha-below-zero",
        "validate",
        _changed({"distill.alpha": {"kind": "linear", "start": 0.5, "end": -0.2}}),
        [],
        ["distill.alpha: must stay within [0, 1], reaches -0.2"],
    ),
    (
        "alpha-override",
        "validate",
        _changed({}),
        ["--set", "distill.alpha=2"],
        ["distill.alpha: must stay within [0, 1], reaches 2"],
    ),
    (
        "override-not-yaml",
        "validate",
        _changed({}),
        ["--set", "train.epochs=[3"],
        ["override 'train.epochs=[3': value is not valid YAML (line 1"],
    ),
    (
        "missing-data-path",
        "validate",
        _changed({"data.source": "npz", "data.path": "/nonexistent/digits.npz"}),
        [],
        ["data.path: not found: /nonexistent/digits.npz"],
    ),
    (
        "source-without-path",
        "validate",
        _changed({"data.source": "parquet"}),
        [],
        ["data.path: source 'parquet' needs a path"],
    ),
    (
        "missing-checkpoint",
        "validate",
        _changed({"teacher.checkpoint": "/nonexistent/teacher.pt"}),
        [],
        ["teacher.checkpoint: file not found: /nonexistent/teacher.pt"],
    ),
    (
        "label-outside-num-classes",
        "train",
        _label_out_of_range,
        [],
        ["{dir}/data.npz", "row 17: label 12 is outside num_classes=10"],
    ),
    (
        "stray-label-in-parquet",
        "train",
        _stray_label_in_parquet,
        [],
        ["data: label 42 has 1 row(s) (row 17 of {dir}/data.parquet)", "labels have that (0-9)"],
    ),
    (
        "missing-coco-folder",
        "validate",
        lambda tmp_path: _coco_job(tmp_path),
        [],
        ["data.coco.train.images: not found (got '{dir}/nope')"],
    ),
    (
        "missing-raydistill-factory",
        "validate",
        _changed({"student.model": "raydistill.models.zoo:digits_cnnn"}),
        [],
        ["student.model: model 'raydistill.models.zoo:digits_cnnn': 'raydistill.models.zoo' has"],
    ),
    ("nan-input", "train", _nan_input, [], ["{dir}/data.npz", "row 23: input holds NaN"]),
    ("corrupt-npz", "train", _garbage_npz, [], ["data.path: cannot read {dir}/data.npz as .npz"]),
    (
        "corrupt-image",
        "train",
        _corrupt_image,
        [],
        ["data: cannot read image {dir}/images/class_1/broken.png"],
    ),
    (
        "output-shape-mismatch",
        "train",
        _shape_mismatch,
        [],
        ["teacher outputs (1, 10) but student outputs (1, 5)"],
    ),
    (
        "teacher-checkpoint-of-another-model",
        "train",
        _teacher_checkpoint_of_the_student,
        [],
        ["{dir}/student.pt does not fit the teacher", "shape mismatch"],
    ),
    (
        "student-checkpoint-of-another-model",
        "train",
        _student_checkpoint_of_another_model,
        [],
        ["{dir}/mlp.pt does not fit raydistill.models.zoo:digits_cnn", "missing"],
    ),
    (
        "checkpoint-not-torch",
        "train",
        _checkpoint_not_torch,
        [],
        ["checkpoint {dir}/teacher.pt cannot be read safely"],
    ),
]


def _one_error_line(result: Result) -> str:
    """The CLI's stderr, checked to be exactly one ``error:`` line and no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.output
    return lines[0]


def _no_finished_run(runs: Path) -> None:
    """Nothing under ``runs`` could pass for a finished run or stage."""
    finished = [
        p
        for pattern in ("*/metrics.json", "*/summary.md", "*/*/model.pt", "*/teacher_cache/*")
        for p in runs.glob(pattern)
    ]
    assert finished == [], finished


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if a command gets as far as starting or joining Ray."""
    import raydistill.pipeline

    def tripwire(*args, **kwargs):
        raise AssertionError("bad input reached ray_session: it should be refused before Ray")

    monkeypatch.setattr(raydistill.pipeline, "ray_session", tripwire)


@pytest.mark.parametrize(
    ("command", "write", "args", "says"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_one_clear_line_and_leaves_no_run(
    tmp_path, no_ray, command, write, args, says
):
    job_file = write(tmp_path)
    result = CliRunner().invoke(main, [command, str(job_file), *args])
    line = _one_error_line(result)
    for part in says:
        assert part.replace("{dir}", str(tmp_path)) in line, line
    # refused before anything was written: not even the run directory exists
    assert not (tmp_path / "runs").exists(), list((tmp_path / "runs").rglob("*"))


def test_every_problem_gets_its_own_line(tmp_path):
    """Several mistakes in one file: one line each, every one naming the file and its key."""
    job_file = _job(tmp_path, {"train.epohcs": 3, "distill.feature_weight": -1, "seed": "x"})
    result = CliRunner().invoke(main, ["validate", str(job_file)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3, lines
    keys = ["train.epohcs", "distill.feature_weight", "seed"]
    for key in keys:
        assert sum(f"{job_file}: {key}: " in line for line in lines) == 1, (key, lines)


# ---------------------------------------------------------------- a loss that goes NaN


@pytest.mark.slow
def test_nan_loss_stops_naming_the_step_and_batch(ray_address, tmp_path):
    """A learning rate of 1e30 overflows the weights within a few steps: the run stops with
    one line naming the stage, epoch, step and batch rows, and leaves no finished stage."""
    job_file = _job(
        tmp_path,
        {
            "train.lr": 1e30,
            "train.grad_clip": None,
            "train.epochs": 2,
            "scaling.workers": 1,
            "output.report": False,
        },
        name="nan",
    )
    result = CliRunner().invoke(main, ["train", str(job_file), "--baseline"])
    assert result.exit_code == 2, (result.output, result.exception)
    # Ray forwards its workers' logs (their tracebacks included) to the driver's stderr; the
    # driver's own verdict is one line, the last.
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.strip().splitlines()[-1] == errors[0], errors
    line = errors[0]
    assert re.search(r"\[baseline\] loss is (nan|inf|-inf) at epoch 0 step \d+ ", line), line
    assert re.search(r"batch rows \[\d+(, \d+)*\]", line), line
    assert "lower train.lr" in line
    stage = tmp_path / "runs" / "nan" / "baseline"
    assert not (stage / "model.pt").exists()
    _no_finished_run(tmp_path / "runs")

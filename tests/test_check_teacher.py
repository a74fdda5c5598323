"""raydistill check-teacher: headroom over the student target, inference cost, feature layers."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner

from raydistill.check import HEADROOM, check_teacher, required_teacher_accuracy
from raydistill.cli import main
from raydistill.config import load_job
from raydistill.data.sources import load_splits
from raydistill.models import build_model, load_weights


def _headroom(warnings: list[str]) -> list[str]:
    """The headroom warnings (the cost rule depends on timings of a possibly busy machine)."""
    return [w for w in warnings if "headroom" in w]


def _job(tiny_run, *overrides: str):
    return load_job(tiny_run.run_dir / "job.yaml", list(overrides))


def _teacher_val_accuracy(tiny_run) -> float:
    model = build_model(tiny_run.teacher, 10, load=False)
    load_weights(model, tiny_run.run_dir / "teacher" / "model.pt")
    val = load_splits(tiny_run.data)["val"]
    with torch.no_grad():
        predicted = model.eval()(torch.from_numpy(val.inputs.copy())).argmax(-1).numpy()
    return float((predicted == val.labels).mean())


def test_required_accuracy_leaves_a_fifth_fewer_errors():
    assert required_teacher_accuracy(0.95) == pytest.approx(1 - 0.05 / 1.2)
    assert required_teacher_accuracy(0.5) == pytest.approx(0.5 + 0.5 * (1 - 1 / 1.2))
    assert required_teacher_accuracy(1.0) == 1.0
    with pytest.raises(ValueError, match="target accuracy"):
        required_teacher_accuracy(1.5)


def test_teacher_accuracy_against_the_student_target(tiny_run):
    acc = _teacher_val_accuracy(tiny_run)
    assert 0.2 < acc < 1  # trained 3 epochs: some errors left to compare
    error = 1 - acc
    easy = 1 - error * HEADROOM * 1.05  # needs a teacher with 5% more errors than this one
    hard = 1 - error * HEADROOM * 0.9  # needs 10% fewer errors than this one makes

    ok = check_teacher(_job(tiny_run, f"student.target={easy}"))
    assert ok.teacher_accuracy == pytest.approx(acc) and ok.split == "val"
    assert ok.required_accuracy == pytest.approx(1 - error * 1.05)
    assert _headroom(ok.warnings) == [] and ok.problems == []

    low = check_teacher(_job(tiny_run, f"student.target={hard}"))
    (warning,) = _headroom(low.warnings)
    assert f"{100 * acc:.2f}%" in warning

    unset = check_teacher(_job(tiny_run))
    assert unset.target is None and _headroom(unset.warnings) == []
    assert any("set student.target" in line for line in unset.lines())


def test_a_slow_teacher_is_flagged_with_the_cache_and_more_actors(tiny_run, tmp_path):
    """Costs are measured before any training: this teacher has no weights yet."""
    fresh = [f"output.storage_path={tmp_path}", "student.args.width=2"]
    slow = check_teacher(_job(tiny_run, *fresh, "teacher.args.width=96"))
    assert slow.teacher_accuracy is None
    assert any("has no weights yet" in line for line in slow.lines())
    assert slow.slowdown > 5
    (warning,) = slow.warnings
    assert "teacher_pass: cache" in warning and "scaling.teacher_pool.max_actors, now 1" in warning
    splits = load_splits(tiny_run.data)
    assert slow.pass_rows == len(splits["train"]) + len(splits["val"])
    assert slow.pass_seconds == pytest.approx(slow.pass_rows / slow.teacher_throughput)

    # a teacher smaller than the student (width 1 vs 2) is never flagged
    cheap = check_teacher(_job(tiny_run, *fresh, "teacher.args.width=1"))
    assert cheap.slowdown < 5 and cheap.warnings == []


def test_feature_layers_show_shapes_and_the_adapter_training_builds(tiny_run):
    conv = check_teacher(_job(tiny_run, "distill.feature_layers=[features.7]"))
    (pair,) = conv.features
    # student width 4 and teacher width 12: the last block has 8 and 24 channels on a 4x4 map
    assert (pair.student_shape, pair.teacher_shape) == ((8, 4, 4), (24, 4, 4))
    assert pair.adapter.startswith("ConvAdapter(channels 8->24")
    assert pair.adapter_parameters == 8 * 24 + 24

    pooled = check_teacher(
        _job(tiny_run, "distill.feature_layers=[{student: features.7, teacher: head.2}]")
    )
    assert pooled.features[0].adapter.startswith("PoolLinearAdapter")
    assert pooled.features[0].adapter_parameters == 8 * 10 + 10


def test_pairs_that_cannot_be_distilled_are_errors(tiny_run):
    unknown = check_teacher(_job(tiny_run, "distill.feature_layers=[layer4]"))
    assert unknown.features == [] and "no submodule named 'layer4'" in unknown.problems[0]

    no_adapter = check_teacher(
        _job(tiny_run, "distill.feature_layers=[{student: head.2, teacher: features.7}]")
    )
    assert no_adapter.features[0].adapter is None
    assert "no adapter maps" in no_adapter.problems[0]


def test_cli_lines_and_exit_codes(tiny_run):
    runner = CliRunner()
    job_file = str(tiny_run.run_dir / "job.yaml")
    ok = runner.invoke(main, ["check-teacher", job_file, "--set", "student.target=0.1"])
    assert ok.exit_code == 0, ok.output
    assert "accuracy (val): teacher" in ok.output and "samples/s at batch 64" in ok.output
    assert "): ok" in ok.output and "headroom" not in ok.output

    strict = ["check-teacher", job_file, "--set", "student.target=0.999", "--strict"]
    warned = runner.invoke(main, strict)
    assert warned.exit_code == 1 and "warning: the teacher" in warned.output
    assert runner.invoke(main, strict[:-1]).exit_code == 0

    bad = runner.invoke(main, ["check-teacher", job_file, "--set", "distill.feature_layers=[x]"])
    assert bad.exit_code == 2 and "error: distill.feature_layers" in bad.output
    split = runner.invoke(main, ["check-teacher", job_file, "--split", "dev"])
    assert split.exit_code == 2 and "unknown split 'dev'" in split.output

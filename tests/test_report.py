"""raydistill report: the files, the numbers in the table, the plots, and tune results."""

from __future__ import annotations

import base64
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from raydistill.cli import main
from raydistill.config import TuneConfig
from raydistill.data.sources import load_splits
from raydistill.models import build_model, load_weights
from raydistill.pipeline import summarize_run
from raydistill.report import human_bytes, write_report

PNG = b"\x89PNG\r\n\x1a\n"
ROLES = {
    "teacher": "teacher",
    "student": "student (distilled)",
    "baseline": "baseline (student alone)",
}


def _row(markdown: str, first_cell: str, section: str = "") -> list[str]:
    """The cells of the first table row starting with ``first_cell`` after ``section``."""
    text = markdown.split(section, 1)[1] if section else markdown
    line = next(x for x in text.splitlines() if x.startswith(f"| {first_cell} |"))
    return [c.strip() for c in line.strip("|").split("|")]


@pytest.fixture(scope="module")
def report(tiny_run):
    """The tiny run's report, written once for the tests that only read it."""
    return write_report(tiny_run.run_dir)


def _predictions(job, run_dir, role, logits=False):
    """Test predictions of a stage (or its logits), computed here without raydistill's scoring
    code."""
    spec = job.teacher if role == "teacher" else job.student
    model = load_weights(build_model(spec, 10, load=False), run_dir / role / "model.pt").eval()
    test = load_splits(job.data)["test"]
    with torch.no_grad():
        out = model(torch.from_numpy(test.inputs.copy()))
    return model, out if logits else out.argmax(-1).numpy(), test.labels


def test_report_table_and_per_class_match_independent_scores(tiny_run, report, tmp_path):
    run_dir, files = tiny_run.run_dir, report
    assert files.markdown == run_dir / "report.md" and files.html == run_dir / "report.html"
    md = files.markdown.read_text()

    acc = {}
    for role, name in ROLES.items():
        model, predicted, labels = _predictions(tiny_run, run_dir, role)
        acc[role] = (predicted == labels).mean()
        torch.save(model.state_dict(), tmp_path / f"{role}.pt")
        cells = _row(md, name)
        assert cells[1] == f"{100 * acc[role]:.2f}%"
        assert cells[2] == f"{100 * (acc[role] - acc['teacher']):+.2f}"
        assert cells[3] == f"{sum(p.numel() for p in model.parameters()):,}"
        number, unit = cells[4].split()
        shown = float(number) * {"B": 1, "KiB": 1024, "MiB": 1024**2}[unit]
        # the archive's inner names (from the file name) shift the size by a few bytes
        assert shown == pytest.approx((tmp_path / f"{role}.pt").stat().st_size, rel=0.02)
        assert cells[-1] == "3"  # epochs
        if role == "teacher":
            per_class = [
                (predicted[labels == c] == c).mean() for c in range(10)
            ]  # the per-class table's teacher column
            for c in range(10):
                cells = _row(md, str(c), "## Per-class")
                assert cells[1] == f"{100 * per_class[c]:.1f}%"
    assert _row(md, "teacher")[7:9] == ["1.00x", "1.00x"]  # speedups over itself
    student = _row(md, ROLES["student"])
    assert float(student[7].rstrip("x")) > 0 and student[6].endswith("/s")
    bought = 100 * (acc["student"] - acc["baseline"])
    assert f"distillation bought {bought:+.2f} points" in md
    assert "name: tiny" in md and "kind: linear" in md  # the resolved job


def test_calibration_table_matches_torchmetrics_on_the_models_logits(tiny_run, report):
    from torchmetrics.functional.classification import multiclass_calibration_error

    md = report.markdown.read_text()
    for role, name in ROLES.items():
        _, logits, labels = _predictions(tiny_run, tiny_run.run_dir, role, logits=True)
        ece = multiclass_calibration_error(
            logits.softmax(-1), torch.from_numpy(labels), 10, n_bins=15, norm="l1"
        )
        cells = _row(md, name, "## Calibration")
        assert cells[1] == f"{100 * float(ece):.2f}%"
        assert cells[3] == _row(md, name)[1]  # the accuracy the comparison table shows


@pytest.mark.parametrize("role", ["student", "teacher"])
def test_cli_evaluate_prints_ece_beside_accuracy(tiny_run, role):
    from torchmetrics.functional.classification import multiclass_calibration_error

    _, logits, labels = _predictions(tiny_run, tiny_run.run_dir, role, logits=True)
    targets = torch.from_numpy(labels)
    ece = multiclass_calibration_error(logits.softmax(-1), targets, 10, n_bins=15, norm="l1")
    accuracy = (logits.argmax(-1) == targets).double().mean()
    job_file = str(tiny_run.run_dir / "job.yaml")
    out = CliRunner().invoke(main, ["evaluate", job_file, "--model", role])
    assert out.exit_code == 0, out.output
    assert out.output.startswith(
        f"{role} (model.pt, test): accuracy {100 * float(accuracy):.2f}%, "
        f"ECE {100 * float(ece):.2f}% (15 bins), "
    ), out.output


def test_schedules_as_they_ran(report):
    md = report.markdown.read_text()
    # linear temperature 6 -> 2 over 3 epochs; alpha 0.9 stepping -0.2 every 2 epochs
    section = "## Temperature"
    assert [_row(md, str(e), section)[1:3] for e in (1, 2, 3)] == [
        ["6.000", "0.900"],
        ["4.000", "0.900"],
        ["2.000", "0.700"],
    ]


def test_plots_are_pngs_linked_from_markdown_and_embedded_in_html(report):
    files = report
    names = sorted(p.name for p in files.plots)
    assert names == ["curves.png", "per_class.png", "reliability.png", "schedules.png"]
    md, page = files.markdown.read_text(), files.html.read_text()
    for plot in files.plots:
        data = plot.read_bytes()
        assert data.startswith(PNG) and len(data) > 5000
        assert f"](report/{plot.name})" in md
        assert base64.b64encode(data).decode() in page  # self-contained: the bytes themselves
    assert page.count("data:image/png;base64,") == 4 and 'src="report/' not in page
    assert "<td>student (distilled)</td>" in page and "<pre>name: tiny" in page


def test_a_baseline_only_run_has_no_teacher_columns(tiny_run, tmp_path):
    run_dir = tmp_path / "alone"
    shutil.copytree(tiny_run.run_dir / "baseline", run_dir / "baseline")
    shutil.copy(tiny_run.run_dir / "job.yaml", run_dir / "job.yaml")
    files = write_report(run_dir)
    md = files.markdown.read_text()
    cells = _row(md, ROLES["baseline"])
    assert cells[2] == "-" and cells[7] == "-"
    assert "| teacher |" not in md and "Temperature and alpha" not in md
    assert sorted(p.name for p in files.plots) == ["curves.png", "per_class.png", "reliability.png"]


def test_tune_results_join_the_report(tiny_run, tmp_path):
    """The search table and the plots raydistill tune draws are included (given the tune/
    folder too)."""
    from raydistill.tune.results import TrialRow, results_markdown, write_plots
    from raydistill.tune.trial import TrialContext

    run_dir = tmp_path / "searched"
    shutil.copytree(tiny_run.run_dir, run_dir, ignore=shutil.ignore_patterns("report*", "export"))
    tune_dir = run_dir / "tune"
    tune_dir.mkdir()
    settings = TuneConfig(space={"temperature.start": "uniform(1, 10)"})
    context = TrialContext(
        tiny_run.model_dump(mode="json"), str(run_dir / "teacher" / "model.pt"), str(tune_dir),
        settings,
    )  # fmt: skip
    rows = [
        TrialRow(
            f"trial_{i}",
            {"distill.temperature.start": t},
            [{"val_acc": a, "temperature": t, "epochs_done": e + 1} for e, a in enumerate(accs)],
            "val_acc",
            "max",
            3,
        )
        for i, (t, accs) in enumerate([(2.0, [0.5, 0.7, 0.8]), (8.0, [0.4, 0.45])])
    ]
    (tune_dir / "results.md").write_text(results_markdown(rows, "val_acc", "max") + "\n")
    write_plots(rows, context.alpha_of, tune_dir, "val_acc")

    # the tune folder leads to its run directory; the table is the one just scored
    files = write_report(tune_dir, summarize_run(tiny_run.run_dir)[1])
    assert files.markdown == run_dir / "report.md"
    md = files.markdown.read_text()
    assert "## Hyperparameter search" in md
    assert _row(md, "trial_0")[-3:] == ["0.8000", "3", "finished"]
    assert _row(md, "trial_1")[-1] == "stopped early"
    assert "](tune/search.png)" in md and "](tune/curves.png)" in md
    assert files.html.read_text().count("data:image/png;base64,") == 6


def test_cli_report_and_a_directory_that_is_no_run(tiny_run, tmp_path):
    runner = CliRunner()
    ok = runner.invoke(main, ["report", str(tiny_run.run_dir)])
    assert ok.exit_code == 0, ok.output
    assert str(tiny_run.run_dir / "report.html") in ok.output and "4 plots" in ok.output
    bad = runner.invoke(main, ["report", str(tmp_path)])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


def test_human_bytes():
    assert [human_bytes(n) for n in (512, 1536, 5 * 1024**2)] == ["512 B", "1.5 KiB", "5.0 MiB"]


@pytest.mark.parametrize("classes", [np.array([0, 0, 1, 2]), np.array([2, 2, 2, 2])])
def test_per_class_accuracy_counts_within_each_true_class(classes):
    from raydistill.evaluate import per_class_accuracy

    predicted = np.array([0, 1, 1, 2])
    got = per_class_accuracy(predicted, classes, 4)
    for c in range(4):
        members = classes == c
        if members.any():
            assert got[c] == pytest.approx((predicted[members] == c).mean())
        else:
            assert np.isnan(got[c])

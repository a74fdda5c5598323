"""Scoring a classifier on a split (torchmetrics), Ray-free: top-1 and per-class accuracy equal a
direct count, the expected calibration error of hand-worked examples, the reliability bins, and
the report's calibration section for scores built in memory."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from raydistill.data.arrays import LabelledArrays
from raydistill.evaluate import ECE_BINS, ClassificationMetrics, ModelScore, metrics_on, score
from raydistill.report import write_report
from raydistill.results import RunSummary
from raydistill.tasks.summary import STAGE_NAMES


def _identity(classes: int) -> nn.Linear:
    """A model whose logits are its inputs [N, classes]."""
    model = nn.Linear(classes, classes)
    with torch.no_grad():
        model.weight.copy_(torch.eye(classes))
        model.bias.zero_()
    return model


def _logits_with_confidence(confidence: float, predicted: int, classes: int = 2) -> list[float]:
    """Logits whose softmax gives ``predicted`` probability ``confidence`` and shares the rest
    equally among the other classes."""
    rest = (1 - confidence) / (classes - 1)
    return [math.log(confidence if c == predicted else rest) for c in range(classes)]


def _metrics(logits: list[list[float]], labels: list[int]) -> ClassificationMetrics:
    metrics = ClassificationMetrics(len(logits[0]))
    metrics.update(torch.tensor(logits), torch.tensor(labels))
    return metrics


def test_accuracy_and_per_class_equal_a_direct_count_over_batches():
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal((1003, 6))).astype(np.float32)
    logits[:40, 1:3] = 20.0  # tied top-1: the first class wins, as it did before torchmetrics
    labels = rng.integers(0, 5, 1003)  # class 5 never a label
    data = LabelledArrays(logits, labels, 6)
    # three batches of a streamed split, one empty
    parts = [
        LabelledArrays(logits[:500], labels[:500], 6),
        LabelledArrays(logits[:0], labels[:0], 6),
        LabelledArrays(logits[500:], labels[500:], 6),
    ]
    got = score("m", _identity(6), iter(parts))

    predicted = torch.from_numpy(logits).argmax(-1).numpy()
    correct = predicted == labels
    assert got.accuracy == correct.sum() / len(labels)  # identical, not approximately
    for c in range(5):
        assert got.per_class[c] == pytest.approx(correct[labels == c].mean(), abs=1e-12)
    assert math.isnan(got.per_class[5]) and len(got.per_class) == 6
    whole = metrics_on(_identity(6), [data])
    assert whole is not None and whole.accuracy() == got.accuracy


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        # one bin at 75% confidence, 3 of 4 right: perfectly calibrated
        ([(0.75, 0, 0), (0.75, 0, 0), (0.75, 0, 0), (0.75, 0, 1)], 0.0),
        # 99% confident, 3 of 4 right: |0.75 - 0.99|
        ([(0.99, 1, 1), (0.99, 1, 1), (0.99, 1, 1), (0.99, 1, 0)], 0.24),
        # two bins, half the rows each: 0.5 * |0.5 - 0.6| + 0.5 * |1.0 - 0.9|
        ([(0.6, 0, 0), (0.6, 0, 1), (0.9, 1, 1), (0.9, 0, 0)], 0.1),
    ],
)
def test_ece_of_hand_worked_examples(rows, expected):
    metrics = _metrics(
        [_logits_with_confidence(conf, pred) for conf, pred, _ in rows], [y for *_, y in rows]
    )
    assert metrics.ece() == pytest.approx(expected, abs=1e-6)


def test_overconfident_logits_have_the_larger_ece():
    rng = np.random.default_rng(1)
    logits = torch.from_numpy(rng.standard_normal((2000, 4)).astype(np.float32))
    # labels drawn from the softmax itself: calibrated by construction
    labels = torch.multinomial(logits.softmax(-1), 1, generator=torch.Generator().manual_seed(1))
    calibrated = ClassificationMetrics(4)
    calibrated.update(logits, labels[:, 0])
    overconfident = ClassificationMetrics(4)
    overconfident.update(5 * logits, labels[:, 0])  # same predictions, sharper confidence
    assert calibrated.accuracy() == overconfident.accuracy()
    assert calibrated.ece() < 0.05 < 0.2 < overconfident.ece()


def test_reliability_bins_agree_with_the_ece_and_the_rows():
    rng = np.random.default_rng(2)
    logits = torch.from_numpy((2 * rng.standard_normal((800, 5))).astype(np.float32))
    labels = torch.from_numpy(rng.integers(0, 5, 800))
    metrics = ClassificationMetrics(5)
    for i in range(0, 800, 300):
        metrics.update(logits[i : i + 300], labels[i : i + 300])
    bins = metrics.reliability()
    assert len(bins) == ECE_BINS and sum(n for n, _, _ in bins) == 800
    confidence = logits.softmax(-1).max(-1).values.double()
    for b, (n, conf, acc) in enumerate(bins):
        inside = (confidence >= b / ECE_BINS) & (confidence < (b + 1) / ECE_BINS)
        assert n == int(inside.sum())
        if n:
            assert conf == pytest.approx(float(confidence[inside].mean()), abs=1e-6)
            assert b / ECE_BINS <= conf < (b + 1) / ECE_BINS
            assert 0 <= acc <= 1
    # no confidence of exactly 1.0 here, so these are torchmetrics' bins
    from_bins = sum(n / 800 * abs(acc - conf) for n, conf, acc in bins)
    assert from_bins == pytest.approx(metrics.ece(), abs=1e-5)


def test_score_carries_calibration_into_the_metrics_file_row():
    logits = np.array([_logits_with_confidence(0.9, i % 2) for i in range(10)], np.float32)
    labels = np.array([i % 2 if i < 5 else 1 - i % 2 for i in range(10)])  # half right
    got = score("m", _identity(2), LabelledArrays(logits, labels, 2))
    assert got.accuracy == 0.5
    assert got.ece == pytest.approx(0.4, abs=1e-6)
    assert got.mean_confidence == pytest.approx(0.9, abs=1e-6)
    row = json.loads(json.dumps(got.as_dict()))
    assert row["ece"] == got.ece
    assert [b["rows"] for b in row["reliability"]] == [0] * 13 + [10, 0]


def _scores() -> list[ModelScore]:
    """Teacher, student and baseline rows as scoring would leave them, without a model."""
    bins = [(0, 0.0, 0.0)] * ECE_BINS
    rows = []
    for role, acc, conf, ece in (
        ("teacher", 0.96, 0.97, 0.012),
        ("student", 0.93, 0.98, 0.051),
        ("baseline", 0.80, 0.95, 0.153),
    ):
        reliability = tuple([*bins[:-1], (100, conf, acc)])
        rows.append(
            ModelScore(STAGE_NAMES[role], acc, 1000, 0.5, 4000, 900.0, (acc, acc), ece, reliability)
        )
    return rows


def test_the_report_has_a_calibration_table_and_a_reliability_diagram(tmp_path):
    (tmp_path / "job.yaml").write_text("name: in-memory\n")
    summary = RunSummary(tmp_path, scores=_scores())
    files = write_report(tmp_path, summary)
    md = files.markdown.read_text()
    section = md.split("## Calibration (test split)", 1)[1]
    lines = [x for x in section.splitlines() if x.startswith("| ")]
    assert lines[0].startswith("| model | ECE (15 bins) | mean confidence | test accuracy |")
    cells = {c[0]: c[1:] for c in ([v.strip() for v in x.strip("|").split("|")] for x in lines)}
    assert cells["teacher"] == ["1.20%", "97.00%", "96.00%", "+1.00"]
    assert cells["student (distilled)"] == ["5.10%", "98.00%", "93.00%", "+5.00"]
    assert cells["baseline (student alone)"] == ["15.30%", "95.00%", "80.00%", "+15.00"]
    assert "reliability.png" in {p.name for p in files.plots}
    assert "](report/reliability.png)" in md
    assert files.html.read_text().count("data:image/png;base64,") == len(files.plots)
    # the printed table keeps its columns (README shows it): calibration is the report's
    assert "ECE" not in summary.table()


def test_scores_without_reliability_leave_the_section_out(tmp_path):
    (tmp_path / "job.yaml").write_text("name: in-memory\n")
    plain = [ModelScore(STAGE_NAMES["teacher"], 0.9, 1000, 0.5, 4000, 900.0)]
    md = write_report(tmp_path, RunSummary(tmp_path, scores=plain)).markdown.read_text()
    assert "Calibration" not in md

"""``raydistill report``: a run directory as ``report.md`` and a self-contained ``report.html``.

The report puts the decision in one place: the comparison table (accuracy lost, size saved,
speed gained), the training curves and the temperature/alpha schedules as they ran, per-class
accuracy and calibration (ECE, a reliability diagram) of teacher and students, a tune search's
results when the run has one, a causal LM's greedy generations side by side, and the job as
resolved. PNG plots go to ``<run dir>/report/``; the Markdown links them, the HTML embeds them.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from raydistill.config import JobError
from raydistill.evaluate import ECE_BINS
from raydistill.files import atomic_write_text
from raydistill.results import RunSummary, summarize_run
from raydistill.rundir import (
    BEST_JOB,
    CURVES_PLOT,
    JOB_FILE,
    PLOTS_DIR,
    REPORT_HTML,
    REPORT_MD,
    RESULTS_MD,
    SEARCH_PLOT,
    SEARCH_SUMMARY,
    TUNE_DIR,
)
from raydistill.tasks import task_named
from raydistill.tasks.summary import STAGE_NAMES, human_bytes
from raydistill.tune.record import read_summary

__all__ = ["REPORT_HTML", "REPORT_MD", "ReportFiles", "human_bytes", "write_report"]


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote."""

    markdown: Path
    html: Path
    plots: list[Path]


# ------------------------------------------------------------------ a tiny document model
# Blocks are rendered twice (Markdown and HTML), so the two files always say the same thing.


@dataclass(frozen=True)
class _Heading:
    level: int
    text: str


@dataclass(frozen=True)
class _Para:
    text: str


@dataclass(frozen=True)
class _Bullets:
    items: list[str]


@dataclass(frozen=True)
class _Table:
    header: list[str]
    rows: list[list[str]]
    right: frozenset[int] = frozenset()  # right-aligned (numeric) columns


@dataclass(frozen=True)
class _Code:
    text: str


@dataclass(frozen=True)
class _Image:
    path: Path
    alt: str


_Block = _Heading | _Para | _Bullets | _Table | _Code | _Image


def _markdown(blocks: Sequence[_Block], base: Path) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, _Heading):
            out.append(f"{'#' * b.level} {b.text}")
        elif isinstance(b, _Para):
            out.append(b.text)
        elif isinstance(b, _Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, _Table):
            align = ["---:" if i in b.right else "---" for i in range(len(b.header))]
            lines = [b.header, align, *b.rows]
            out.append("\n".join("| " + " | ".join(cells) + " |" for cells in lines))
        elif isinstance(b, _Code):
            out.append(f"```yaml\n{b.text.rstrip()}\n```")
        else:
            out.append(f"![{b.alt}]({b.path.relative_to(base).as_posix()})")
    return "\n\n".join(out) + "\n"


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
    "padding:4px 8px}th{background:#f3f3f3}td.r{text-align:right}pre{background:#f6f6f6;"
    "padding:1em;overflow:auto}img{max-width:100%}"
)


def _html(blocks: Sequence[_Block], title: str) -> str:
    esc = html.escape
    out = [
        "<!DOCTYPE html>",
        f'<html><head><meta charset="utf-8"><title>{esc(title)}</title>',
        f"<style>{_CSS}</style></head><body>",
    ]
    for b in blocks:
        if isinstance(b, _Heading):
            out.append(f"<h{b.level}>{esc(b.text)}</h{b.level}>")
        elif isinstance(b, _Para):
            out.append(f"<p>{esc(b.text)}</p>")
        elif isinstance(b, _Bullets):
            out.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, _Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in b.header)
            body = "".join(
                "<tr>"
                + "".join(
                    f'<td class="r">{esc(c)}</td>' if i in b.right else f"<td>{esc(c)}</td>"
                    for i, c in enumerate(row)
                )
                + "</tr>"
                for row in b.rows
            )
            out.append(f"<table><tr>{head}</tr>{body}</table>")
        elif isinstance(b, _Code):
            out.append(f"<pre>{esc(b.text)}</pre>")
        else:
            # embedded, so the page is one file that can be mailed or attached to a CI run
            data = base64.b64encode(b.path.read_bytes()).decode()
            out.append(f'<img alt="{esc(b.alt)}" src="data:image/png;base64,{data}">')
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------ the comparison table


def comparison_table(summary: RunSummary) -> _Table:
    """The task's detailed comparison (classification: accuracy, size on disk, latency,
    throughput and speedups; detection: the COCO AP figures)."""
    table = summary.comparison(detailed=True)
    return _Table(table.header, table.rows, frozenset(range(1, len(table.header))))


# ------------------------------------------------------------------ plots


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _series(history: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [h for h in history if key in h]
    return [int(h["epoch"]) + 1 for h in rows], [float(h[key]) for h in rows]


def plot_curves(summary: RunSummary, path: Path) -> Path:
    """Per stage and per epoch, the task's panels (classification: the objective, the cross
    entropy with the labels, comparable across stages, and validation accuracy; detection: the
    objective, val mAP and AP50); solid: train, dashed: validation."""
    plt = _pyplot()
    panels = task_named(summary.task).curves
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 3.8), squeeze=False)
    for ax, (title, train_key, val_key) in zip(axes[0], panels, strict=True):
        # the table's order and colours, however the run collected its stages
        ordered = [r for r in STAGE_NAMES if r in summary.stages]
        for i, role in enumerate(ordered):
            stage, color = summary.stages[role], f"C{i}"
            if train_key:
                ax.plot(*_series(stage.history, train_key), color=color, label=f"{role} train")
            if val_key:
                ax.plot(
                    *_series(stage.history, val_key),
                    color=color,
                    linestyle="--" if train_key else "-",
                    label=f"{role} val",
                    marker="." if not train_key else None,
                )
        ax.set_title(title)
        ax.set_xlabel("epoch")
    axes[0][0].legend(fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_schedules(history: list[dict[str, Any]], path: Path) -> Path:
    """Temperature, alpha and learning rate per epoch, as the distilled student's run logged
    them (not as configured: a resumed or early-stopped run shows what really happened)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.2))
    for ax, key in zip(axes, ("temperature", "alpha", "lr"), strict=True):
        ax.plot(*_series(history, key), marker=".")
        ax.set_title(key)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_per_class(scores: list[Any], path: Path) -> Path:
    """Grouped bars: accuracy of each class for every scored model."""
    plt = _pyplot()
    classes = max(len(s.per_class) for s in scores)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.4 * classes * len(scores))), 3.8))
    width = 0.8 / len(scores)
    for i, s in enumerate(scores):
        xs = [c + (i - (len(scores) - 1) / 2) * width for c in range(len(s.per_class))]
        ax.bar(xs, [100 * v for v in s.per_class], width=width, label=s.name)
    ax.set_xticks(range(classes))
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy (%)")
    low = min((100 * v for s in scores for v in s.per_class if math.isfinite(v)), default=0)
    ax.set_ylim(max(0.0, low - 5), 100.5)  # differences between models are a few points
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_reliability(scores: list[Any], path: Path) -> Path:
    """Reliability diagram: accuracy against mean top-1 confidence in each confidence bin, one
    line per model (empty bins left out); the diagonal is perfect calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.plot([0, 100], [0, 100], color="grey", linestyle=":", label="calibrated")
    for s in scores:
        filled = [(c, a) for n, c, a in s.reliability if n]
        ax.plot(
            [100 * c for c, _ in filled],
            [100 * a for _, a in filled],
            marker="o",
            label=f"{s.name} (ECE {100 * s.ece:.1f}%)",
        )
    ax.set_xlabel("mean confidence in bin (%)")
    ax.set_ylabel("accuracy in bin (%)")
    ax.set_xlim(0, 100)
    ax.set_ylim(0, 100)
    ax.legend(fontsize="small", loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


# ------------------------------------------------------------------ sections


def _per_class_table(scores: list[Any]) -> _Table:
    classes = max(len(s.per_class) for s in scores)
    rows = []
    for c in range(classes):
        cells = [str(c)]
        for s in scores:
            v = s.per_class[c] if c < len(s.per_class) else float("nan")
            cells.append(f"{100 * v:.1f}%" if math.isfinite(v) else "-")
        rows.append(cells)
    return _Table(["class", *(s.name for s in scores)], rows, frozenset(range(1, len(scores) + 1)))


def _calibration_table(scores: list[Any]) -> _Table:
    """ECE, mean confidence and accuracy of each model, in percent; the gap is confidence minus
    accuracy in points (positive: overconfident)."""
    rows = [
        [
            s.name,
            f"{100 * s.ece:.2f}%",
            f"{100 * s.mean_confidence:.2f}%",
            f"{100 * s.accuracy:.2f}%",
            f"{100 * (s.mean_confidence - s.accuracy):+.2f}",
        ]
        for s in scores
    ]
    header = [
        "model",
        f"ECE ({ECE_BINS} bins)",
        "mean confidence",
        "test accuracy",
        "overconfidence (points)",
    ]
    return _Table(header, rows, frozenset({1, 2, 3, 4}))


_CALIBRATION = (
    f"Expected calibration error (torchmetrics, L1): the test rows are put in {ECE_BINS} "
    "equal-width bins of their top-1 softmax confidence, and ECE is the rows' share-weighted "
    "mean of |accuracy - mean confidence| over the bins, in percent (0%: perfectly calibrated)."
)


def _schedule_table(history: list[dict[str, Any]], most: int = 12) -> _Table:
    """Temperature, alpha and learning rate as logged; long runs show every k-th epoch and
    the last."""
    every = max(1, math.ceil(len(history) / (most - 1))) if len(history) > most else 1
    picked = [h for i, h in enumerate(history) if i % every == 0 or i == len(history) - 1]
    rows = [
        [
            str(int(h["epoch"]) + 1),
            f"{float(h.get('temperature', float('nan'))):.3f}",
            f"{float(h.get('alpha', float('nan'))):.3f}",
            f"{float(h.get('lr', float('nan'))):.2e}",
        ]
        for h in picked
    ]
    return _Table(["epoch", "temperature", "alpha", "lr"], rows, frozenset({0, 1, 2, 3}))


def _markdown_table(text: str) -> _Table | None:
    """A Markdown table written by another part of raydistill, read back for the HTML page."""
    lines = [line.strip() for line in text.splitlines() if line.strip().startswith("|")]
    if len(lines) < 2:
        return None
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return _Table(cells[0], cells[2:])


def _tune_section(run_dir: Path) -> list[_Block]:
    """A tune search's results table and the plots ``raydistill tune`` already drew."""
    tune_dir = run_dir / TUNE_DIR
    results = tune_dir / RESULTS_MD
    if not results.is_file():
        return []
    blocks: list[_Block] = [_Heading(2, "Hyperparameter search (raydistill tune)")]
    table = _markdown_table(results.read_text())
    if table is not None:
        blocks.append(table)
    summary_file = tune_dir / SEARCH_SUMMARY
    if summary_file.is_file():
        info = read_summary(tune_dir)
        passes = info.get("teacher_forward_passes")
        if passes is not None:
            blocks.append(_Para(f"Teacher forward passes for the whole search: {passes:,}."))
    if (tune_dir / BEST_JOB).is_file():
        blocks.append(
            _Para(f"Best job: {TUNE_DIR}/{BEST_JOB} (raydistill train {tune_dir / BEST_JOB}).")
        )
    for name, alt in ((SEARCH_PLOT, "metric vs searched parameters"), (CURVES_PLOT, "trials")):
        if (tune_dir / name).is_file():
            blocks.append(_Image(tune_dir / name, alt))
    return blocks


def _samples_section(run_dir: Path, task_name: str) -> list[_Block]:
    """The task's outputs side by side (a causal LM's greedy generations) of the run's
    trained models."""
    from raydistill.results import run_models

    job, splits, models = run_models(run_dir)
    table = task_named(task_name).samples(job, splits, models)
    if table is None:
        return []
    blocks: list[_Block] = [_Heading(2, "Generations side by side (test prompts)")]
    blocks.append(_Table(table.header, table.rows))
    if table.caption:
        blocks.append(_Para(table.caption))
    return blocks


def _resolve_run_dir(run_dir: Path) -> Path:
    """The run directory, also when given its ``tune/`` folder."""
    run_dir = Path(run_dir).resolve()
    if run_dir.name == TUNE_DIR and not (run_dir / JOB_FILE).is_file():
        return run_dir.parent
    return run_dir


def write_report(run_dir: Path | str, summary: RunSummary | None = None) -> ReportFiles:
    """Write ``report.md``, ``report.html`` and the PNG plots of a run directory.

    ``summary`` is the table ``raydistill train`` just computed; without it the run's finished
    stages are scored again on the test split (:func:`raydistill.pipeline.summarize_run`).
    """
    run_dir = _resolve_run_dir(Path(run_dir))
    if summary is None:
        _, summary = summarize_run(run_dir)
    if not (run_dir / JOB_FILE).is_file():
        raise JobError(f"{run_dir}: not a run directory (no {JOB_FILE}; run raydistill train)")
    job_text = (run_dir / JOB_FILE).read_text()
    plots_dir = run_dir / PLOTS_DIR
    plots_dir.mkdir(exist_ok=True)
    name = run_dir.name
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    blocks: list[_Block] = [
        _Heading(1, f"raydistill report: {name}"),
        _Para(f"Run directory {run_dir}, report written {stamp}."),
        _Heading(2, "Teacher vs student"),
    ]
    plots: list[Path] = []
    if summary.scores:
        table = summary.comparison(detailed=True)
        blocks.append(comparison_table(summary))
        if table.caption:
            blocks.append(_Para(table.caption))
        if table.notes:
            blocks.append(_Bullets(table.notes))
    else:
        blocks.append(_Para("No trained model in this run directory yet."))
    if summary.stages:
        blocks.append(_Heading(2, "Training curves"))
        plots.append(plot_curves(summary, plots_dir / CURVES_PLOT))
        blocks.append(_Image(plots[-1], "training and validation curves per stage"))
    distilled = summary.stages.get("student")
    if distilled is not None and distilled.history:
        blocks.append(_Heading(2, "Temperature and alpha as they ran"))
        plots.append(plot_schedules(distilled.history, plots_dir / "schedules.png"))
        blocks.append(_Image(plots[-1], "temperature, alpha and learning rate per epoch"))
        blocks.append(_schedule_table(distilled.history))
    scored = [s for s in summary.scores if getattr(s, "per_class", ())]
    if scored:
        blocks.append(_Heading(2, "Per-class accuracy (test split)"))
        plots.append(plot_per_class(scored, plots_dir / "per_class.png"))
        blocks += [_Image(plots[-1], "per-class accuracy"), _per_class_table(scored)]
    calibrated = [s for s in summary.scores if getattr(s, "reliability", ())]
    if calibrated:
        blocks += [_Heading(2, "Calibration (test split)"), _Para(_CALIBRATION)]
        blocks.append(_calibration_table(calibrated))
        plots.append(plot_reliability(calibrated, plots_dir / "reliability.png"))
        blocks.append(_Image(plots[-1], "reliability diagram"))
    if task_named(summary.task).report_samples and summary.scores:
        blocks += _samples_section(run_dir, summary.task)
    blocks += _tune_section(run_dir)
    blocks += [_Heading(2, "The job as resolved"), _Code(job_text)]

    markdown = run_dir / REPORT_MD
    atomic_write_text(markdown, _markdown(blocks, run_dir))
    page = run_dir / REPORT_HTML
    atomic_write_text(page, _html(blocks, f"raydistill report: {name}"))
    return ReportFiles(markdown, page, plots)

"""A finished search as rows (one per trial), a Markdown table and PNG plots."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EPOCHS_DONE = "epochs_done"  # the scheduler's clock: counts a trial resumed mid-run right


@dataclass
class TrialRow:
    """One trial: its sampled parameters, per-epoch history and the best value of the metric."""

    trial_id: str
    params: dict[str, Any]
    history: list[dict[str, Any]]
    metric: str
    mode: str
    max_epochs: int
    error: str | None = None
    last: dict[str, Any] = field(default_factory=dict)

    @property
    def values(self) -> list[float]:
        return [float(h[self.metric]) for h in self.history if self.metric in h]

    @property
    def best_value(self) -> float | None:
        if not self.values:
            return None
        return max(self.values) if self.mode == "max" else min(self.values)

    @property
    def epochs_run(self) -> int:
        return max((int(h.get(EPOCHS_DONE, 0)) for h in self.history), default=0)

    @property
    def status(self) -> str:
        if self.error is not None:
            return "error"
        if self.epochs_run < self.max_epochs:
            return "stopped early"
        return "finished"

    def as_dict(self) -> dict[str, Any]:
        return {
            "trial": self.trial_id,
            **self.params,
            f"best_{self.metric}": self.best_value,
            "epochs": self.epochs_run,
            "status": self.status,
        }


def collect_rows(grid: Any, metric: str, mode: str, max_epochs: int) -> list[TrialRow]:
    """Rows from a Ray Tune ``ResultGrid``, in trial order."""
    rows = []
    for result in grid:
        frame = result.metrics_dataframe
        history = frame.to_dict("records") if frame is not None else []
        last = dict(result.metrics or {})
        trial_id = str(last.get("trial_id") or Path(result.path).name)
        rows.append(
            TrialRow(
                trial_id=trial_id,
                params=dict(result.config or {}),
                history=history,
                metric=metric,
                mode=mode,
                max_epochs=max_epochs,
                error=None if result.error is None else str(result.error).splitlines()[0],
                last=last,
            )
        )
    return sorted(rows, key=lambda r: r.trial_id)


def reported_rows(grid: Any, metric: str, mode: str, max_epochs: int) -> list[TrialRow]:
    """:func:`collect_rows`, refusing a search in which no trial reported a result (the first
    trial error is named)."""
    rows = collect_rows(grid, metric, mode, max_epochs)
    if not rows or all(r.best_value is None for r in rows):
        errors = [str(r.error) for r in grid if r.error is not None]
        raise RuntimeError(
            "no trial reported a result" + (f"; first error: {errors[0]}" if errors else "")
        )
    return rows


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict) and "kind" in value:  # a schedule
        from raydistill.distill.schedules import as_schedule

        return as_schedule(value).describe()
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items() if v is not None)
    return str(value)


def ranked(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Trials best first by their best value of the metric; trials without one last."""
    return sorted(
        rows,
        key=lambda r: (
            r.best_value is None,
            -(r.best_value or 0.0) if mode == "max" else (r.best_value or 0.0),
        ),
    )


def results_markdown(rows: list[TrialRow], metric: str, mode: str) -> str:
    """One line per trial, best first: parameters, best metric, epochs run, status."""
    params = list(dict.fromkeys(k for r in rows for k in r.params))
    head = ["trial", *params, f"best {metric}", "epochs", "status"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ranked(rows, mode):
        best = "-" if r.best_value is None else f"{r.best_value:.4f}"
        cells = [r.trial_id, *(_cell(r.params.get(p, "")) for p in params), best]
        lines.append("| " + " | ".join([*cells, str(r.epochs_run), r.status]) + " |")
    return "\n".join(lines)


def _save_figure(fig: Any, path: Path) -> None:
    """Save a PNG whole or not at all (see :func:`raydistill.files.atomic_output`)."""
    import io

    from raydistill.files import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    atomic_write_bytes(path, buffer.getvalue())


def write_plots(
    rows: list[TrialRow], alpha_of: Callable[[TrialRow], str], directory: Path, metric: str
) -> list[Path]:
    """``search.png``: the best metric against the starting temperature, coloured by alpha
    schedule (``alpha_of`` names a trial's); ``curves.png``: the metric per epoch of every
    trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r.best_value is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    groups: dict[str, list[TrialRow]] = {}
    for r in done:
        groups.setdefault(f"alpha {alpha_of(r)}", []).append(r)
    for label, members in sorted(groups.items()):
        temps = [float(m.history[0].get("temperature", float("nan"))) for m in members]
        ax.scatter(temps, [m.best_value for m in members], label=label)
    ax.set_xlabel("temperature at epoch 1")
    ax.set_ylabel(f"best {metric}")
    ax.set_title("search: metric vs temperature")
    ax.legend(fontsize="small")
    fig.tight_layout()
    search = directory / "search.png"
    _save_figure(fig, search)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in done:
        epochs = [int(h.get(EPOCHS_DONE, i + 1)) for i, h in enumerate(r.history)]
        ax.plot(epochs, r.values, marker=".", label=r.trial_id)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title("learning curves (trials stopped early end sooner)")
    if len(done) <= 12:
        ax.legend(fontsize="x-small")
    fig.tight_layout()
    curves = directory / "curves.png"
    _save_figure(fig, curves)
    plt.close(fig)
    return [search, curves]

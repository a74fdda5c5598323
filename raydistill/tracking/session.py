"""A command's tracking (``output.tracking``): the trackers' runs around its stages.

:func:`job_tracking` opens the command's runs (MLflow: a parent run; W&B: a group) and makes
them the current tracking of this process while the command runs; :func:`tracked_stage`,
around each stage the driver trains, opens that stage's run (nested in MLflow, in the group in
W&B) with the resolved job as parameters, gives the stage its epoch callbacks, and at the end
logs the stage's weights and history. A tune trial's process has no current tracking: its
trials are Ray Tune's callbacks' (:mod:`.trials`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raydistill.rundir import (
    BEST_JOB,
    CURVES_PLOT,
    HISTORY_FILE,
    JOB_FILE,
    METRICS_FILE,
    PLOTS_DIR,
    REPORT_HTML,
    REPORT_MD,
    RESULTS_CSV,
    RESULTS_MD,
    SEARCH_PLOT,
    SEARCH_SUMMARY,
    SUMMARY_FILE,
    WEIGHTS_FILE,
    stage_dir,
)
from raydistill.tracking.params import job_params

_CURRENT: ContextVar[JobTracking | None] = ContextVar("raydistill_tracking", default=None)


class JobTracking:
    """The trackers of one command (``train``, ``teacher``, ``cache``, ``tune``) on ``job``."""

    def __init__(self, job: Any, command: str, log: Callable[[str], None]) -> None:
        from raydistill.tracking.mlflow_runs import MlflowJob
        from raydistill.tracking.wandb_runs import WandbJob

        self.job = job
        self.command = command
        self.params = job_params(job)
        settings = job.output.tracking
        self.mlflow = (
            MlflowJob(settings.mlflow, job, command, self.params) if settings.mlflow else None
        )
        self.wandb = WandbJob(settings.wandb, job, command, self.params) if settings.wandb else None
        if self.mlflow is not None:
            log(
                f"tracking: MLflow run {self.mlflow.run_id} in experiment "
                f"'{self.mlflow.experiment}' at {self.mlflow.tracking_uri}"
            )
        if self.wandb is not None:
            where = self.wandb.options["dir"]
            log(
                f"tracking: W&B project '{self.wandb.options['project']}', group "
                f"'{self.wandb.group}' ({self.wandb.options['mode']}, files in {where})"
            )

    def log_files(self, files: list[Path], metrics: dict[str, float] | None = None) -> None:
        """The command's results (report, summary, search results) with summary metrics."""
        for tracker in self._trackers():
            tracker.log_files(files, metrics or {})

    def close(self, ok: bool) -> None:
        for tracker in self._trackers():
            tracker.close(ok)

    def _trackers(self) -> list[Any]:
        return [t for t in (self.mlflow, self.wandb) if t is not None]


def current() -> JobTracking | None:
    """The tracking of the command running in this process, if it tracks anything."""
    return _CURRENT.get()


@contextmanager
def job_tracking(
    job: Any, command: str, log: Callable[[str], None]
) -> Iterator[JobTracking | None]:
    """Track ``command`` on ``job`` while the block runs (None: the job tracks nothing). The
    runs end FINISHED, or FAILED when the block raises."""
    if not job.output.tracking.enabled:
        yield None
        return
    tracking = JobTracking(job, command, log)
    token = _CURRENT.set(tracking)
    ok = False
    try:
        yield tracking
        ok = True
    finally:
        _CURRENT.reset(token)
        tracking.close(ok)


@dataclass
class TrackedStage:
    """One stage's runs: ``callbacks`` go to its training; :meth:`finished` logs its result."""

    role: str
    run_dir: Path
    tracking: JobTracking | None = None
    mlflow_run: str | None = None
    wandb_run: Any = None
    callbacks: list[Any] = field(default_factory=list)

    def finished(self, history: list[dict[str, Any]], ok: bool = True) -> None:
        if self.tracking is None:
            return
        directory = stage_dir(self.run_dir, self.role)
        files = [directory / WEIGHTS_FILE, directory / HISTORY_FILE] if ok else []
        if self.mlflow_run is not None:
            assert self.tracking.mlflow is not None
            self.tracking.mlflow.end_stage(self.mlflow_run, history, files, ok)
        if self.wandb_run is not None:
            assert self.tracking.wandb is not None
            epochs = next(c for c in self.callbacks if hasattr(c, "last_step"))
            self.tracking.wandb.end_stage(self.wandb_run, epochs, history, files, ok)


def _open_stage(job: Any, role: str, reused: bool = False) -> TrackedStage:
    tracking = current()
    stage = TrackedStage(role, job.run_dir, tracking)
    if tracking is None:
        return stage
    params = {**job_params(job), "stage": role}
    if tracking.mlflow is not None:
        stage.mlflow_run = tracking.mlflow.start_stage(role, params, reused)
        stage.callbacks.append(tracking.mlflow.epoch_callback(stage.mlflow_run))
    if tracking.wandb is not None:
        stage.wandb_run, callback = tracking.wandb.start_stage(role, params)
        stage.callbacks.append(callback)
    return stage


@contextmanager
def tracked_stage(job: Any, role: str) -> Iterator[TrackedStage]:
    """The stage ``role`` of ``job`` as the current tracking's runs (none when untracked);
    the caller passes ``callbacks`` to the training and calls :meth:`TrackedStage.finished`
    with its history. A stage that raises ends its runs FAILED."""
    stage = _open_stage(job, role)
    try:
        yield stage
    except BaseException:
        stage.finished(_history(job, role), ok=False)
        raise


def log_reused_stage(job: Any, role: str, history: list[dict[str, Any]]) -> None:
    """A stage an earlier run trained, as its own run here too (tagged reused), so that
    each command's runs hold all of its stages."""
    if current() is None:
        return
    _open_stage(job, role, reused=True).finished(history)


def _history(job: Any, role: str) -> list[dict[str, Any]]:
    path = stage_dir(job.run_dir, role) / HISTORY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return []


def run_results(run_dir: Path) -> list[Path]:
    """What a tracker keeps of a finished ``raydistill train`` besides its stages' files:
    the resolved job, the test table and the report."""
    names = [JOB_FILE, SUMMARY_FILE, METRICS_FILE, REPORT_MD, REPORT_HTML, PLOTS_DIR]
    return [run_dir / name for name in names if (run_dir / name).exists()]


def search_results(tune_dir: Path) -> list[Path]:
    """What a tracker keeps of a finished search: its table, best job, summary and plots."""
    names = [RESULTS_MD, RESULTS_CSV, BEST_JOB, SEARCH_SUMMARY, SEARCH_PLOT, CURVES_PLOT]
    return [tune_dir / name for name in names if (tune_dir / name).exists()]


def run_scores(run_dir: Path) -> dict[str, float]:
    """The test table (``metrics.json``) as tracker metrics, ``test.<model>.<column>``:
    ``test.student.accuracy``."""
    path = run_dir / METRICS_FILE
    if not path.is_file():
        return {}
    out: dict[str, float] = {}
    for row in json.loads(path.read_text()).get("test", []):
        model = str(row.get("name", "")).split(" (")[0].replace(" ", "_")
        for key, value in row.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                out[f"test.{model}.{key}"] = float(value)
    return out

"""A search's trials on the trackers: Ray Tune's own MLflow and W&B callbacks, told a little more.

Ray's ``MLflowLoggerCallback`` makes one MLflow run per trial (nested in the search's parent
run through the ``mlflow.parentRunId`` tag), logs the trial's sampled values and every result
Tune receives; ``WandbLoggerCallback`` does the same in a W&B group. The subclasses here add the
trial's whole resolved job as parameters and its student's weights as an artifact. They run in
the Tune driver, on the node whose disk holds the trials' run directories.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from raydistill.rundir import HISTORY_FILE, WEIGHTS_FILE, stage_dir
from raydistill.tracking.mlflow_runs import PARENT_TAG, MlflowJob
from raydistill.tracking.params import job_params
from raydistill.tracking.session import JobTracking
from raydistill.tracking.wandb_runs import init_options, quiet_settings


class _TrialJobs:
    """A trial's job and student files from the search's :class:`~raydistill.tune.trial
    .TrialContext`, without the shared rows it holds (Tune pickles its callbacks into its
    state)."""

    def __init__(self, context: Any) -> None:
        self.context = dataclasses.replace(context, cached=None, shapes=None)

    def params(self, trial: Any) -> dict[str, str]:
        job = self.context.job(dict(trial.config), trial.trial_id)
        return {k: v for k, v in job_params(job).items() if k not in trial.config}

    def student_files(self, trial: Any) -> list[Path]:
        directory = stage_dir(
            self.context.job(dict(trial.config), trial.trial_id).run_dir, "student"
        )
        return [p for p in (directory / WEIGHTS_FILE, directory / HISTORY_FILE) if p.is_file()]


class MlflowTrials(MLflowLoggerCallback):
    """Ray's MLflow callback with each trial's resolved job and student weights."""

    def __init__(self, mlflow_job: MlflowJob, trial_jobs: _TrialJobs) -> None:
        super().__init__(
            tracking_uri=mlflow_job.tracking_uri,
            experiment_name=mlflow_job.experiment,
            tags={**mlflow_job.tags, PARENT_TAG: mlflow_job.run_id},
        )
        self.trial_jobs = trial_jobs

    def _client(self) -> Any:
        from raydistill.tracking.mlflow_runs import client

        return client(self.tracking_uri)

    def log_trial_start(self, trial: Any) -> None:
        super().log_trial_start(trial)
        from mlflow.entities import Param

        params = [Param(k, v) for k, v in self.trial_jobs.params(trial).items()]
        client = self._client()
        for start in range(0, len(params), 100):
            client.log_batch(self._trial_runs[trial], params=params[start : start + 100])

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        client = self._client()
        for path in self.trial_jobs.student_files(trial):
            client.log_artifact(self._trial_runs[trial], str(path), "model")
        super().log_trial_end(trial, failed)


class WandbTrials(WandbLoggerCallback):
    """Ray's W&B callback with each trial's resolved job in its config and its student's
    weights as a model artifact (sent to the trial's logging actor as Ray's checkpoint
    uploads are)."""

    def __init__(self, options: dict[str, Any], group: str, trial_jobs: _TrialJobs) -> None:
        super().__init__(group=group, job_type="trial", **options)
        self.trial_jobs = trial_jobs

    def _start_logging_actor(self, trial: Any, exclude_results: list[str], **init: Any) -> None:
        init["config"] = {**self.trial_jobs.params(trial), **init.get("config", {})}
        super()._start_logging_actor(trial, exclude_results, **init)

    def log_trial_end(self, trial: Any, failed: bool = False) -> None:
        from ray.air.integrations.wandb import _QueueItem

        files = self.trial_jobs.student_files(trial)
        if files and trial in self._trial_queues:
            self._trial_queues[trial].put((_QueueItem.CHECKPOINT, str(files[0].parent)))
        super().log_trial_end(trial, failed)


def trial_callbacks(tracking: JobTracking | None, context: Any) -> list[Any]:
    """The Tune callbacks that track a search's trials (none when the job tracks nothing)."""
    if tracking is None:
        return []
    trial_jobs = _TrialJobs(context)
    callbacks: list[Any] = []
    if tracking.mlflow is not None:
        callbacks.append(MlflowTrials(tracking.mlflow, trial_jobs))
    if tracking.wandb is not None:
        wandb_settings = tracking.job.output.tracking.wandb
        options = {**init_options(wandb_settings, tracking.job), "settings": quiet_settings()}
        callbacks.append(WandbTrials(options, tracking.wandb.group, trial_jobs))
    return callbacks

"""MLflow: a parent run per command, a nested run per stage, metrics from a Ray Train callback.

The driver creates the runs (MLflow's ``MlflowClient``) and logs their parameters and files;
each epoch's metrics are logged by :class:`MlflowEpochs`, a Ray Train ``UserCallback`` that
runs in the Train controller (or in the driver, for a stage trained in-process) and holds only
the tracking URI and the run's id. Nesting is MLflow's own: the ``mlflow.parentRunId`` tag.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from raydistill.tracking.tensorboard import scalar_metrics

PARENT_TAG = "mlflow.parentRunId"  # what MLflow's UI nests runs by
JOB_TAG = "raydistill.job"
COMMAND_TAG = "raydistill.command"
STAGE_TAG = "raydistill.stage"
REUSED_TAG = "raydistill.reused"


def client(tracking_uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def resolved_uri(tracking_uri: str | None) -> str:
    """The URI MLflow uses for ``tracking_uri`` (null: MLFLOW_TRACKING_URI or its default),
    for callbacks that run in other processes."""
    if tracking_uri is not None:
        return tracking_uri
    import mlflow

    return mlflow.get_tracking_uri()


def experiment_id(mlflow_client: Any, name: str) -> str:
    found = mlflow_client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else mlflow_client.create_experiment(name)


def epoch_metrics(metrics: dict[str, Any]) -> tuple[int, list[Any]]:
    """An epoch's report as MLflow metrics: its finite scalars at step = epoch (1-based)."""
    from mlflow.entities import Metric

    step = int(metrics["epoch"]) + 1
    now = int(time.time() * 1000)
    return step, [Metric(k, v, now, step) for k, v in scalar_metrics(metrics).items()]


class MlflowEpochs(UserCallback):
    """Logs each epoch's scalars to one MLflow run. Picklable: Ray ships it to the Train
    controller, which opens its own client."""

    in_process = True  # after_report works outside Ray Train (train/in_process.py)

    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self._client: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_client": None}

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if not metrics or "epoch" not in metrics[0]:
            return
        if self._client is None:
            self._client = client(self.tracking_uri)
        _, batch = epoch_metrics(metrics[0])
        self._client.log_batch(self.run_id, metrics=batch)


class MlflowJob:
    """One command's parent run (``raydistill train``, ``tune``, ...) and its stage runs."""

    def __init__(self, settings: Any, job: Any, command: str, params: dict[str, str]) -> None:
        self.tracking_uri = resolved_uri(settings.tracking_uri)
        self.client = client(self.tracking_uri)
        self.experiment = settings.experiment or job.name
        self.experiment_id = experiment_id(self.client, self.experiment)
        self.tags = {JOB_TAG: job.name, COMMAND_TAG: command}
        self.params = params
        run = self.client.create_run(
            self.experiment_id, run_name=f"{job.name} {command}", tags=self.tags
        )
        self.run_id: str = run.info.run_id
        self.log_params(self.run_id, params)

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        # log_batch takes at most 100 parameters a request
        items = [Param(k, v) for k, v in params.items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def start_stage(self, role: str, params: dict[str, str], reused: bool = False) -> str:
        """A nested run for one stage; returns its id."""
        tags = {**self.tags, PARENT_TAG: self.run_id, STAGE_TAG: role}
        if reused:
            tags[REUSED_TAG] = "true"
        run = self.client.create_run(self.experiment_id, run_name=role, tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def epoch_callback(self, run_id: str) -> MlflowEpochs:
        return MlflowEpochs(self.tracking_uri, run_id)

    def end_stage(
        self, run_id: str, history: list[dict[str, Any]], files: list[Path], ok: bool
    ) -> None:
        """Log the epochs the callback did not (a resumed stage's earlier ones, a reused
        stage's all), the stage's files under ``model/``, and end its run."""
        if history:
            logged = self._logged_steps(run_id, history[-1])
            missing = [m for m in history if int(m["epoch"]) + 1 not in logged]
            batch = [metric for m in missing for metric in epoch_metrics(m)[1]]
            for start in range(0, len(batch), 1000):  # log_batch's limit per request
                self.client.log_batch(run_id, metrics=batch[start : start + 1000])
        for path in files:
            if path.is_file():
                self.client.log_artifact(run_id, str(path), "model")
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")

    def _logged_steps(self, run_id: str, example: dict[str, Any]) -> set[int]:
        keys = list(scalar_metrics(example))
        if not keys:
            return set()
        return {m.step for m in self.client.get_metric_history(run_id, keys[0])}

    def log_files(self, files: list[Path], metrics: dict[str, float]) -> None:
        """The command's own results on the parent run: report files (a folder keeps its
        name) and summary metrics."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        if metrics:
            batch = [Metric(k, v, now, 0) for k, v in metrics.items()]
            self.client.log_batch(self.run_id, metrics=batch)
        for path in files:
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), path.name)
            elif path.is_file():
                self.client.log_artifact(self.run_id, str(path))

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, "FINISHED" if ok else "FAILED")

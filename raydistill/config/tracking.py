"""The ``output.tracking`` section: experiment trackers (MLflow, Weights & Biases) a run logs to."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from raydistill.config.base import Section


class MlflowConfig(Section):
    """An MLflow tracking server (or store). A ``raydistill train`` run is one parent run with
    a nested run per stage; a ``raydistill tune`` search is one parent run with a nested run
    per trial (and the teacher stage)."""

    tracking_uri: str | None = Field(
        None,
        description="http(s)://host:port of an MLflow server, or a file:/sqlite: store;"
        " null: MLFLOW_TRACKING_URI, else MLflow's default (./mlruns)",
    )
    experiment: str | None = Field(None, description="the MLflow experiment; null: the job's name")
    required: bool = Field(
        True,
        description="an unreachable tracking_uri fails the command before training; false:"
        " one warning line and the run trains without MLflow",
    )


class WandbConfig(Section):
    """Weights & Biases: one W&B run per stage (and per tune trial), grouped by the job's name
    (a search's trials by ``<name>-tune``)."""

    project: str = Field(description="the W&B project")
    mode: Literal["offline", "online"] = Field(
        "offline",
        description="offline: files under WANDB_DIR (else the run directory), sent later with"
        " `wandb sync`; online: needs a W&B login (wandb login, or WANDB_API_KEY)",
    )
    entity: str | None = Field(None, description="the W&B team or user; null: the login's default")
    required: bool = Field(
        True,
        description="mode online without a W&B login fails the command before training; false:"
        " one warning line and the run trains without W&B",
    )


class TrackingConfig(Section):
    """Experiment trackers: each stage (and tune trial) logs the resolved job as parameters,
    every epoch's metrics, and its model; the run's report files go with it. Nothing is
    tracked unless a tracker is given (their packages: ``pip install 'raydistill[tracking]'``)."""

    mlflow: MlflowConfig | None = Field(None, description="log to MLflow")
    wandb: WandbConfig | None = Field(None, description="log to Weights & Biases")

    @property
    def enabled(self) -> bool:
        return self.mlflow is not None or self.wandb is not None

"""Weights & Biases: one W&B run per stage, grouped by the job's name, plus a ``report`` run.

W&B keeps a run in the process that started it, so the driver owns every run. A stage trained
in the driver logs each epoch live through :class:`WandbEpochs`; a stage on Ray Train workers
(whose callbacks run in the Train controller, another process) has its epochs logged from its
history when it ends.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from ray.train import UserCallback

from raydistill.tracking.tensorboard import scalar_metrics


def run_directory(job: Any) -> str:
    """Where W&B writes its files: WANDB_DIR, else the run directory (``<run>/wandb/``)."""
    return os.environ.get("WANDB_DIR") or str(job.run_dir)


def artifact_name(text: str) -> str:
    """``text`` as a W&B artifact name (letters, digits, ``-``, ``_``, ``.``)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text)


def init_options(settings: Any, job: Any) -> dict[str, Any]:
    """``wandb.init`` keywords every run of ``job`` shares (also Ray Tune's callback's)."""
    options = {"project": settings.project, "mode": settings.mode, "dir": run_directory(job)}
    if settings.entity is not None:
        options["entity"] = settings.entity
    return options


def quiet_settings() -> Any:
    """W&B's settings for raydistill's runs: no console capture, banners or system stats (the
    progress lines are raydistill's; stats would sample the machine every few seconds)."""
    import wandb

    return wandb.Settings(quiet=True, console="off", x_disable_stats=True)


class WandbEpochs(UserCallback):
    """Logs each epoch's scalars to the driver's W&B run, step = epoch (1-based). A copy
    shipped to the Train controller has no run and logs nothing (see the module's doc)."""

    in_process = True

    def __init__(self, run: Any) -> None:
        self._run = run
        self.last_step = 0

    def __getstate__(self) -> dict[str, Any]:
        return {"_run": None, "last_step": 0}

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        if self._run is None or not metrics or "epoch" not in metrics[0]:
            return
        step = int(metrics[0]["epoch"]) + 1
        self._run.log(scalar_metrics(metrics[0]), step=step)
        self.last_step = step


class WandbJob:
    """One command's W&B runs: ``group`` = the job's name (``<name>-tune`` for a search)."""

    def __init__(self, settings: Any, job: Any, command: str, params: dict[str, str]) -> None:
        self.options = init_options(settings, job)
        Path(self.options["dir"]).mkdir(parents=True, exist_ok=True)
        self.group = job.name if command != "tune" else f"{job.name}-tune"
        self.job_name = job.name
        self.params = params

    def _init(self, job_type: str, config: dict[str, str]) -> Any:
        import wandb

        return wandb.init(
            **self.options,
            group=self.group,
            job_type=job_type,
            name=f"{self.job_name}/{job_type}",
            config=config,
            reinit="finish_previous",
            settings=quiet_settings(),
        )

    def start_stage(self, role: str, params: dict[str, str]) -> tuple[Any, WandbEpochs]:
        run = self._init(role, params)
        return run, WandbEpochs(run)

    def end_stage(
        self,
        run: Any,
        callback: WandbEpochs,
        history: list[dict[str, Any]],
        files: list[Path],
        ok: bool,
    ) -> None:
        import wandb

        for metrics in history:
            step = int(metrics["epoch"]) + 1
            if step > callback.last_step:
                run.log(scalar_metrics(metrics), step=step)
        present = [p for p in files if p.is_file()]
        if present:
            artifact = wandb.Artifact(artifact_name(f"{self.job_name}-{run.job_type}"), "model")
            for path in present:
                artifact.add_file(str(path))
            run.log_artifact(artifact)
        run.finish(exit_code=0 if ok else 1)

    def log_files(self, files: list[Path], metrics: dict[str, float]) -> None:
        """A ``report`` run in the group: the command's results as its summary and one
        artifact of its report files."""
        import wandb

        run = self._init("report", self.params)
        run.summary.update(metrics)
        artifact = wandb.Artifact(artifact_name(f"{self.job_name}-report"), "report")
        for path in files:
            if path.is_dir():
                artifact.add_dir(str(path), name=path.name)
            elif path.is_file():
                artifact.add_file(str(path))
        run.log_artifact(artifact)
        run.finish()

    def close(self, ok: bool) -> None:
        """Stage and report runs end themselves; nothing stays open."""

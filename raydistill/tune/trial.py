"""One Tune trial: the job with the trial's parameters, trained as a real Ray Train run.

Ray Tune cannot run a ``TorchTrainer`` directly in 2.60 (ray-notes), so each trial is a function
trainable that builds the trial's job and runs the student stage, whose ``TorchTrainer`` reports
every epoch back to Tune through :class:`EpochReporter` (the scheduler stops trials on those).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, TuneConfig, job_from_dict
from raydistill.tune.results import EPOCHS_DONE
from raydistill.tune.space import apply_params

TEACHER_PASSES = "teacher_forward_passes"
TRIALS_DIR = "trials"


@dataclass(frozen=True)
class TrialContext:
    """What every trial shares (built once on the driver): the resolved base job as a dict
    with absolute paths, the teacher's weights and the shared cache."""

    base: dict[str, Any]
    teacher_weights: str
    tune_dir: str
    settings: TuneConfig
    # The cache's datasets, read (and held in the object store when small) once by the driver:
    # trials then start without reading Parquet or spawning read tasks of their own.
    cached: dict[str, Any] | None = None
    shapes: tuple[dict, dict] | None = None  # check_pair's feature shapes, measured once

    def job(self, params: dict[str, Any], trial_id: str) -> JobConfig:
        """The job one trial trains: the base job with ``params`` set, the teacher fixed to
        the shared weights, and the shared cache read unless ``shared_teacher`` is off."""
        raw = apply_params(self.base, params)
        raw["name"] = trial_id
        raw["output"]["storage_path"] = str(Path(self.tune_dir) / TRIALS_DIR)
        raw["teacher"]["checkpoint"] = self.teacher_weights
        raw["distill"]["enabled"] = True
        if self.settings.shared_teacher:
            raw["distill"]["teacher_pass"] = "cache"
        elif raw["distill"]["teacher_pass"] == "cache":
            raw["distill"]["teacher_pass"] = "once"
        raw["train"]["baseline"] = False
        if self.settings.epochs is not None:
            raw["train"]["epochs"] = self.settings.epochs
        raw["scaling"]["workers"] = self.settings.workers_per_trial
        raw.pop("tune", None)
        return job_from_dict(raw, f"trial {trial_id}")


def _tune_row(metrics: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """An epoch's metrics as Tune takes them: scalars only, with the scheduler's clock."""
    row = {k: v for k, v in metrics.items() if not isinstance(v, list | dict)}
    row[EPOCHS_DONE] = int(row["epoch"]) + 1
    row.update(extra)
    return row


def _reporter(extra: dict[str, Any]) -> Any:
    from ray.tune.integration.ray_train import TuneReportCallback

    class EpochReporter(TuneReportCallback):
        """Forwards rank 0's epoch metrics to Tune, plus what the scheduler and the results
        table need."""

        def after_report(self, run_context: Any, metrics: list[dict], checkpoint: Any) -> None:
            super().after_report(run_context, [_tune_row(metrics[0], extra)], checkpoint)

    return EpochReporter()


def run_trial(config: dict[str, Any], context: TrialContext) -> None:
    """The Tune function trainable: ``config`` holds the trial's sampled job fields."""
    from ray import tune

    from raydistill.data.sources import load_splits
    from raydistill.pipeline import fit_student, planned_teacher_passes
    from raydistill.runtime import quiet_data
    from raydistill.train.stage import finished_stage, latest_checkpoint, stage_dir
    from raydistill.train.state import load_state

    quiet_data()  # this process's Data context is what the trial's datasets carry
    trial_id = tune.get_context().get_trial_id()
    job = context.job(dict(config), trial_id)
    splits = load_splits(job.data)
    shared = context.cached if job.distill.teacher_pass == "cache" else None
    passes = planned_teacher_passes(job, splits)  # 0 when the shared cache is read
    # A search resumed after its driver died restarts the trials Tune had not seen end. Their
    # Ray Train runs resume from their own checkpoints; Tune is first told the epochs it
    # missed (or, if the training ended, all of them), so its scheduler and table see them.
    done = finished_stage(job.run_dir, "student")
    previous = latest_checkpoint(stage_dir(job.run_dir, "student"))
    history = done.history if done else load_state(previous)["history"] if previous else []
    for metrics in history:
        tune.report(_tune_row(metrics, {TEACHER_PASSES: 0}))
    if done is not None:
        print(f"[{trial_id}] already trained: reported its {done.epochs_run} epochs to Tune")
        return
    print(f"[{trial_id}] " + ", ".join(f"{k}={v}" for k, v in config.items()))
    fit_student(
        job,
        splits,
        "student",
        Path(context.teacher_weights),
        log=print,
        callbacks=[_reporter({TEACHER_PASSES: passes})],
        label=trial_id,
        cached=shared,
        shapes=context.shapes,
    )

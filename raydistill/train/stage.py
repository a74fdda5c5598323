"""Run one training stage on Ray Train and collect what it produced into the run directory."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raydistill.config import JobError
from raydistill.files import atomic_write_json, read_json
from raydistill.models.specs import build_model, save_weights
from raydistill.remote import remote_run
from raydistill.rundir import HISTORY_FILE, WEIGHTS_FILE, stage_dir
from raydistill.runtime import check_worker_resources
from raydistill.train.context import HELD, STAGE_STARTED
from raydistill.train.in_process import say_here, train_here, why_not_here
from raydistill.train.loop import NonFiniteLossError, train_loop_per_worker
from raydistill.train.shards import held_datasets
from raydistill.train.spec import StageSpec
from raydistill.train.state import final_state
from raydistill.train.state import latest_checkpoint as latest_checkpoint  # re-exported

if TYPE_CHECKING:
    import ray.data


@dataclass(frozen=True)
class StageResult:
    """A finished stage: its best weights file and per-epoch metrics."""

    role: str
    weights: Path
    history: list[dict[str, float]]

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def finished_stage(run_dir: Path, role: str) -> StageResult | None:
    """The stage's result if an earlier run completed it (its weights file is written last)."""
    directory = stage_dir(run_dir, role)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file() or not (directory / HISTORY_FILE).is_file():
        return None
    history = read_json(directory / HISTORY_FILE, "stage history")
    return StageResult(role, weights, history)


def job_error_in(exc: BaseException, depth: int = 0) -> str | None:
    """The message of a :class:`JobError` or :class:`NonFiniteLossError` raised by a train
    worker, found inside Ray Train's failure (``WorkerGroupError.worker_failures`` wrap each
    worker's exception); None when training failed for another reason."""
    if isinstance(exc, JobError | NonFiniteLossError):
        return str(exc)
    if depth > 8:
        return None
    inner: list[Any] = list(getattr(exc, "worker_failures", {}).values())
    inner += [getattr(exc, name, None) for name in ("_base_exc", "cause", "__cause__")]
    for candidate in inner:
        if isinstance(candidate, BaseException):
            found = job_error_in(candidate, depth + 1)
            if found is not None:
                return found
    return None


def run_stage(
    spec: StageSpec,
    datasets: dict[str, ray.data.Dataset],
    run_dir: Path,
    callbacks: list[Any] | None = None,
    loop_config: dict[str, Any] | None = None,
) -> StageResult:
    """Train one stage with a ``TorchTrainer`` (or in this process: :mod:`.in_process`);
    rerunning resumes from its last checkpoint.

    Ray Train restores a run whose ``RunConfig(name, storage_path)`` matches an earlier one, so a
    stable per-stage name makes resume automatic. ``callbacks`` are Ray Train ``UserCallback``s
    (a tune trial forwards each epoch's report to Tune with one). Both paths run the shared
    epoch loop; ``loop_config`` holds extra entries of its config (the task's extras,
    ``resume_from``).

    Splits that :func:`~raydistill.train.shards.held_datasets` picks (materialized, at most
    ``scaling.in_memory_max_mb``) reach the workers as block refs and are held in memory,
    sharded by row id; the others stream through Ray Train's dataset split.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    started = time.time()  # the stage's start, for the workers' start-up line (Startup)
    scaling = spec.job.scaling
    check_worker_resources(spec.job)
    directory = stage_dir(run_dir, spec.role)
    # small materialized splits go to every worker whole, as block refs, and are read once
    held = held_datasets(datasets, scaling.in_memory_max_mb)
    elsewhere = why_not_here(spec.job, datasets, held, callbacks or [])
    if elsewhere is None:
        streamed = {k: ds for k, ds in datasets.items() if k not in held}
        rows = f"{' and '.join(sorted(streamed))} streamed" if streamed else "rows in memory"
        say_here(f"[{spec.name}] one worker, {rows}, one node: training in this process")
        state = train_here(
            spec, held, streamed, directory, loop_config or {}, callbacks or [], started
        )
        return collect_stage(spec, state, run_dir)
    if scaling.in_process:
        raise JobError(f"scaling.in_process is true, but {elsewhere}")
    remote = remote_run(spec.job)
    resources: dict[str, Any] = {"CPU": scaling.cpus_per_worker, **scaling.resources_per_worker}
    trainer = TorchTrainer(
        train_loop_per_worker,
        # Each worker group (the first, or one restarted after a failure) resumes from the
        # newer of Ray's checkpoint and the newest complete one in the stage directory.
        train_loop_config={
            "spec": spec,
            "stage_dir": str(directory),
            STAGE_STARTED: started,
            HELD: held,
            **(loop_config or {}),
        },
        scaling_config=ScalingConfig(
            # [min, max] becomes (min, max): Ray Train's elastic training
            num_workers=scaling.workers
            if isinstance(scaling.workers, int)
            else (scaling.min_workers, scaling.max_workers),
            use_gpu=scaling.use_gpu,
            resources_per_worker=resources,
        ),
        run_config=RunConfig(
            name=spec.role,
            # a run on a storage URI: Ray Train writes (and restores) its checkpoints there,
            # where every node reaches them
            storage_path=remote.full_uri if remote is not None else str(run_dir),
            checkpoint_config=CheckpointConfig(num_to_keep=spec.job.output.keep_checkpoints),
            failure_config=FailureConfig(max_failures=scaling.max_failures),
            callbacks=callbacks or None,
        ),
        datasets={k: ds for k, ds in datasets.items() if k not in held},
    )
    try:
        result = trainer.fit()
    except Exception as exc:
        # A bad job found inside a worker (a NaN loss, a model that does not build) ends in the
        # worker's own one-line message on the driver, not in Ray's wrapped traceback.
        cause = job_error_in(exc)
        if cause is None:
            raise
        raise JobError(cause) from None
    resumed_from = (loop_config or {}).get("resume_from")
    # The newest state by its recorded epoch: Ray's registered checkpoint can be older than
    # one a killed driver left in the stage directory (see final_state).
    with tempfile.TemporaryDirectory() as fetched:
        registered = result.checkpoint.path if result.checkpoint is not None else None
        if remote is not None and result.checkpoint is not None:  # on the URI: fetch it
            registered = result.checkpoint.to_directory(fetched)
        state = final_state(registered, directory, resumed_from)
    if state is None:
        raise RuntimeError(f"[{spec.role}] training finished without a checkpoint")
    return collect_stage(spec, state, run_dir)


def collect_stage(spec: StageSpec, state: dict[str, Any], run_dir: Path) -> StageResult:
    """Write the stage's chosen weights and its history next to Ray's checkpoints."""
    weights = state["best_student"] if spec.train.keep_best else state["final_student"]
    model = build_model(spec.model, spec.num_classes, load=False)
    model.load_state_dict(weights)
    directory = stage_dir(run_dir, spec.role)
    directory.mkdir(parents=True, exist_ok=True)
    history = list(state["history"])
    atomic_write_json(directory / HISTORY_FILE, history)
    meta = {"role": spec.role, "model": spec.model.model, "epochs": len(history)}
    path = save_weights(model, directory / WEIGHTS_FILE, meta)
    return StageResult(spec.role, path, history)

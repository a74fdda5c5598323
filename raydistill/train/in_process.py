"""One-worker stages trained in the driver's own process, without a Ray Train worker group.

Starting a ``TorchTrainer`` (controller, worker group, process group, loop config transfer)
costs 15-30 s on a small machine before the first step, longer than a digits stage trains. A
stage that would get one worker on the driver's own node gains nothing from that group: no
DDP, no other node. So such a stage runs the same epoch loop (:func:`~raydistill.train.loop
.run_epochs`) here, on the same rows a Ray Train worker would hold (:mod:`.shards`, read from
the same Arrow blocks, in the same row-id order; a split that streams is read through its own
Ray Data iterator, as one worker's streaming shard is), with the worker's thread count, and writes
every epoch's state into the stage directory as ``checkpoint_<epoch>/state.pt``: a rerun (or a
Ray Train run of the same stage) resumes from it. The result is the one Ray Train gives.

When a stage trains here (``scaling.in_process: null``, see :func:`why_not_here`): one worker,
no ``max_failures`` (nothing restarts a process that failed), no custom resources (they place
a worker on a chosen node), callbacks that run in this process,
and a Ray cluster that is this one node and offers the worker's CPUs (and a GPU if asked).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydistill.config import JobError
from raydistill.remote import sync
from raydistill.train.context import LocalContext
from raydistill.train.shards import InMemoryShard, read_blocks
from raydistill.train.state import (
    final_state,
    latest_checkpoint,
    newest_state,
    save_state,
    stage_checkpoints,
)

CHECKPOINT_PREFIX = "checkpoint_"  # matches rundir.CHECKPOINT_GLOB, as Ray Train's do


class InProcessContext(LocalContext):
    """The loop's context for a stage in this process: one worker, its splits held in memory
    or streamed through Ray Data iterators.

    With ``stage_dir`` every epoch's state is also written there as
    ``checkpoint_<epoch>/state.pt`` (the newest ``keep`` kept), as Ray Train would: a rerun
    continues from it. ``resume`` is a state to start from; ``on_epoch`` sees each epoch's
    metrics (a TensorBoard writer); ``on_checkpoint`` runs after each checkpoint is written
    (uploading it, for a run on a storage URI). ``quiet`` drops the loop's progress lines.
    ``stage_started`` (``time.time()``) dates the stage's start for its first-step line;
    ``log`` takes the progress lines (default: this process's original stdout, as a worker's).
    """

    def __init__(
        self,
        datasets: dict[str, Any],
        *,
        stage_dir: Path | None = None,
        keep: int | None = None,
        resume: dict[str, Any] | None = None,
        extras: dict[str, Any] | None = None,
        on_epoch: Callable[[dict[str, Any]], None] | None = None,
        on_checkpoint: Callable[[], None] | None = None,
        device: torch.device | None = None,
        quiet: bool = False,
        stage_started: float | None = None,
        data_s: float = 0.0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__(datasets, log=log, resume=resume, keep_state=True, extras=extras)
        self.stage_dir = Path(stage_dir) if stage_dir is not None else None
        self.keep = keep
        self.on_epoch = on_epoch
        self.on_checkpoint = on_checkpoint
        self.quiet = quiet
        self.last_checkpoint: Path | None = None
        if device is not None:
            self.device = device
        if stage_started is not None:
            self.stage_started, self.worker_started = stage_started, time.time()
            self.data_s, self.worker_group = data_s, False

    def prepare_model(self, core: nn.Module) -> nn.Module:
        core.to(self.device)
        teacher = getattr(core, "teacher", None)
        if teacher is not None:  # not a submodule (see RayTrainContext.prepare_model)
            teacher.to(self.device)
        return core

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        self.reports.append(metrics)
        self.last_state = state
        self.last_checkpoint = self._save(int(metrics["epoch"]), state)
        if self.on_epoch is not None:
            self.on_epoch(metrics)

    def _save(self, epoch: int, state: dict[str, Any]) -> Path | None:
        if self.stage_dir is None:
            return None
        directory = self.stage_dir / f"{CHECKPOINT_PREFIX}{epoch:06d}"
        directory.mkdir(parents=True, exist_ok=True)
        save_state(directory, state)
        if self.keep is not None:  # this context's own, oldest first (their names sort by epoch)
            ours = [p for p in stage_checkpoints(self.stage_dir) if _own_checkpoint(p)]
            for old in ours[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        if self.on_checkpoint is not None:
            self.on_checkpoint()
        return directory

    def say(self, line: str) -> None:
        if not self.quiet:
            super().say(line)


def _own_checkpoint(path: Path) -> bool:
    return path.name.removeprefix(CHECKPOINT_PREFIX).isdigit()


def say_here(line: str) -> None:
    """A line of a stage training in the driver: to ``sys.stdout``, where the driver's own lines
    go (a quiet console sends file descriptor 1, which a worker writes to, into ray.log)."""
    print(line, flush=True)


def why_not_here(
    job: Any, datasets: dict[str, Any], held: dict[str, Any], callbacks: list[Any]
) -> str | None:
    """None when a stage of ``job`` trains in this process, else why it takes a worker group
    (``scaling.in_process``: null decides by these rules, false never trains here, true
    refuses a stage these rules send elsewhere)."""
    s = job.scaling
    if s.in_process is False:
        return "scaling.in_process is false"
    if s.workers != 1:
        return f"scaling.workers is {s.workers}, not 1"
    if s.max_failures != 0:
        return "scaling.max_failures restarts failed workers"
    if s.resources_per_worker:
        return "scaling.resources_per_worker places the worker"
    if not all(getattr(c, "in_process", False) for c in callbacks):
        return "a callback needs Ray Train"
    import ray

    return node_lacks(job, [n for n in ray.nodes() if n.get("Alive")])


def node_lacks(job: Any, nodes: list[dict[str, Any]]) -> str | None:
    """Why the cluster's live ``nodes`` (``ray.nodes()`` entries) cannot host ``job``'s one
    worker in this process; None when they can."""
    if len(nodes) != 1:
        return f"the cluster has {len(nodes)} nodes"
    have = nodes[0].get("Resources", {})
    s = job.scaling
    if have.get("CPU", 0.0) < s.cpus_per_worker:
        return f"the node offers {have.get('CPU', 0.0):g} CPUs to workers"
    if s.use_gpu and not (have.get("GPU", 0.0) >= 1 and torch.cuda.is_available()):
        return "scaling.use_gpu and this process sees no GPU"
    return None


def train_here(
    spec: Any,
    held: dict[str, list[Any]],
    streamed: dict[str, Any],
    stage_directory: Path,
    loop_config: dict[str, Any],
    callbacks: list[Any],
    started: float,
) -> dict[str, Any]:
    """Train ``spec``'s stage in this process on the ``held`` splits (name -> Arrow block
    refs) and the ``streamed`` ones (name -> Ray Data ``Dataset``), and return its final state
    (see :func:`~raydistill.train.state.final_state`). ``loop_config`` holds the task's extras
    and ``resume_from``; ``callbacks`` get each epoch's metrics (``after_report``, as Ray Train
    calls them); ``started`` is the stage's ``time.time()``."""
    from raydistill.tasks import get_task
    from raydistill.train.loop import NonFiniteLossError, run_epochs

    job = spec.job
    reading = time.perf_counter()
    # the rows and order a single Ray Train worker holds (rank 0 of 1)
    shards: dict[str, Any] = {
        k: InMemoryShard.for_rank(read_blocks(r), 0, 1) for k, r in held.items()
    }
    # a one-worker streaming_split is the whole dataset in Ray Data's order: its own iterator
    # gives the same batches without the split coordinator actor a worker group starts
    shards.update({k: ds.iterator() for k, ds in streamed.items() if k not in held})
    resume_from = loop_config.get("resume_from")
    start = newest_state([latest_checkpoint(stage_directory), resume_from])
    cuda = job.scaling.use_gpu and torch.cuda.is_available()
    ctx = InProcessContext(
        shards,
        stage_dir=stage_directory,
        keep=job.output.keep_checkpoints,
        resume=start[1] if start is not None else None,
        extras=loop_config,
        on_epoch=lambda metrics: [c.after_report(None, [metrics], None) for c in callbacks],
        on_checkpoint=lambda: sync(job, spec.role),
        device=torch.device("cuda") if cuda else None,
        stage_started=started,
        data_s=time.perf_counter() - reading,
        log=say_here,
    )
    # a Ray Train worker runs with as many threads as it has CPUs (OMP_NUM_THREADS)
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(job.scaling.cpus_per_worker)))
    try:
        run_epochs(get_task(job), spec, ctx)
    except NonFiniteLossError as exc:
        raise JobError(str(exc)) from None
    finally:
        torch.set_num_threads(threads)
    state = final_state(None, stage_directory, resume_from)
    if state is None:
        raise RuntimeError(f"[{spec.role}] training finished without a checkpoint")
    return state

"""Where the shared epoch loop runs: inside a Ray Train worker, or in this process.

The loop (:func:`raydistill.train.loop.run_epochs`) asks its context for its rank, device, data
shards, cross-worker sums and where to report each epoch; :class:`RayTrainContext` answers from
Ray Train (DDP, checkpoints that resume), :class:`LocalContext` from rows held in memory (one
process, no Ray: unit tests and the in-memory temperature search).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from raydistill.train.shards import InMemoryShard, read_blocks
from raydistill.train.state import Resumed

# Rows held in this process, for tests and the in-memory search (the name they import).
LocalShard = InMemoryShard


def _say(message: str) -> None:
    """One line to the worker's stdout, which Ray forwards to the driver. Train V2 patches
    ``print`` to tee into its logger as well, which shows every line twice; writing to the
    original stream avoids the patch."""
    out = sys.__stdout__ or sys.stdout
    out.write(message + "\n")
    out.flush()


def _log_only(lines: list[str]) -> None:
    """Lines for the run's log file, not the terminal: on this process's original stderr. A
    worker's is forwarded to the driver, whose quiet console (:mod:`raydistill.console`) files
    lines that are not raydistill's own (``[name] ...``) in ``ray.log``; in the driver's
    process, a quiet console points descriptor 2 at ``ray.log`` itself."""
    out = sys.__stderr__ or sys.stderr
    out.write("".join(line + "\n" for line in lines))
    out.flush()


# Entries of a Ray Train loop config beyond the spec and the task's extras (set by stage.py)
STAGE_STARTED = "stage_started"  # the driver's time.time() when it started the stage
HELD = "held_datasets"  # name -> the Arrow block refs of a split held in memory


class LoopContext:
    """What the loop needs from where it runs (see the module docstring)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    extras: dict[str, Any] = {}  # the task's loop_extras (read only)
    stage_started: float | None = None  # wall clock (time.time()) of the stage's start
    worker_started: float | None = None  # wall clock of this worker's loop entry
    data_s: float = 0.0  # seconds this worker spent reading splits it holds in memory
    worker_group: bool = True  # False: the stage trains in the driver's process (no group)

    def prepare_model(self, core: nn.Module) -> nn.Module:
        return core

    def dataset(self, name: str) -> Any:
        raise NotImplementedError

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        return values

    def gather(self, items: list[Any]) -> list[Any]:
        return items

    def restore(self, core: nn.Module, optimizer: Any, scheduler: Any) -> Resumed:
        return Resumed()

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        """One epoch's metrics, and the state to continue from (see ``epoch_state``)."""
        raise NotImplementedError

    def say(self, line: str) -> None:
        if self.rank == 0:
            _say(line)

    def log_only(self, lines: list[str]) -> None:
        """Detail for the run's log file and not the terminal (rank 0 only), such as
        pycocotools' summary of each validation. No line may read as raydistill's own
        (:func:`raydistill.console.is_own_line`), or the console shows it."""
        if self.rank == 0:
            _log_only(lines)


class RayTrainContext(LoopContext):
    """Inside a Ray Train worker: DDP across the worker group, checkpoints through Ray."""

    def __init__(self, config: dict[str, Any]) -> None:
        import ray.train
        import ray.train.torch

        self.worker_started = time.time()
        self.config = self.extras = config
        self.stage_started = config.get(STAGE_STARTED)
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()
        self.held_refs: dict[str, list[Any]] = config.get(HELD) or {}
        self.held: dict[str, InMemoryShard] = {}

    def prepare_model(self, core: nn.Module) -> nn.Module:
        import ray.train.torch

        module = ray.train.torch.prepare_model(core)
        teacher = getattr(core, "teacher", None)
        if teacher is not None:  # not a submodule, so prepare_model did not move it
            teacher.to(self.device)
        return module

    def dataset(self, name: str) -> Any:
        """A split this stage holds in memory (read once, this rank's rows by row id; see
        :mod:`raydistill.train.shards`), else Ray Train's streaming shard of it."""
        import ray.train

        if name not in self.held_refs:
            return ray.train.get_dataset_shard(name)
        if name not in self.held:
            started = time.perf_counter()
            columns = read_blocks(self.held_refs[name])
            self.held[name] = InMemoryShard.for_rank(columns, self.rank, self.world_size)
            self.data_s += time.perf_counter() - started
        return self.held[name]

    def all_sum(self, values: torch.Tensor) -> torch.Tensor:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather(self, items: list[Any]) -> list[Any]:
        if not (dist.is_available() and dist.is_initialized()):
            return items
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, items)
        return [item for part in parts for item in part]

    def restore(self, core: nn.Module, optimizer: Any, scheduler: Any) -> Resumed:
        from raydistill.train.state import restore

        return restore(self.config, core, optimizer, scheduler, self.rank)

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        from raydistill.train.state import report_epoch

        report_epoch(self.rank, metrics, state)


class LocalContext(LoopContext):
    """One process, no Ray: ``datasets`` name -> :class:`LocalShard` (or anything with the same
    iterators); each epoch's metrics go to ``on_report`` (with the epoch's state when
    ``keep_state``), progress lines to ``log`` and log-file detail to ``detail`` (default:
    this process's stderr)."""

    def __init__(
        self,
        datasets: dict[str, Any],
        on_report: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] | None = None,
        resume: dict[str, Any] | None = None,
        keep_state: bool = False,
        extras: dict[str, Any] | None = None,
        detail: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.datasets = datasets
        self.detail = detail
        self.extras = extras or {}
        self.on_report = on_report
        self.log = log
        self.resume = resume
        self.keep_state = keep_state
        self.reports: list[dict[str, Any]] = []
        self.last_state: dict[str, Any] | None = None

    def dataset(self, name: str) -> Any:
        return self.datasets[name]

    def restore(self, core: nn.Module, optimizer: Any, scheduler: Any) -> Resumed:
        if self.resume is None:
            return Resumed()
        from raydistill.train.state import apply_state

        return apply_state(self.resume, core, optimizer, scheduler)

    def report(self, metrics: dict[str, Any], state: dict[str, Any]) -> None:
        self.reports.append(metrics)
        if self.keep_state:
            self.last_state = state
        if self.on_report is not None:
            self.on_report(metrics)

    def say(self, line: str) -> None:
        (self.log or _say)(line)

    def log_only(self, lines: list[str]) -> None:
        (self.detail or _log_only)(lines)


@dataclass(frozen=True)
class Startup:
    """What a stage spent before its first step, as this worker measured it (seconds).

    ``total_s``: from the driver starting the stage (``run_stage``, just before
    ``TorchTrainer.fit``; the datasets and any teacher pass are ready by then) to this worker
    having its first batch in hand, by wall clock (the driver's and this worker's: on one
    machine the same clock, across nodes as close as their clocks). ``workers_s``: up to this
    worker entering the loop: Ray Train's controller, the worker group's placement and
    processes, torch.distributed's set-up and the loop config's transfer. ``data_s``: reading
    the splits this worker holds in memory, plus the wait for the first batch (a streamed
    split's dataset start). The rest, ``total_s - workers_s - data_s``, is building the model,
    wrapping it for DDP and restoring a checkpoint.
    """

    total_s: float
    workers_s: float
    data_s: float
    worker_group: bool = True  # False: in the driver's process, ``workers_s`` is 0

    @classmethod
    def measure(cls, ctx: LoopContext, first_batch_s: float) -> Startup | None:
        """None where the context has no stage start (tests, trials in their process)."""
        if ctx.stage_started is None or ctx.worker_started is None:
            return None
        total = time.time() - ctx.stage_started
        workers = ctx.worker_started - ctx.stage_started if ctx.worker_group else 0.0
        return cls(total, workers, ctx.data_s + first_batch_s, ctx.worker_group)

    def line(self, name: str) -> str:
        rest = max(self.total_s - self.workers_s - self.data_s, 0.0)
        where = f"worker group {self.workers_s:.1f} s, " if self.worker_group else "in process: "
        return (
            f"[{name}] first step after {self.total_s:.1f} s ({where}"
            f"data {self.data_s:.1f} s, model {rest:.1f} s)"
        )

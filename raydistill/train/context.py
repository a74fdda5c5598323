"""Where the shared epoch loop runs: inside a Ray Train worker, or in this process.

The loop (:func:`raydistill.train.loop.run_epochs`) asks its context for its rank, device, data
shards, cross-worker sums and where to report each epoch; :class:`RayTrainContext` answers from
Ray Train (DDP, checkpoints that resume), :class:`LocalContext` from rows held in memory (one
process, no Ray: unit tests and the in-memory temperature search).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from raydistill.train.state import Resumed


def _say(message: str) -> None:
    """One line to the worker's stdout, which Ray forwards to the driver. Train V2 patches
    ``print`` to tee into its logger as well, which shows every line twice; writing to the
    original stream avoids the patch."""
    out = sys.__stdout__ or sys.stdout
    out.write(message + "\n")
    out.flush()


class LoopContext:
    """What the loop needs from where it runs (see the module docstring)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    extras: dict[str, Any] = {}  # the task's loop_extras (read only)

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


class RayTrainContext(LoopContext):
    """Inside a Ray Train worker: DDP across the worker group, checkpoints through Ray."""

    def __init__(self, config: dict[str, Any]) -> None:
        import ray.train
        import ray.train.torch

        self.config = self.extras = config
        ctx = ray.train.get_context()
        self.rank, self.world_size = ctx.get_world_rank(), ctx.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare_model(self, core: nn.Module) -> nn.Module:
        import ray.train.torch

        module = ray.train.torch.prepare_model(core)
        teacher = getattr(core, "teacher", None)
        if teacher is not None:  # not a submodule, so prepare_model did not move it
            teacher.to(self.device)
        return module

    def dataset(self, name: str) -> Any:
        import ray.train

        return ray.train.get_dataset_shard(name)

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


class LocalShard:
    """Rows held in memory (column -> array [N, ...]) with the iterators the loop uses on a
    Ray Data shard: ``iter_torch_batches`` (tensors) and ``iter_batches`` (numpy)."""

    def __init__(self, columns: dict[str, Any]) -> None:
        lengths = {len(v) for v in columns.values()}
        if len(lengths) != 1:
            raise ValueError(f"columns of different lengths: {sorted(lengths)}")
        self.columns = {k: np.asarray(v) for k, v in columns.items()}
        self.rows = lengths.pop()

    def _order(self, shuffle: int | None, seed: int | None) -> np.ndarray:
        if not shuffle:
            return np.arange(self.rows)
        return np.random.default_rng(seed).permutation(self.rows)

    def iter_batches(
        self,
        batch_size: int,
        batch_format: str = "numpy",
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, np.ndarray]]:
        order = self._order(local_shuffle_buffer_size, local_shuffle_seed)
        for start in range(0, self.rows, batch_size):
            index = order[start : start + batch_size]
            yield {k: v[index] for k, v in self.columns.items()}

    def iter_torch_batches(
        self,
        batch_size: int,
        local_shuffle_buffer_size: int | None = None,
        local_shuffle_seed: int | None = None,
    ) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.iter_batches(
            batch_size,
            local_shuffle_buffer_size=local_shuffle_buffer_size,
            local_shuffle_seed=local_shuffle_seed,
        ):
            yield {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


class LocalContext(LoopContext):
    """One process, no Ray: ``datasets`` name -> :class:`LocalShard` (or anything with the same
    iterators); each epoch's metrics go to ``on_report`` (with the epoch's state when
    ``keep_state``), and progress lines to ``log``."""

    def __init__(
        self,
        datasets: dict[str, Any],
        on_report: Callable[[dict[str, Any]], None] | None = None,
        log: Callable[[str], None] | None = None,
        resume: dict[str, Any] | None = None,
        keep_state: bool = False,
        extras: dict[str, Any] | None = None,
    ) -> None:
        self.datasets = datasets
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

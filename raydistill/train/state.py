"""Training state in and out of a checkpoint directory (tensors and plain data only)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from raydistill.files import atomic_output
from raydistill.rundir import CHECKPOINT_GLOB as CHECKPOINT_GLOB
from raydistill.rundir import STATE_FILE as STATE_FILE


def save_state(directory: Path, state: dict[str, Any]) -> None:
    """Write ``state.pt`` atomically: a kill mid-write leaves the previous file (or none)."""
    with atomic_output(Path(directory) / STATE_FILE) as tmp:
        torch.save(state, tmp)


def load_state(directory: Path) -> dict[str, Any]:
    """Read a checkpoint's state; ``weights_only`` so a checkpoint cannot run code."""
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)


@dataclass
class Resumed:
    """Where a stage's loop continues: the epoch to start at and what earlier epochs left."""

    start_epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best_student: dict[str, torch.Tensor] | None = None
    tracker: dict[str, Any] | None = None  # BestTracker fields


def newest_state(
    candidates: Iterable[Path | str | None],
) -> tuple[Path, dict[str, Any]] | None:
    """Of checkpoint directories (``None`` entries skipped), the one whose ``state.pt`` records
    the latest epoch, with that state; None when none reads whole.

    Ordered by the ``epoch`` inside the state, never by the directory's name (Ray names them
    by wall-clock time) nor by which one Ray registered: a driver killed after a checkpoint was
    written, before Ray's snapshot, leaves the newest one unregistered. Unreadable (half
    copied, or holding more than tensors and plain data) checkpoints are skipped. On equal
    epochs the earlier candidate wins.
    """
    best: tuple[Path, dict[str, Any]] | None = None
    seen: set[Path] = set()
    for candidate in candidates:
        if candidate is None:
            continue
        path = Path(candidate)
        if path.resolve() in seen or not (path / STATE_FILE).is_file():
            continue
        seen.add(path.resolve())
        try:
            state = load_state(path)
            epoch = int(state["epoch"])
        except Exception:  # a truncated file from a kill mid-copy: fall back to another one
            continue
        if best is None or epoch > int(best[1]["epoch"]):
            best = (path, state)
    return best


def stage_checkpoints(directory: Path) -> list[Path]:
    """The checkpoint directories Ray Train (or a killed run) left in a stage directory."""
    return sorted(p for p in Path(directory).glob(CHECKPOINT_GLOB) if p.is_dir())


def latest_checkpoint(directory: Path) -> Path | None:
    """The newest complete checkpoint an earlier (perhaps killed) run left in a stage
    directory, by its recorded epoch (see :func:`newest_state`).

    Ray restores from the checkpoints its controller registered, but a driver killed between
    writing a checkpoint and Ray's snapshot, or a worker killed right after writing one, leaves
    a checkpoint Ray does not know about; this finds it.
    """
    found = newest_state(stage_checkpoints(directory))
    return found[0] if found is not None else None


def final_state(
    registered: Path | str | None, stage_directory: Path, resumed_from: Path | str | None = None
) -> dict[str, Any] | None:
    """What a finished stage collects: the newest state by epoch among Ray's registered
    checkpoint (``registered``), every complete checkpoint in ``stage_directory`` and the state
    the stage continued from (``resumed_from``: PBT continuing a trial whose last epoch was the
    final one trains nothing and ends with that state). None when there is none."""
    found = newest_state([registered, *stage_checkpoints(stage_directory), resumed_from])
    return found[1] if found is not None else None


def restore(
    config: dict[str, Any], core: nn.Module, optimizer: Any, scheduler: Any, rank: int = 0
) -> Resumed:
    """Load the newest state a worker group can resume from into the loop's objects: Ray
    Train's checkpoint (a restarted worker group) or the newest complete checkpoint in
    ``config['stage_dir']`` (see :func:`latest_checkpoint`), whichever has the later epoch;
    ``config['resume_from']``, a checkpoint directory, is read too when given."""
    import ray.train

    states = []
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            states.append(load_state(Path(directory)))
    on_disk = latest_checkpoint(Path(config["stage_dir"])) if config.get("stage_dir") else None
    for path in (on_disk, config.get("resume_from")):
        if path:
            states.append(load_state(Path(path)))
    if not states:
        return Resumed()
    # the first of equal epochs
    newest = max(states, key=lambda s: int(s["epoch"]))
    return apply_state(newest, core, optimizer, scheduler, rank)


def rng_snapshot() -> dict[str, Any]:
    """This process's torch random state: CPU, and every CUDA device's when there are any."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def restore_rng(state: dict[str, Any], rank: int) -> bool:
    """Continue ``rank``'s random streams (dropout, augmentation noise) where the checkpoint
    left them; False when the checkpoint has none for this rank (a worker group that grew, or
    a checkpoint from before per-rank states): the caller's seeding stands."""
    per_rank = state.get("rng_states")
    if per_rank is None:
        if rank == 0 and "torch_rng" in state:  # a checkpoint of rank 0's CPU state only
            torch.set_rng_state(state["torch_rng"])
            return True
        return False
    if rank >= len(per_rank):
        return False
    mine = per_rank[rank]
    torch.set_rng_state(mine["cpu"])
    if mine.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(mine["cuda"])
    return True


def apply_state(
    state: dict[str, Any], core: nn.Module, optimizer: Any, scheduler: Any, rank: int = 0
) -> Resumed:
    """Load one checkpoint's state into the loop's objects; where the loop continues."""
    core.load_state_dict(state["distiller"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    restore_rng(state, rank)
    return Resumed(
        start_epoch=int(state["epoch"]) + 1,
        history=list(state["history"]),
        best_student=state["best_student"],
        tracker=dict(state["tracker"]),
    )


def epoch_state(
    *,
    epoch: int,
    core: nn.Module,
    optimizer: Any,
    scheduler: Any,
    tracker: Any,
    history: list[dict[str, Any]],
    best_student: dict[str, torch.Tensor] | None,
    rng_states: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything :func:`apply_state` needs to continue after ``epoch``; ``rng_states`` are
    every rank's :func:`rng_snapshot`, in rank order."""
    return {
        "epoch": epoch,
        "distiller": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "tracker": tracker.state(),
        "history": history,
        "best_student": best_student,
        "final_student": core.student.state_dict(),
        "rng_states": rng_states if rng_states is not None else [rng_snapshot()],
    }


def report_epoch(rank: int, metrics: dict[str, Any], state: dict[str, Any]) -> None:
    """Report one epoch to Ray Train; rank 0 attaches ``state`` (:func:`epoch_state`) as the
    checkpoint that :func:`restore` reads (every rank must report, or the others wait)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as tmp:
        save_state(Path(tmp), state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

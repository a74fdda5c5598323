"""Training state in and out of a checkpoint directory (tensors and plain data only)."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

STATE_FILE = "state.pt"


def save_state(directory: Path, state: dict[str, Any]) -> None:
    torch.save(state, Path(directory) / STATE_FILE)


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


def restore(config: dict[str, Any], core: nn.Module, optimizer: Any, scheduler: Any) -> Resumed:
    """Load Ray Train's checkpoint (a restarted worker group) or the ``resume_from`` directory a
    killed driver left (see ``stage.latest_checkpoint``) into the loop's objects."""
    import ray.train

    state = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state = load_state(Path(directory))
    elif config.get("resume_from"):
        state = load_state(Path(config["resume_from"]))
    if state is None:
        return Resumed()
    core.load_state_dict(state["distiller"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return Resumed(
        start_epoch=int(state["epoch"]) + 1,
        history=list(state["history"]),
        best_student=state["best_student"],
        tracker=dict(state["tracker"]),
    )


def report_epoch(
    rank: int,
    metrics: dict[str, Any],
    *,
    epoch: int,
    core: nn.Module,
    optimizer: Any,
    scheduler: Any,
    tracker: Any,
    history: list[dict[str, Any]],
    best_student: dict[str, torch.Tensor] | None,
) -> None:
    """Report one epoch to Ray Train; rank 0 attaches the checkpoint that :func:`restore` reads
    (every rank must report, or the others wait). ``core`` holds the model as ``core.student``;
    ``tracker`` is the loop's ``BestTracker``."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    state = {
        "epoch": epoch,
        "distiller": core.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "tracker": tracker.state(),
        "history": history,
        "best_student": best_student,
        "final_student": core.student.state_dict(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        save_state(Path(tmp), state)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

"""Training state in and out of a checkpoint directory (tensors and plain data only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

STATE_FILE = "state.pt"


def save_state(directory: Path, state: dict[str, Any]) -> None:
    torch.save(state, Path(directory) / STATE_FILE)


def load_state(directory: Path) -> dict[str, Any]:
    """Read a checkpoint's state; ``weights_only`` so a checkpoint cannot run code."""
    return torch.load(Path(directory) / STATE_FILE, map_location="cpu", weights_only=True)

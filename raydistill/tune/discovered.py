"""What a PBT search discovered: the temperature and alpha its best trial actually trained with.

Under Population Based Training a trial's values change during training: a poor trial continues
from a good trial's checkpoint with perturbed values. The best student's lineage (the epochs of
every trial it continued from, then its own) is in the ``history.json`` of its last run
directory, one temperature and alpha per epoch; as ``piecewise`` schedules they make the tuned
job replay that lineage from epoch 0.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from raydistill.files import read_json
from raydistill.tune.space import Dimension

# job fields whose per-epoch value every history row records, by the schedule they belong to
SCHEDULED = {("distill", "temperature"): "temperature", ("distill", "alpha"): "alpha"}


def lineage_history(trials_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    """The per-epoch history of the student a PBT trial ended with: the ``student/history.json``
    of its newest generation (``<trial>``, ``<trial>.g1``, ...); [] if it wrote none."""
    pattern = re.compile(rf"^{re.escape(trial_id)}(?:\.g(\d+))?$")
    generations = []
    for directory in trials_dir.glob(f"{trial_id}*"):
        match = pattern.match(directory.name)
        if match and (directory / "student" / "history.json").is_file():
            generations.append((int(match.group(1) or 0), directory))
    if not generations:
        return []
    _, newest = max(generations)
    return read_json(newest / "student" / "history.json", "stage history")


def as_piecewise(values: list[float]) -> dict[str, Any]:
    """Per-epoch values as a schedule mapping: a constant when they never change, else
    ``piecewise`` with the epochs where they do."""
    changes = {i: v for i, v in enumerate(values) if i > 0 and v != values[i - 1]}
    if not changes:
        return {"kind": "constant", "start": float(values[0])}
    return {"kind": "piecewise", "start": float(values[0]), "changes": changes}


def discovered_schedules(
    history: list[dict[str, Any]], mutated: list[Dimension]
) -> dict[str, dict[str, Any]]:
    """``{job key: schedule mapping}`` for each of temperature and alpha that PBT perturbed
    (some dimension of ``mutated`` lies in it), from the per-epoch values in ``history``."""
    found: dict[str, dict[str, Any]] = {}
    for prefix, column in SCHEDULED.items():
        if not any(d.path[: len(prefix)] == prefix for d in mutated):
            continue
        values = [float(row[column]) for row in history if column in row]
        if values:
            found[".".join(prefix)] = as_piecewise(values)
    return found

"""Job files for the tests: the quickstart job (``jobs/digits.yaml``) with changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]

# The quickstart at end-to-end test size: a 4-epoch teacher, 10-epoch students on the labelled
# share, 2 DDP workers, one teacher actor (tests/conftest.py trains this job's teacher once per
# session).
DIGITS_SHORT: dict[str, Any] = {
    "data.labelled_fraction": 0.1,
    "teacher.train": {"epochs": 4},
    "train.epochs": 10,
    "train.baseline": True,
    "scaling.workers": 2,
    "scaling.teacher_pool": {"min_actors": 1, "max_actors": 1, "num_cpus": 0.5},
}


def write_digits_job(
    directory: Path, changes: dict[str, Any] | None = None, name: str = "job"
) -> Path:
    """Write the quickstart job named ``name``, its runs under ``directory/runs``, with
    ``changes`` (dotted keys: ``{"train.epochs": 2}``) applied; returns the YAML's path.
    Its students see every label unless ``changes`` set ``data.labelled_fraction``: tests of
    other features train a few epochs, where the labelled share's students learn slowly."""
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
    raw["data"]["labelled_fraction"] = None
    raw["name"] = name
    raw["output"] = {"storage_path": str(directory / "runs")}
    for key, value in (changes or {}).items():
        node = raw
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path

"""Job files for the tests: the quickstart job (``jobs/digits.yaml``) with changes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]



def write_digits_job(
    directory: Path, changes: dict[str, Any] | None = None, name: str = "job"
) -> Path:
    """Write the quickstart job named ``name``, its runs under ``directory/runs``, with
    ``changes`` (dotted keys: ``{"train.epochs": 2}``) applied; returns the YAML's path."""
    raw = yaml.safe_load((ROOT / "jobs" / "digits.yaml").read_text())
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

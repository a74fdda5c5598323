"""The resolved job as flat tracker parameters: ``train.lr = 0.01``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# MLflow refuses longer parameter values (6000 characters); a tune space or a long path list
# is cut rather than failing the run
MAX_VALUE_CHARS = 6000


def flat_params(raw: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``raw`` (a job as ``model_dump(mode="json")`` gives it) as ``section.key`` -> value
    strings. Sections nest into dotted keys; a list is one value (JSON, as in the job file's
    inline form); null is ``null``, booleans ``true``/``false`` (YAML's spelling)."""
    out: dict[str, str] = {}
    for key, value in raw.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = _text(value)[:MAX_VALUE_CHARS]
    return out


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def job_params(job: Any) -> dict[str, str]:
    """A :class:`~raydistill.config.JobConfig`'s flattened parameters."""
    return flat_params(job.model_dump(mode="json"))

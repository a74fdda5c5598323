"""What a search directory records about itself, and its outputs read back.

``search_job.json`` holds the resolved job a search started with and its hash: Tune's restored
search keeps its old space and would run its unfinished trials on whatever the job is now, so
``tune --resume`` compares the two first. ``best.yaml`` and ``summary.json`` read back with a
one-line error naming a damaged file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, JobError, job_from_dict
from raydistill.files import atomic_write_json, read_json, read_yaml
from raydistill.rundir import SEARCH_JOB as SEARCH_JOB
from raydistill.rundir import SEARCH_SUMMARY as SUMMARY_JSON

Log = Callable[[str], None]
SEARCH_JOB_FORMAT = "raydistill.search_job/1"


def job_sha256(raw: dict[str, Any]) -> str:
    """A stable hash of a resolved job (its dict, keys sorted)."""
    return hashlib.sha256(json.dumps(raw, sort_keys=True).encode("utf-8")).hexdigest()


def _changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += _changed_keys(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


def record_search_job(tune_dir: Path, raw: dict[str, Any]) -> Path:
    """Write the resolved job a search starts with (and its hash) into its directory, so that
    ``--resume`` can tell whether the job changed since."""
    record = {"format": SEARCH_JOB_FORMAT, "job_sha256": job_sha256(raw), "job": raw}
    return atomic_write_json(Path(tune_dir) / SEARCH_JOB, record)


def check_search_job(tune_dir: Path, raw: dict[str, Any], log: Log = print) -> None:
    """Refuse to resume a search whose job changed since it started: Tune's restored search
    keeps its old space and would run the unfinished trials on the new base job, a mix
    reported as one search. The one-line error names the keys that differ."""
    path = Path(tune_dir) / SEARCH_JOB
    if not path.is_file():
        log(
            f"[tune] note: {tune_dir} has no {SEARCH_JOB} (an older raydistill started the "
            "search): whether the job changed since cannot be checked"
        )
        return
    record = read_json(path, "search record")
    if not isinstance(record, dict) or not isinstance(record.get("job"), dict):
        raise JobError(f"search record {path} is damaged (no job in it)")
    if record.get("job_sha256") == job_sha256(raw):
        return
    keys = _changed_keys(record["job"], raw) or ["(the recorded hash)"]
    shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
    raise JobError(
        f"--resume: the job changed since the search in {tune_dir} started ({shown} differ); "
        "a resumed search keeps its old space and would run its unfinished trials on the new "
        "job. Undo the change, or start over with --fresh"
    )


def read_summary(tune_dir: Path) -> dict[str, Any]:
    """A finished search's ``summary.json``; a damaged one is a one-line error naming it."""
    path = Path(tune_dir) / SUMMARY_JSON
    summary = read_json(path, "search summary")
    if not isinstance(summary, dict):
        raise JobError(f"search summary {path} is damaged (not a mapping)")
    return summary


def read_best_job(path: Path) -> JobConfig:
    """The tuned job a search wrote (``best.yaml``); a damaged file is a one-line error."""
    raw = read_yaml(path, "tuned job")
    if not isinstance(raw, dict):
        raise JobError(f"tuned job {path} is damaged (not a mapping of sections)")
    return job_from_dict(raw, str(path))

"""What each stage was trained from, recorded so that a rerun of an edited job cannot silently
reuse (or resume) a stage trained with other settings.

A stage's fingerprint (``<stage>/fingerprint.json``) holds what its weights depend on: the task,
the seed, the data section and a hash of the rows it read, its model spec, its train section,
and for the distilled student the distill section and a hash of the teacher's weights. Settings
that do not change what is learned (scaling, output, tune, the baseline switch, the student's
target) are left out. A rerun compares before Ray starts; a difference is refused, naming every
changed key, unless the user continues with the change (``--allow-changed``) or retrains the
stage (``--fresh-stage``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from raydistill.config import JobConfig, JobError
from raydistill.files import file_sha256
from raydistill.rundir import FINGERPRINT_FILE, stage_dir
from raydistill.tasks import get_task
from raydistill.tasks.base import Splits

Log = Callable[[str], None]
ROLES = ("teacher", "student", "baseline")
# a stage trained again makes these stale too (the teacher's cache lives beside the stages)
DEPENDENTS = {"teacher": ("teacher", "student"), "student": ("student",), "baseline": ("baseline",)}


def _model(spec: Any) -> dict[str, Any]:
    return spec.model_dump(mode="json", exclude={"train", "target"})


def stage_inputs(
    job: JobConfig, role: str, splits: Splits, teacher_weights: Path | None = None
) -> dict[str, Any]:
    """What ``role``'s weights depend on, as plain data (``teacher_weights``: the file the
    distilled student learns from, when it exists)."""
    inputs: dict[str, Any] = {
        "task": job.task,
        "seed": job.seed,
        # unset, the share is left out: runs recorded before it existed still match; the
        # teacher learns every label, so the share the student sees never changes it
        "data": job.data.model_dump(
            mode="json",
            exclude={"labelled_fraction"}
            if role == "teacher" or job.data.labelled_fraction is None
            else None,
        ),
        "rows": get_task(job).data_fingerprint(splits),
    }
    if role == "teacher":
        inputs["model"] = _model(job.teacher)
        inputs["train"] = job.teacher_train().model_dump(mode="json", exclude={"baseline"})
        return inputs
    inputs["model"] = _model(job.student)
    inputs["train"] = job.train.model_dump(mode="json", exclude={"baseline"})
    if role == "student":
        inputs["distill"] = job.distill.model_dump(mode="json")
        exists = teacher_weights is not None and teacher_weights.is_file()
        inputs["teacher_weights"] = file_sha256(teacher_weights) if exists else None
    return inputs


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key: old -> new`` for every leaf that differs (nested mappings compared by key)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            where = f"{prefix}.{key}" if prefix else key
            out += differences(old.get(key), new.get(key), where)
        return out
    if old == new:
        return []
    return [f"{prefix}: {_short(old)} -> {_short(new)}"]


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


def read_fingerprint(run_dir: Path, role: str) -> dict[str, Any] | None:
    path = stage_dir(run_dir, role) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise JobError(
            f"{path}: unreadable stage fingerprint ({exc}); rerun with --fresh-stage {role}"
        ) from None


def record_fingerprint(run_dir: Path, role: str, inputs: dict[str, Any]) -> None:
    """Write the stage's fingerprint (before it trains: an unfinished stage has one too)."""
    from raydistill.files import atomic_write_text

    directory = stage_dir(run_dir, role)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_text(directory / FINGERPRINT_FILE, json.dumps(inputs, indent=1, sort_keys=True))


def changed_stages(
    job: JobConfig, splits: Splits, roles: list[str], teacher_weights: Path | None
) -> dict[str, list[str]]:
    """Stages among ``roles`` whose recorded fingerprint differs from this job's, with the
    changed keys. Stages never started, or started before fingerprints existed, are absent."""
    changed = {}
    for role in roles:
        old = read_fingerprint(job.run_dir, role)
        if old is None:
            continue
        new = stage_inputs(job, role, splits, teacher_weights)
        # a stage continued with --allow-changed trains on with the settings it continued with
        diff = differences(old.get("continued_with") or old, new)
        if diff:
            changed[role] = diff
    return changed


def check_unchanged(
    job: JobConfig,
    splits: Splits,
    roles: list[str],
    teacher_weights: Path | None,
    allow_changed: bool,
    log: Log,
) -> None:
    """Refuse (before Ray starts) to reuse or resume a stage trained with other settings, naming
    each changed key; with ``allow_changed`` say what carries over and go on."""
    changed = changed_stages(job, splits, roles, teacher_weights)
    if not changed:
        return
    lines = [f"[{role}] {'; '.join(diff)}" for role, diff in changed.items()]
    if not allow_changed:
        first = next(iter(changed))
        raise JobError(
            f"{job.run_dir}: this job differs from the one its stages were trained with: "
            + " | ".join(lines)
            + f". Rerun with --fresh-stage {first} to retrain it (and what depends on it), "
            "--fresh to start over, or --allow-changed to keep what was trained"
        )
    for line in lines:
        log(
            f"{line}: --allow-changed: a finished stage is reused as it was trained; an "
            "unfinished one resumes from its checkpoint (weights, optimizer state, epoch) and "
            "trains on with the new settings"
        )


def stages_to_retrain(fresh_stages: tuple[str, ...] | list[str]) -> list[str]:
    """The stages ``--fresh-stage`` removes: each named stage and those trained from it."""
    out: list[str] = []
    for role in fresh_stages:
        if role not in DEPENDENTS:
            raise JobError(f"--fresh-stage {role}: one of {', '.join(ROLES)}")
        out += [r for r in DEPENDENTS[role] if r not in out]
    return out

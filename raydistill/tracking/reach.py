"""Before anything trains: every tracker the job names must answer.

An unreachable MLflow server (or a W&B ``online`` run without a login) fails the command in
one line, naming the key, before Ray starts; with ``required: false`` it is one warning line
and the run trains without that tracker.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from raydistill.config import JobConfig, JobError

# one try, a short wait: a wrong port should fail in seconds, not after MLflow's retries
CHECK_TIMEOUT_S = 10


def check_trackers(job: JobConfig, log: Callable[[str], None]) -> JobConfig:
    """``job`` with every configured tracker checked; a tracker with ``required: false`` that
    does not answer is dropped (warned); a required one raises :class:`JobError`."""
    tracking = job.output.tracking
    for name, problem in (
        ("mlflow", _mlflow_problem(job) if tracking.mlflow else None),
        ("wandb", _wandb_problem(job) if tracking.wandb else None),
    ):
        if problem is None:
            continue
        key = f"output.tracking.{name}"
        if getattr(tracking, name).required:
            raise JobError(f"{key}: {problem}")
        log(f"warning: {key}: {problem}; training without it ({key}.required is false)")
        tracking = tracking.model_copy(update={name: None})
    if tracking is job.output.tracking:
        return job
    output = job.output.model_copy(update={"tracking": tracking})
    return job.model_copy(update={"output": output})


@contextmanager
def _one_quick_try() -> Iterator[None]:
    """MLflow's HTTP client reads its retry count and timeout from the environment."""
    saved = {k: os.environ.get(k) for k in _QUICK}
    os.environ.update(_QUICK)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


_QUICK = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": str(CHECK_TIMEOUT_S),
}


def _mlflow_problem(job: JobConfig) -> str | None:
    settings = job.output.tracking.mlflow
    assert settings is not None
    try:
        from raydistill.tracking.mlflow_runs import client, resolved_uri
    except ImportError:
        return "needs MLflow: pip install 'raydistill[tracking]'"
    uri = resolved_uri(settings.tracking_uri)
    try:
        with _one_quick_try():
            client(uri).get_experiment_by_name(settings.experiment or job.name)
    except Exception as exc:  # whatever the client raises, the user gets its reason
        return f"cannot reach {uri}: {short_reason(str(exc))}"
    return None


def _wandb_problem(job: JobConfig) -> str | None:
    settings = job.output.tracking.wandb
    assert settings is not None
    try:
        import wandb
    except ImportError:
        return "needs wandb: pip install 'raydistill[tracking]'"
    if settings.mode == "offline":
        return None
    try:
        wandb.Api(timeout=CHECK_TIMEOUT_S).viewer  # noqa: B018 (asks the server who logged in)
    except Exception as exc:
        return f"mode online: {short_reason(str(exc))}"
    return None


def short_reason(text: str) -> str:
    """The cause inside a client's wrapped error (``Connection refused``), one line."""
    found = re.search(r"\[Errno -?\d+\] ([^\"')\]]+)", text)
    if found:
        return found.group(1).strip().rstrip(".")
    if "timed out" in text.lower():
        return "timed out"
    first = text.strip().splitlines()[0] if text.strip() else "no answer"
    return first if len(first) <= 200 else first[:197] + "..."

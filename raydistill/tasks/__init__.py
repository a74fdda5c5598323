"""Tasks: what differs between classification, detection, cross-modal and causal-LM jobs.

``TASKS`` maps a job's ``task`` to the module and class that implement
:class:`~raydistill.tasks.base.Task`; a task's module is imported the first time a job needs it
(detection pulls in torchvision's detectors and pycocotools).
"""

from __future__ import annotations

import functools
import importlib

from raydistill.config import JobConfig
from raydistill.tasks.base import COMMANDS, StepOutput, SummaryTable, Task

TASKS: dict[str, str] = {
    "classification": "raydistill.tasks.classification:ClassificationTask",
    "cross_modal": "raydistill.tasks.cross_modal:CrossModalTask",
    "detection": "raydistill.tasks.detection:DetectionTask",
    "causal_lm": "raydistill.tasks.causal_lm:CausalLMTask",
}


@functools.cache
def task_named(name: str) -> Task:
    """The task registered as ``name`` (one instance per process)."""
    module, _, cls = TASKS[name].partition(":")
    return getattr(importlib.import_module(module), cls)()


def get_task(job: JobConfig) -> Task:
    """The task of ``job``."""
    return task_named(job.task)


def capabilities() -> dict[str, frozenset[str]]:
    """Task name -> the commands it runs (the table ``docs/`` and refusals come from)."""
    return {name: task_named(name).commands for name in TASKS}


__all__ = [
    "COMMANDS",
    "TASKS",
    "StepOutput",
    "SummaryTable",
    "Task",
    "capabilities",
    "get_task",
    "task_named",
]

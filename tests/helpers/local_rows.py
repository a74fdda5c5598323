"""Rows for the shared epoch loop without Ray: the columns a task's Ray datasets would carry,
held in memory (:class:`raydistill.train.context.LocalShard`)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from raydistill.columns import INPUT, LABEL, ROW_ID, TEACHER_INPUT, TEACHER_LOGITS
from raydistill.config import JobConfig
from raydistill.data.arrays import LabelledArrays, model_tensor
from raydistill.data.text import for_model
from raydistill.train.context import LocalShard


def classification_rows(
    job: JobConfig, arrays: LabelledArrays, teacher: torch.nn.Module | None = None
) -> LocalShard:
    """The student's rows of ``arrays``; with ``teacher``, its logits as the pool adds them
    (and a cross-modal teacher's images as ``teacher_input``)."""
    columns: dict[str, Any] = {
        INPUT: for_model(job, job.student, arrays).inputs,
        LABEL: arrays.labels,
        ROW_ID: np.arange(len(arrays)),
    }
    if teacher is not None:
        teacher_view = for_model(job, job.teacher, arrays).inputs
        if job.teacher.text_tokenizer is None and arrays.texts is not None:
            columns[TEACHER_INPUT] = teacher_view
        with torch.no_grad():
            columns[TEACHER_LOGITS] = teacher.eval()(model_tensor(teacher_view)).numpy()
    return LocalShard(columns)


def detection_rows(rows: dict[str, list[Any]]) -> LocalShard:
    """Decoded detection rows (:func:`raydistill.detection.scoring.load_images`); bytes stay
    Python objects (a fixed-width numpy bytes array would drop trailing zero bytes)."""
    columns = {}
    for key, values in rows.items():
        array = np.empty(len(values), dtype=object)
        array[:] = values
        columns[key] = array
    return LocalShard(columns)

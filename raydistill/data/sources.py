"""Turn a job's data section into splits and Ray datasets with ``input``/``label`` rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from raydistill.config import DataConfig, JobError
from raydistill.data.arrays import LabelledArrays, split_arrays
from raydistill.data.digits import load_digits_arrays

if TYPE_CHECKING:
    import ray.data

INPUT, LABEL, ROW_ID = "input", "label", "row_id"


def load_splits(data: DataConfig) -> dict[str, LabelledArrays]:
    """The job's train/val/test splits as arrays."""
    if data.source == "digits":
        arrays = load_digits_arrays()
    else:  # pragma: no cover - guarded by the schema
        raise JobError(f"data.source: unknown source '{data.source}'")
    if data.num_classes is not None and data.num_classes != arrays.num_classes:
        arrays = LabelledArrays(arrays.inputs, arrays.labels, data.num_classes)
    return split_arrays(arrays, data.split.val, data.split.test, data.split.seed)


def to_arrow(arrays: LabelledArrays) -> pa.Table:
    """Rows of ``input`` (a fixed-shape tensor column), ``label`` and a stable ``row_id``."""
    from ray.data.extensions import ArrowTensorArray

    return pa.table(
        {
            INPUT: ArrowTensorArray.from_numpy(np.ascontiguousarray(arrays.inputs)),
            LABEL: pa.array(arrays.labels, type=pa.int64()),
            ROW_ID: pa.array(np.arange(len(arrays)), type=pa.int64()),
        }
    )


def to_dataset(arrays: LabelledArrays, blocks: int = 4) -> ray.data.Dataset:
    """A Ray dataset of the arrays, cut into ``blocks`` blocks so work can spread."""
    import ray.data

    table = to_arrow(arrays)
    step = max(1, -(-table.num_rows // blocks))
    return ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])

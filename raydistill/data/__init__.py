"""Data sources: splits as arrays and as Ray datasets of ``input``/``label``/``row_id`` rows."""

from raydistill.data.arrays import LabelledArrays, split_arrays
from raydistill.data.digits import load_digits_arrays
from raydistill.data.sources import INPUT, LABEL, ROW_ID, load_splits, to_dataset

__all__ = [
    "INPUT",
    "LABEL",
    "ROW_ID",
    "LabelledArrays",
    "load_digits_arrays",
    "load_splits",
    "split_arrays",
    "to_dataset",
]

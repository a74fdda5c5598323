"""Data: labelled arrays and their split, sources, augmentation and class balancing.

Kept import-light (``raydistill.config`` imports the augmentation ops from here); the Ray
dataset helpers live in :mod:`raydistill.data.sources`.
"""

from raydistill.data.arrays import LabelledArrays, split_arrays
from raydistill.data.digits import load_digits_arrays

__all__ = ["LabelledArrays", "load_digits_arrays", "split_arrays"]

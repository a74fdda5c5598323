"""In-memory labelled arrays and their seeded, stratified train/val/test split."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class LabelledArrays:
    """Inputs [N, ...] (float32) with integer labels [N] in ``range(num_classes)``."""

    inputs: np.ndarray
    labels: np.ndarray
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")
        if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= self.num_classes):
            bad = int(np.flatnonzero((self.labels < 0) | (self.labels >= self.num_classes))[0])
            raise ValueError(
                f"row {bad}: label {self.labels[bad]} is outside num_classes={self.num_classes}"
            )
        if np.issubdtype(self.inputs.dtype, np.floating) and not np.isfinite(self.inputs).all():
            # A NaN pixel would surface epochs later as a NaN loss; name its row now instead.
            finite = np.isfinite(self.inputs.reshape(len(self.inputs), -1)).all(axis=1)
            bad = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"row {bad}: input holds NaN or infinite values")

    def __len__(self) -> int:
        return len(self.labels)

    def fingerprint(self) -> str:
        """sha256 of the inputs, labels and class count: equal data, equal fingerprint."""
        digest = hashlib.sha256()
        for array in (self.inputs, self.labels):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        digest.update(str(self.num_classes).encode())
        return digest.hexdigest()

    def take(self, index: np.ndarray) -> LabelledArrays:
        return LabelledArrays(self.inputs[index], self.labels[index], self.num_classes)


def split_arrays(
    data: LabelledArrays, val: float, test: float, seed: int
) -> dict[str, LabelledArrays]:
    """Stratified train/val/test split; the same seed always gives the same rows."""
    index = np.arange(len(data))
    rest, test_idx = train_test_split(
        index, test_size=test, random_state=seed, stratify=data.labels
    )
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1 - test), random_state=seed, stratify=data.labels[rest]
    )
    return {"train": data.take(train_idx), "val": data.take(val_idx), "test": data.take(test_idx)}

"""In-memory labelled arrays and their seeded, stratified train/val/test split."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class LabelledArrays:
    """Inputs [N, ...] (float32) with integer labels [N] in ``range(num_classes)``.

    Text rows carry their strings in ``texts`` [N] (an object array); their ``inputs`` are
    [N, 0] unless the rows pair each text with an image (cross-modal jobs).
    """

    inputs: np.ndarray
    labels: np.ndarray
    num_classes: int
    texts: np.ndarray | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) != len(self.labels):
            raise ValueError(f"{len(self.inputs)} inputs but {len(self.labels)} labels")
        if self.texts is not None and len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
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
        """sha256 of the inputs, labels and class count: equal data, equal fingerprint.
        Computed once per instance (the arrays are not changed in place): each stage's
        fingerprint and the cache key ask for it."""
        cached = self.__dict__.get("_fingerprint")
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        for array in (self.inputs, self.labels):
            digest.update(f"{array.dtype}{array.shape}".encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        for text in self.texts if self.texts is not None else ():
            digest.update(str(text).encode("utf-8") + b"\0")
        digest.update(str(self.num_classes).encode())
        self.__dict__["_fingerprint"] = digest.hexdigest()  # frozen: no setattr
        return self.__dict__["_fingerprint"]

    @property
    def nbytes(self) -> int:
        """Bytes of the inputs and labels."""
        return int(self.inputs.nbytes + self.labels.nbytes)

    def class_counts(self) -> np.ndarray:
        """Rows per class, int64 [num_classes]."""
        return np.bincount(self.labels, minlength=self.num_classes)

    def head(self, rows: int) -> LabelledArrays:
        """The first ``rows`` rows (fewer when there are fewer)."""
        return self.take(np.arange(min(rows, len(self))))

    def iter_arrays(self, batch_rows: int = 512) -> Iterator[LabelledArrays]:
        """The rows ``batch_rows`` at a time, in order (as a streamed split yields them)."""
        for start in range(0, len(self), batch_rows):
            yield self.take(np.arange(start, min(start + batch_rows, len(self))))

    def take(self, index: np.ndarray) -> LabelledArrays:
        texts = self.texts[index] if self.texts is not None else None
        return LabelledArrays(self.inputs[index], self.labels[index], self.num_classes, texts)


def split_arrays(
    data: LabelledArrays, val: float, test: float, seed: int
) -> dict[str, LabelledArrays]:
    """Stratified train/val/test split; the same seed always gives the same rows."""
    from sklearn.model_selection import train_test_split  # see data/digits.py: not at import

    index = np.arange(len(data))
    rest, test_idx = train_test_split(
        index, test_size=test, random_state=seed, stratify=data.labels
    )
    train_idx, val_idx = train_test_split(
        rest, test_size=val / (1 - test), random_state=seed, stratify=data.labels[rest]
    )
    return {"train": data.take(train_idx), "val": data.take(val_idx), "test": data.take(test_idx)}


def model_tensor(inputs: np.ndarray) -> torch.Tensor:
    """A writable tensor of model inputs: token rows stay int64, anything else is float32."""
    dtype = np.int64 if np.issubdtype(np.asarray(inputs).dtype, np.integer) else np.float32
    # np.array copies: Ray hands read-only arrays and torch wants writable memory.
    return torch.from_numpy(np.array(inputs, dtype=dtype))


def register_tensor_types() -> None:
    """Make pyarrow know Ray's tensor column type before a file is read: unregistered, a
    Parquet tensor column reads back as flat lists and loses its shape."""
    import ray.data.extensions  # noqa: F401  (registers ArrowTensorType on import)

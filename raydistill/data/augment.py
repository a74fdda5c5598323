"""Seeded augmentation of image batches [N, C, H, W], applied before the teacher.

Ray-free. Every row draws from its own generator seeded by (seed, row_id, view), so a row's
augmented input is the same wherever and however often it is computed: the teacher and the
student see one input, and a rerun sees the same one. A job asks for ``views`` augmented copies
of the training set; epoch ``e`` trains on view ``e % views``, so each epoch sees fresh
augmentation while the teacher labels every view once (``once`` or ``cache``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from raydistill.columns import VIEW as VIEW  # re-exported: the column augment adds


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RandomCrop(_Op):
    """Pad by ``padding`` pixels (zeros) and crop back to the original size at a random offset."""

    op: Literal["random_crop"] = "random_crop"
    padding: int = Field(2, ge=1)


class HorizontalFlip(_Op):
    op: Literal["hflip"] = "hflip"
    p: float = Field(0.5, ge=0, le=1)


class RandomErasing(_Op):
    """Zero a random rectangle covering ``scale`` of the image with probability ``p``."""

    op: Literal["random_erasing"] = "random_erasing"
    p: float = Field(0.5, ge=0, le=1)
    scale: tuple[float, float] = (0.02, 0.2)


class GaussianNoise(_Op):
    op: Literal["gaussian_noise"] = "gaussian_noise"
    std: float = Field(0.05, ge=0)


class Normalize(_Op):
    """``(x - mean[c]) / std[c]`` per channel; one value each applies to every channel."""

    op: Literal["normalize"] = "normalize"
    mean: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    std: list[Annotated[float, Field(gt=0)]] = Field(default_factory=lambda: [1.0], min_length=1)

    def apply(self, image: np.ndarray) -> np.ndarray:
        channels = image.shape[0]
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, channels):
                raise ValueError(
                    f"normalize: {len(values)} {name} values for {channels}-channel images"
                )
        shape = (-1, 1, 1)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        return (image - mean) / np.asarray(self.std, np.float32).reshape(shape)


AugmentOp = Annotated[
    RandomCrop | HorizontalFlip | RandomErasing | GaussianNoise | Normalize,
    Field(discriminator="op"),
]


def _one(image: np.ndarray, ops: Sequence[AugmentOp], rng: np.random.Generator) -> np.ndarray:
    out = image
    _, h, w = image.shape
    for op in ops:
        if isinstance(op, RandomCrop):
            pad = op.padding
            padded = np.pad(out, ((0, 0), (pad, pad), (pad, pad)))
            dy, dx = rng.integers(0, 2 * pad + 1, size=2)
            out = padded[:, dy : dy + h, dx : dx + w]
        elif isinstance(op, HorizontalFlip):
            if rng.random() < op.p:
                out = out[:, :, ::-1]
        elif isinstance(op, RandomErasing):
            if rng.random() < op.p:
                area = rng.uniform(*op.scale) * h * w
                eh = int(np.clip(round(np.sqrt(area)), 1, h))
                ew = int(np.clip(round(area / eh), 1, w))
                y, x = rng.integers(0, h - eh + 1), rng.integers(0, w - ew + 1)
                out = out.copy()
                out[:, y : y + eh, x : x + ew] = 0.0
        elif isinstance(op, GaussianNoise):
            out = out + rng.normal(0.0, op.std, size=out.shape).astype(np.float32)
        elif isinstance(op, Normalize):
            out = op.apply(out)
    return np.ascontiguousarray(out, dtype=np.float32)


def augment_batch(
    inputs: np.ndarray, row_ids: np.ndarray, view: int, seed: int, ops: Sequence[AugmentOp]
) -> np.ndarray:
    """Augmented copy of inputs [N, C, H, W]; row i depends only on (seed, row_ids[i], view)."""
    if inputs.ndim != 4:
        raise ValueError(f"augmentation expects images [N, C, H, W], got {inputs.shape}")
    return (
        np.stack(
            [
                _one(image, ops, np.random.default_rng([seed, int(row), view]))
                for image, row in zip(inputs, row_ids, strict=True)
            ]
        )
        if len(inputs)
        else inputs.astype(np.float32)
    )

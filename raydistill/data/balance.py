"""Class balancing while streaming: keep a share of frequent classes, repeat rare ones.

Ray-free. Every batch is resampled on its own (no full shuffle): each row of a frequent class is
kept with probability ``keep_ratio``; each row of a rare class is emitted ``floor(r)`` or
``floor(r) + 1`` times (stochastic rounding, expectation ``r``), where ``r`` lifts the class to
the target count. The generator is seeded by (seed, epoch, worker, step), so every epoch draws
a new sample and a rerun draws the same one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassBalancer:
    """Per-class keep probabilities [C] (in (0, 1]) and repeat factors [C] (>= 1)."""

    keep: np.ndarray
    repeat: np.ndarray
    target: float

    @classmethod
    def from_counts(
        cls,
        counts: np.ndarray,
        keep_ratio: float | None = None,
        repeat_rare: bool = True,
        target: float | None = None,
    ) -> ClassBalancer:
        """Balance classes toward ``target`` rows per class (default: the mean class count).

        Classes above the target keep ``keep_ratio`` of their rows (all of them when None);
        with ``repeat_rare``, classes below it are repeated up to the target.
        """
        counts = np.asarray(counts, dtype=np.float64)
        present = counts > 0
        goal = float(target if target is not None else counts[present].mean())
        keep = np.ones_like(counts)
        if keep_ratio is not None:
            keep[counts > goal] = keep_ratio
        repeat = np.ones_like(counts)
        if repeat_rare:
            rare = present & (counts < goal)
            repeat[rare] = goal / counts[rare]
        return cls(keep=keep, repeat=repeat, target=goal)

    def expected_counts(self, counts: np.ndarray) -> np.ndarray:
        """Rows per class expected to reach the trainer in one epoch."""
        return np.asarray(counts, dtype=np.float64) * self.keep * self.repeat

    def select(self, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Row indices (with repeats, in batch order) of a balanced draw from one batch."""
        labels = np.asarray(labels, dtype=np.int64)
        kept = rng.random(len(labels)) < self.keep[labels]
        factor = self.repeat[labels]
        copies = np.floor(factor).astype(np.int64)
        copies += rng.random(len(labels)) < (factor - copies)
        return np.repeat(np.arange(len(labels)), np.where(kept, copies, 0))


def balance_rng(seed: int, epoch: int, worker: int, step: int) -> np.random.Generator:
    """The generator for one batch: new every epoch, the same on a rerun."""
    return np.random.default_rng([seed, epoch, worker, step])

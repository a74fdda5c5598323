"""Was a distilled stage teacher-bound or student-bound? Decided from its epochs' figures.

The epoch loop times how long each worker waited inside the batch iterator (``wait_s``: the
teacher pool, the data plane or the reader did not have the next batch ready). When that wait
is a large share of the epoch, more teacher actors (or the cache) would speed training up;
when it is small, the students are the limit and more teacher actors would sit idle.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

# A wait share above this means the trainers spent a fifth of the epoch starved for batches:
# past measurement noise and the first batch's start-up, and worth adding teacher actors.
TEACHER_BOUND_SHARE = 0.2

Item = TypeVar("Item")


class WaitTimer:
    """Wraps a batch iterator and sums the seconds spent inside its ``next`` (one
    ``perf_counter`` pair per batch, so the cost per step is negligible)."""

    def __init__(self) -> None:
        self.wait_s = 0.0

    def wrap(self, batches: Iterable[Item]) -> Iterator[Item]:
        it = iter(batches)
        while True:
            asked = time.perf_counter()
            try:
                batch = next(it)
            except StopIteration:
                self.wait_s += time.perf_counter() - asked
                return
            self.wait_s += time.perf_counter() - asked
            yield batch


@dataclass(frozen=True)
class Boundness:
    """A stage's verdict and the figures it rests on (summed over its epochs)."""

    wait_s: float
    epoch_s: float
    threshold: float = TEACHER_BOUND_SHARE

    @property
    def wait_share(self) -> float:
        return self.wait_s / self.epoch_s if self.epoch_s > 0 else 0.0

    @property
    def verdict(self) -> str:
        return "teacher-bound" if self.wait_share > self.threshold else "student-bound"

    def line(self, stage: str, teacher_pass: str) -> str:
        hint = (
            "more teacher actors (scaling.teacher_pool) or distill.teacher_pass: cache would help"
            if self.verdict == "teacher-bound"
            else "more teacher actors would idle; add student workers to go faster"
        )
        return (
            f"[{stage}] {self.verdict} (teacher_pass: {teacher_pass}): trainers waited "
            f"{self.wait_s:.1f}s of {self.epoch_s:.1f}s for batches ({self.wait_share:.0%}, "
            f"threshold {self.threshold:.0%}); {hint}"
        )


def boundness(history: Sequence[dict[str, Any]]) -> Boundness | None:
    """The verdict over every epoch of ``history`` that recorded its wait; None if none did."""
    timed = [m for m in history if "wait_s" in m and "epoch_s" in m]
    if not timed:
        return None
    return Boundness(
        wait_s=sum(float(m["wait_s"]) for m in timed),
        epoch_s=sum(float(m["epoch_s"]) for m in timed),
    )

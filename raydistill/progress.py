"""Progress lines of long work: epochs, steps inside long epochs, teacher passes, cache builds.

Plain lines, the same in a terminal and in a CI log (no carriage returns, no bars), printed at
most every :data:`PROGRESS_EVERY_S` seconds, each with its rate and an ETA. The epoch loop
(:mod:`raydistill.train.loop`) and the teacher's passes (:mod:`raydistill.teacher.passes`,
:mod:`raydistill.teacher.cache`) format them here, so they read alike.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

PROGRESS_EVERY_S = 30.0  # a progress line at most this often (seconds)


def rate_text(count: float, seconds: float, unit: str) -> str:
    """``"480 rows/s"``: ``count`` per second over ``seconds``."""
    return f"{count / max(seconds, 1e-9):.0f} {unit}/s"


def eta_text(seconds: float) -> str:
    """``"eta 12s"``: seconds left, rounded up."""
    return f"eta {math.ceil(max(seconds, 0.0))}s"


class Throttle:
    """Says when a progress line is due: ``every_s`` seconds after the start or the last line
    (default: :data:`PROGRESS_EVERY_S` as it is when the throttle is made)."""

    def __init__(self, every_s: float | None = None) -> None:
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.last = 0.0

    def start(self, now: float) -> None:
        self.last = now

    def due(self, now: float) -> bool:
        """Whether a line is due at ``now`` (seconds); when it is, the next one is due
        ``every_s`` later."""
        if now - self.last < self.every_s:
            return False
        self.last = now
        return True


class RowProgress:
    """Rows done out of a known total, counted as they come back (from any thread), with a
    line to ``log`` when one is due: ``[teacher] labelled 512/1437 rows, 480 rows/s, eta 2s``.

    Work shorter than the throttle's interval prints nothing here: its closing line (the
    caller's) says it all. ``total`` None (not known up front) leaves the ETA out.
    """

    def __init__(
        self,
        name: str,
        what: str,
        total: int | None,
        log: Callable[[str], None],
        every_s: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.name, self.what, self.total, self.log, self.clock = name, what, total, log, clock
        self.throttle = Throttle(every_s)
        self.started = clock()
        self.throttle.start(self.started)
        self.done = 0
        self._lock = threading.Lock()  # train's and val's passes count from their own threads

    def add(self, rows: int) -> None:
        """Count ``rows`` more done; log a line when one is due."""
        with self._lock:
            self.done += rows
            now = self.clock()
            line = self.line(now) if self.throttle.due(now) else None
        if line is not None:
            self.log(line)

    def line(self, now: float) -> str:
        elapsed = now - self.started
        of = f"/{self.total}" if self.total is not None else ""
        rate = rate_text(self.done, elapsed, "rows")
        text = f"[{self.name}] {self.what} {self.done}{of} rows, {rate}"
        if self.total is not None and self.done:
            text += f", {eta_text((self.total - self.done) * elapsed / self.done)}"
        return text

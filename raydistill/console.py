"""The terminal while Ray runs: raydistill's own lines there, Ray's log noise in the run's log.

Ray prints a great deal a user does not need: deprecation warnings, log-dedup notices, its
actors' start-up chatter, Ray Data's and Ray Train's INFO lines, its C++ core's warnings. With
:func:`configure` ``(quiet=True)`` (what the CLI sets unless ``-v``), a Ray session of a job
(:func:`raydistill.runtime.ray_session`) sends all of that to ``<run dir>/ray.log`` and keeps
on the terminal what raydistill prints: everything its driver writes to stdout, and from
stderr and the workers (Train workers, Tune trials) the lines that are raydistill's own (see
:func:`is_own_line`).

Three streams are routed, because Ray writes through three:
- file descriptors 1 and 2 (its C++ core and any subprocess): into the log file, while
  ``sys.stdout`` keeps writing to the terminal;
- ``sys.stderr`` (Ray's Python loggers, Python warnings): a :class:`LineRouter`;
- the worker lines Ray forwards to the driver (``log_to_driver``): a handler of Ray's
  dispatcher in place of Ray's own printer, which also skips Ray's dedup (it merges lines
  that differ only in numbers: two trials' epoch lines).
"""

from __future__ import annotations

import io
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

# "[student] epoch 1/3 ...", "[a1b2c_00001] ...", "[tune] ...": a bracketed name without spaces
# (Ray's own bracketed lines hold a timestamp: "[2026-12-02 06:58:52,431 E 6906 ...]"), or
# raydistill's warning/error/note lines.
_OWN = re.compile(r"^(\[[A-Za-z0-9_.\-]+\] |(warning|error|note): )")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RAY_HANDLER = "ray_print_logs"  # the name ray.init gives its printer of worker lines

_QUIET = False
_ACTIVE: Console | None = None  # the quiet session under way


def configure(quiet: bool) -> None:
    """Whether Ray sessions started from here on keep Ray's lines off the terminal."""
    global _QUIET
    _QUIET = quiet


def is_quiet() -> bool:
    return _QUIET


def is_own_line(line: str) -> bool:
    """Whether a line (colour codes ignored) is one raydistill printed: a stage's or trial's
    ``[name] ...`` line, or ``warning:``/``error:``/``note:``."""
    return bool(_OWN.match(_ANSI.sub("", line).lstrip()))


class LineRouter(io.TextIOBase):
    """A text stream that writes whole lines: raydistill's own to ``own``, others to
    ``other`` (colour codes stripped there)."""

    def __init__(self, own: TextIO, other: TextIO, is_own: Callable[[str], bool] = is_own_line):
        self.own, self.other, self.is_own = own, other, is_own
        self._partial = ""
        self._lock = threading.Lock()  # Ray's loggers write from their own threads

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            lines = (self._partial + text).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self._route(line)
        return len(text)

    def _route(self, line: str) -> None:
        if self.is_own(line):
            self.own.write(line + "\n")
            self.own.flush()
        else:
            self.other.write(_ANSI.sub("", line) + "\n")

    def flush(self) -> None:
        with self._lock:
            if self._partial:
                self._route(self._partial)
                self._partial = ""
        self.own.flush()
        self.other.flush()

    def fileno(self) -> int:  # a writer that needs a descriptor is Ray's, not ours
        return self.other.fileno()

    def isatty(self) -> bool:
        return False


def _terminal(stream: TextIO, fd: int) -> tuple[TextIO, int | None]:
    """A stream to the terminal that survives ``fd`` being pointed elsewhere: a duplicate
    descriptor when ``stream`` writes to ``fd``; else ``stream`` itself (a test's capture)."""
    try:
        if stream.fileno() != fd:
            return stream, None
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return stream, None
    saved = os.dup(fd)
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return open(saved, "w", buffering=1, encoding=encoding, closefd=False), saved


class Console:
    """An active quiet session: see :func:`quiet_ray`."""

    def __init__(self, terminal: TextIO, log: TextIO) -> None:
        self.terminal, self.log = terminal, log
        self._plain_log = LineRouter(log, log, lambda _: False)  # colour codes stripped
        self._ray_printer: Callable[..., None] | None = None
        self._handlers: list[Any] = []  # the dispatcher's, before route_worker_lines

    def route_worker_lines(self) -> None:
        """Replace Ray's printer of forwarded worker lines (call after ``ray.init``)."""
        from ray._private import worker
        from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

        def route(data: dict[str, Any]) -> None:
            lines = data.get("lines", [])
            own = [line for line in lines if is_own_line(line)]
            other = [line for line in lines if not is_own_line(line)]
            if own:  # the stage or trial names itself: no Ray prefix, no dedup
                worker.print_worker_logs({**data, "lines": own}, self.terminal, True)
            if other:
                worker.print_worker_logs({**data, "lines": other}, self._plain_log, False)

        with dispatcher._lock:
            self._handlers = list(dispatcher.handlers)
        dispatcher.remove_handler(_RAY_HANDLER)
        dispatcher.add_handler(_RAY_HANDLER, route)
        # Ray's error listener prints the raylet's messages ("N PYTHON worker processes have
        # been started ...") with this function directly, not through the dispatcher.
        self._ray_printer = worker.print_to_stdstream
        worker.print_to_stdstream = lambda data, ignore_prefix=False: route(data)

    def restore(self) -> None:
        """Give Ray back its own printers: the dispatcher's handlers as they were (a Ray that
        outlives the block, such as one a caller started, prints its workers' lines again)."""
        if self._ray_printer is not None:
            from ray._private import worker
            from ray._private.ray_logging import global_worker_stdstream_dispatcher as dispatcher

            worker.print_to_stdstream = self._ray_printer
            self._ray_printer = None
            with dispatcher._lock:
                dispatcher.handlers = self._handlers


@contextmanager
def quiet_ray(log_path: Path | None) -> Iterator[Console | None]:
    """While the block runs (a Ray session), Ray's output goes to ``log_path`` (appended) and
    only raydistill's lines reach the terminal; yields the :class:`Console`, whose
    :meth:`~Console.route_worker_lines` is called once Ray is up. A no-op yielding None unless
    :func:`configure` made sessions quiet (or ``log_path`` is None)."""
    if not _QUIET or log_path is None:
        yield None
        return
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "a", buffering=1, encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    streams = sys.stdout, sys.stderr
    out, saved_out = _terminal(sys.stdout, 1)
    err, saved_err = _terminal(sys.stderr, 2)
    for fd in (1, 2):
        os.dup2(log.fileno(), fd)
    sys.stdout, sys.stderr = out, LineRouter(err, log)  # type: ignore[assignment]
    global _ACTIVE
    _ACTIVE = Console(out, log)
    failed = False
    try:
        yield _ACTIVE
    except BaseException:
        failed = True
        raise
    finally:
        _ACTIVE.restore()
        _ACTIVE = None
        sys.stderr.flush()
        sys.stdout.flush()
        for fd, saved in ((1, saved_out), (2, saved_err)):
            if saved is not None:
                os.dup2(saved, fd)
                os.close(saved)
        sys.stdout, sys.stderr = streams
        log.close()
        if failed:
            print(f"note: Ray's log of this run: {log_path}", file=sys.stderr)


@contextmanager
def ray_prints() -> Iterator[None]:
    """Around a call in which Ray's own code prints to ``sys.stdout`` (``Tuner.fit`` prints its
    experiment banner whatever its verbosity): in a quiet session, stdout is routed by line
    too while the block runs (raydistill's lines to the terminal, the rest to the log)."""
    active = _ACTIVE
    if active is None:
        yield
        return
    previous = sys.stdout
    sys.stdout = LineRouter(active.terminal, active.log)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stdout = previous

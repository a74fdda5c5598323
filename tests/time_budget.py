"""The suite's time budget, as a pytest plugin (loaded by ``tests/conftest.py``; docs/testing.md).

Every test's own time (setup + call + teardown, less the shared fixtures it happened to start
or stop) must stay under a per-test ceiling, 120 s unless ``--budget-ceiling`` says otherwise.
A test that needs longer says so, with its reason, and gets that many seconds instead::

    @pytest.mark.budget(seconds=300, reason="four PBT trials side by side on a real Ray")

Shared (class, module, package or session) fixtures are timed on their own against the same
ceiling; one that needs longer is decorated, under ``@pytest.fixture``, with
``@time_budget.allow(seconds=..., reason=...)``. A test or fixture over its budget fails the
run, naming its time and the budget. The terminal summary gives the suite's total, the
marked tests and fixtures (the targets for speed-up) and each one's time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest

DEFAULT_CEILING_S = 120.0
MARKER = "budget"
MARKER_HELP = (
    f"{MARKER}(seconds, reason): this test may take up to `seconds` (setup + call + teardown) "
    "instead of the per-test ceiling; the reason says why (docs/testing.md)"
)
F = TypeVar("F", bound=Callable[..., Any])


def _checked(seconds: Any, reason: Any, where: str) -> tuple[float, str]:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise pytest.UsageError(f"{where}: seconds must be a positive number, got {seconds!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise pytest.UsageError(f"{where}: needs reason='why it takes this long'")
    return float(seconds), reason.strip()


def allow(seconds: float, reason: str) -> Callable[[F], F]:
    """Give a shared fixture ``seconds`` (its setup, and separately its teardown) instead of
    the ceiling; put it under ``@pytest.fixture``."""
    allowance = _checked(seconds, reason, "time_budget.allow")

    def mark(func: F) -> F:
        func.budget_allowance = allowance  # type: ignore[attr-defined]
        return func

    return mark


@dataclass
class _Test:
    """What one test spent: pytest's phase durations and the shared fixtures among them."""

    limit: float
    reason: str | None
    phases: float = 0.0
    shared: float = 0.0
    flagged: bool = False

    @property
    def own(self) -> float:
        return max(self.phases - self.shared, 0.0)


@dataclass
class _Fixture:
    setup: float = 0.0
    teardown: float = 0.0
    allowance: tuple[float, str] | None = None


@dataclass(eq=False)  # hashable: pytest registers it as a plugin
class TimeBudget:
    """The plugin's state for one pytest run."""

    ceiling: float
    started: float = field(default_factory=time.perf_counter)
    tests: dict[str, _Test] = field(default_factory=dict)
    fixtures: dict[str, _Fixture] = field(default_factory=dict)
    # the test whose phase is running, the phase, and the fixture overruns seen in it
    nodeid: str | None = None
    phase: str | None = None
    overruns: list[str] = field(default_factory=list)
    _timing_fixture: bool = False
    _last_finish: float = 0.0

    @property
    def enforced(self) -> bool:
        return self.ceiling > 0

    # ------------------------------------------------------------ collection

    @pytest.hookimpl(trylast=True)  # after deselection, and after conftests add marks
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        for item in items:
            marker = item.get_closest_marker(MARKER)
            if marker is None:
                self.tests[item.nodeid] = _Test(self.ceiling, None)
                continue
            where = f"{item.nodeid}: @pytest.mark.{MARKER}"
            if marker.args:
                raise pytest.UsageError(f"{where}: give seconds= and reason= by keyword")
            kwargs = marker.kwargs
            limit, reason = _checked(kwargs.get("seconds"), kwargs.get("reason"), where)
            self.tests[item.nodeid] = _Test(limit, reason)

    # ------------------------------------------------------------ phases

    def _enter(self, item: pytest.Item, phase: str) -> None:
        self.nodeid, self.phase = item.nodeid, phase
        self.overruns = []
        self._last_finish = time.perf_counter()

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item):
        self._enter(item, "setup")
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item):
        self._enter(item, "call")
        return (yield)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_teardown(self, item: pytest.Item):
        self._enter(item, "teardown")
        return (yield)

    # ------------------------------------------------------------ shared fixtures

    def _charge(self, fixturedef: Any, seconds: float, phase: str) -> None:
        test = self.tests.get(self.nodeid or "")
        if test is not None:
            test.shared += seconds
        allowance = getattr(fixturedef.func, "budget_allowance", None)
        entry = self.fixtures.setdefault(fixturedef.argname, _Fixture(allowance=allowance))
        setattr(entry, phase, getattr(entry, phase) + seconds)
        limit = allowance[0] if allowance else self.ceiling
        if self.enforced and seconds > limit:
            fix = (
                f"make it faster or raise its allowance ({allowance[1]})"
                if allowance
                else "make it faster, or put @time_budget.allow(seconds=..., reason=...) "
                "under its @pytest.fixture"
            )
            self.overruns.append(
                f"shared fixture '{fixturedef.argname}' took {seconds:.1f} s in its {phase}, "
                f"over its {limit:g} s budget: {fix} (docs/testing.md)"
            )

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any):
        # a shared fixture set up inside another's setup is already inside that one's time
        if fixturedef.scope == "function" or self._timing_fixture:
            return (yield)
        self._timing_fixture = True
        start = time.perf_counter()
        try:
            return (yield)
        finally:
            self._timing_fixture = False
            self._charge(fixturedef, time.perf_counter() - start, "setup")

    def pytest_fixture_post_finalizer(self, fixturedef: Any, request: Any) -> None:
        # pytest calls this after each fixture's own teardown code: the time since the
        # previous fixture finished (or the teardown began) is this fixture's teardown
        now = time.perf_counter()
        elapsed, self._last_finish = now - self._last_finish, now
        if self.phase == "teardown" and fixturedef.scope != "function":
            self._charge(fixturedef, elapsed, "teardown")

    # ------------------------------------------------------------ verdicts

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        report = yield
        test = self.tests.setdefault(item.nodeid, _Test(self.ceiling, None))
        test.phases += report.duration
        if not self.enforced or test.flagged or not report.passed or hasattr(report, "wasxfail"):
            return report
        problems = list(self.overruns)
        if report.when in ("call", "teardown") and test.own > test.limit:
            budget = (
                f"its budget of {test.limit:g} s ({test.reason})"
                if test.reason
                else f"the {test.limit:g} s per-test ceiling"
            )
            fix = (
                "make it faster or raise its budget"
                if test.reason
                else f"make it faster, or mark it @pytest.mark.{MARKER}(seconds=..., reason=...)"
            )
            problems.append(
                f"{item.nodeid} took {test.own:.1f} s of its own (setup, call and teardown, "
                f"shared fixtures left out), over {budget}: {fix} (docs/testing.md)"
            )
        if problems:
            test.flagged = True
            report.outcome = "failed"
            report.longrepr = "time budget: " + "\ntime budget: ".join(problems)
        return report

    # ------------------------------------------------------------ summary

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not any(t.phases for t in self.tests.values()):
            return  # nothing ran (--collect-only, a usage error)
        write = terminalreporter.write_line
        terminalreporter.write_sep("=", "time budget")
        wall = time.perf_counter() - self.started
        own = sum(t.own for t in self.tests.values())
        shared = sum(f.setup + f.teardown for f in self.fixtures.values())
        write(
            f"suite: {wall:.1f} s wall; tests' own time {own:.1f} s, shared fixtures {shared:.1f} s"
        )
        rule = f"{self.ceiling:g} s" if self.enforced else "not enforced (--budget-ceiling=0)"
        write(f"per-test and per-fixture ceiling: {rule}")
        marked = sorted(
            ((nodeid, t) for nodeid, t in self.tests.items() if t.reason and t.phases),
            key=lambda pair: -pair[1].own,
        )
        if marked:
            write("tests allowed over the ceiling (targets for speed-up):")
        for nodeid, t in marked:
            write(f"  {t.own:7.1f} s of {t.limit:g} s  {nodeid}  ({t.reason})")
        near = sorted(
            (
                (nodeid, t)
                for nodeid, t in self.tests.items()
                if self.enforced and not t.reason and not t.flagged and t.own > t.limit / 2
            ),
            key=lambda pair: -pair[1].own,
        )
        if near:
            write("unmarked tests past half the ceiling (next to speed up or mark):")
        for nodeid, t in near:
            write(f"  {t.own:7.1f} s  {nodeid}")
        # the ones that cost anything (pytest's own tmp_path_factory and the like do not)
        costly = {n: f for n, f in self.fixtures.items() if f.setup + f.teardown >= 0.05}
        if costly:
            write("shared fixtures (setup + teardown):")
        for name, f in sorted(costly.items(), key=lambda kv: -kv[1].setup):
            note = f", allowed {f.allowance[0]:g} s ({f.allowance[1]})" if f.allowance else ""
            write(f"  {f.setup:7.1f} s + {f.teardown:.1f} s  {name}{note}")
        over = [nodeid for nodeid, t in self.tests.items() if t.flagged]
        if over:
            write(f"over budget ({len(over)}): " + ", ".join(over), red=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--budget-ceiling",
        type=float,
        default=DEFAULT_CEILING_S,
        metavar="SECONDS",
        help="fail a test (or shared fixture) that takes longer than this without a "
        f"@pytest.mark.{MARKER} (default {DEFAULT_CEILING_S:g}; 0 reports without failing)",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.pluginmanager.register(
        TimeBudget(ceiling=config.getoption("--budget-ceiling")), "time-budget-state"
    )

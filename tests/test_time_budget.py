"""The suite's time budget (``tests/time_budget.py``), run on small test files inside pytest.

The tests sleep past a ceiling a fraction of a second long: a sleep always lasts at least
that long, so the slow tests are over it whatever the machine's load, and a test that does
nothing is far under it. Ray-free.
"""

from __future__ import annotations

import pytest

CEILING = "--budget-ceiling=0.2"
SLEEP = 0.4  # seconds: twice the ceiling

SLOW_AND_MARKED = f"""
import time
import pytest

def test_quick():
    pass

def test_slow_without_a_mark():
    time.sleep({SLEEP})

@pytest.mark.budget(seconds=60, reason="sleeps on purpose")
def test_slow_with_its_reason():
    time.sleep({SLEEP})

@pytest.mark.budget(seconds=0.25, reason="claims too little")
def test_slow_past_its_own_budget():
    time.sleep({SLEEP})
"""


def _run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest("-p", "time_budget", "-p", "no:cacheprovider", *args)


def test_a_slow_test_fails_unless_marked_with_its_reason(pytester):
    result = _run(pytester, SLOW_AND_MARKED, CEILING)
    result.assert_outcomes(passed=2, failed=2)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    out = result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "*test_slow_without_a_mark took *s of its own*over the 0.2 s per-test ceiling*",
            "*test_slow_past_its_own_budget took *over its budget of 0.25 s (claims too little)*",
        ]
    )
    failed = {line.split(" ")[1] for line in out.splitlines() if line.startswith("FAILED ")}
    assert failed == {
        "test_inner.py::test_slow_without_a_mark",
        "test_inner.py::test_slow_past_its_own_budget",
    }
    # the summary: the suite's total, and the marked tests with their times and reasons
    result.stdout.fnmatch_lines(
        [
            "*= time budget =*",
            "suite: * s wall; tests' own time * s, shared fixtures * s",
            "per-test and per-fixture ceiling: 0.2 s",
            "tests allowed over the ceiling (targets for speed-up):",
            "*s of 60 s  test_inner.py::test_slow_with_its_reason  (sleeps on purpose)",
        ]
    )


def test_the_same_tests_pass_under_the_default_ceiling(pytester):
    result = _run(pytester, SLOW_AND_MARKED)
    result.assert_outcomes(passed=3, failed=1)  # only the one over its own 0.25 s
    result.stdout.fnmatch_lines(["per-test and per-fixture ceiling: 120 s"])


def test_a_zero_ceiling_reports_without_failing(pytester):
    result = _run(pytester, SLOW_AND_MARKED, "--budget-ceiling=0")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["per-test and per-fixture ceiling: not enforced*"])


SHARED_FIXTURES = f"""
import time
import pytest
import time_budget

@pytest.fixture(scope="module")
def slow_shared():
    time.sleep({SLEEP})
    yield "ready"

@pytest.fixture(scope="module")
@time_budget.allow(seconds=60, reason="starts something big once")
def slow_allowed():
    time.sleep({SLEEP})
    yield "ready"
    time.sleep({SLEEP})

def test_first_user_of_the_slow_fixture(slow_shared):
    assert slow_shared == "ready"

def test_second_user_of_the_slow_fixture(slow_shared):
    assert slow_shared == "ready"

def test_first_user_of_the_allowed_fixture(slow_allowed):
    assert slow_allowed == "ready"

def test_second_user_of_the_allowed_fixture(slow_allowed):
    assert slow_allowed == "ready"
"""


def test_shared_fixtures_are_timed_on_their_own(pytester):
    """A test is not charged for the shared fixture it happened to start (or stop): the
    fixture has its own budget. Over it, the test that started it errors, naming it."""
    result = _run(pytester, SHARED_FIXTURES, CEILING)
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_first_user_of_the_slow_fixture*",
            "*shared fixture 'slow_shared' took * s in its setup, over its 0.2 s budget*",
        ]
    )
    assert "test_second_user_of_the_slow_fixture" not in "".join(
        line for line in result.stdout.lines if line.startswith(("FAILED", "ERROR"))
    )
    # the table, "<setup> s + <teardown> s  <name>[, allowed ...]", times each fixture's setup
    # and its teardown (at the module's last test); the allowed one's both fit its 60 s
    rows = [line.split() for line in result.stdout.lines if " s + " in line]
    table = {row[5].rstrip(","): (float(row[0]), float(row[3])) for row in rows}
    assert set(table) == {"slow_shared", "slow_allowed"}
    assert table["slow_shared"][0] >= SLEEP - 0.05
    assert min(table["slow_allowed"]) >= SLEEP - 0.05
    result.stdout.fnmatch_lines(["*slow_allowed, allowed 60 s (starts something big once)"])


@pytest.mark.parametrize(
    "mark, complaint",
    [
        ("@pytest.mark.budget(seconds=300)", "needs reason="),
        ('@pytest.mark.budget(seconds=0, reason="x")', "seconds must be a positive number"),
        ('@pytest.mark.budget(300, "x")', "give seconds= and reason= by keyword"),
    ],
)
def test_a_mark_without_seconds_and_reason_is_refused(pytester, mark, complaint):
    result = _run(pytester, f"import pytest\n\n{mark}\ndef test_marked():\n    pass\n")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*test_inner.py::test_marked: @pytest.mark.budget: {complaint}*"])


# Lists (file, line, name) of every function in the files named on its command line that is
# decorated with pytest.mark.budget but is not a test; parsed in a child interpreter for the
# reason tests/test_security.py gives.
_MISPLACED_MARKS = """
import ast, sys
for path in sys.argv[1:]:
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.FunctionDef) and not node.name.startswith("test_"):
            for deco in node.decorator_list:
                if "mark.budget" in ast.unparse(deco):
                    print(path, node.lineno, node.name)
"""


def test_every_budget_mark_decorates_a_test():
    """A budget mark left on a helper (a function written between a mark and its test) does
    nothing, and the test it was meant for runs under the ceiling instead."""
    import subprocess
    import sys
    from pathlib import Path

    files = sorted(str(p) for p in Path(__file__).parent.rglob("*.py"))
    found = subprocess.run(
        [sys.executable, "-c", _MISPLACED_MARKS, *files], capture_output=True, text=True, check=True
    ).stdout
    assert found == "", found

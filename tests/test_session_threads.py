"""The test session's own process runs no thread that formats tracebacks behind the tests' backs.

Ray Data's usage poller was one: started by the first dataset run in a driver with usage stats
on, it logged a traceback every 10 s, and on Python 3.11.7 formatting one calls ast.parse, which
raced a test's own parse (see ``ray_address`` in conftest.py).
"""

from __future__ import annotations

import threading

import pytest

pytestmark = pytest.mark.slow


def test_a_dataset_run_in_the_session_driver_starts_no_usage_poller(ray_address):
    import ray

    assert ray.data.range(8).map_batches(lambda batch: batch).count() == 8
    names = {thread.name for thread in threading.enumerate()}
    assert "data-usage-metrics-poller" not in names, sorted(names)

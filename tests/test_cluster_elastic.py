"""``scaling.workers: [min, max]``: Ray Train's elastic training starts with as many workers as
the cluster holds, between min and max."""

from __future__ import annotations

import pytest

from raydistill.config import load_job
from raydistill.pipeline import run_job

pytestmark = pytest.mark.slow


def test_elastic_workers_start_with_what_the_cluster_holds(ray_address, write_job):
    # The session's head offers `student: 4`; at 2 per worker, 2 workers fit, not max 6.
    changes = {
        "distill.enabled": False,
        "train.epochs": 2,
        "scaling.workers": [1, 6],
        "scaling.resources_per_worker": {"student": 2},
    }
    lines: list[str] = []
    summary = run_job(load_job(write_job(changes, name="elastic")), log=lines.append)
    history = summary.stages["baseline"].history
    assert [h["epoch"] for h in history] == [0, 1]
    assert [h["workers"] for h in history] == [2, 2]
    assert any("on 1-6 workers" in line for line in lines), lines

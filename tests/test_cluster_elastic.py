"""``scaling.workers: [min, max]``: Ray Train's elastic training starts with as many workers as
the cluster holds, between min and max; in the same run, a balanced stream reaches those
workers (one Ray Train run checks both: starting one costs more than either check)."""

from __future__ import annotations

import numpy as np
import pytest

from raydistill.config import load_job
from raydistill.data import load_digits_arrays
from raydistill.data.sources import load_splits
from raydistill.pipeline import make_balancer, run_job

pytestmark = pytest.mark.slow


def test_elastic_workers_start_with_what_the_cluster_holds_and_train_a_balanced_stream(
    ray_address, write_job, tmp_path
):
    """Elastic workers: the session's head offers `student: 4`; at 2 per worker, 2 workers fit,
    not max 6. Balancing: on a deliberately imbalanced split, the class histogram the workers
    train on meets the balancer's target."""
    digits = load_digits_arrays()
    rng = np.random.default_rng(0)
    keep = (digits.labels < 5) | (rng.random(len(digits.labels)) < 0.2)
    np.savez(tmp_path / "imbalanced.npz", inputs=digits.inputs[keep], labels=digits.labels[keep])
    changes = {
        "data.source": "npz",
        "data.path": str(tmp_path / "imbalanced.npz"),
        "data.balance": {"keep_ratio": 0.7},
        "distill.enabled": False,
        "train.epochs": 3,
        "scaling.workers": [1, 6],
        "scaling.resources_per_worker": {"student": 2},
    }
    lines: list[str] = []
    job = load_job(write_job(changes, name="elastic-balanced"))
    summary = run_job(job, log=lines.append)
    history = summary.stages["baseline"].history
    assert [h["epoch"] for h in history] == [0, 1, 2]
    assert [h["workers"] for h in history] == [2, 2, 2]
    assert any("on 1-6 workers" in line for line in lines), lines

    train = load_splits(job.data)["train"]
    counts = np.bincount(train.labels, minlength=10)
    assert counts[:5].min() > 2 * counts[5:].max()  # really imbalanced
    expected = make_balancer(job, train).expected_counts(counts)
    seen = np.mean([h["class_counts"] for h in history], axis=0)
    assert np.allclose(seen, expected, rtol=0.15), (seen, expected)
    assert seen[5:].min() > 0.8 * seen[:5].min()  # rare classes lifted toward the frequent ones

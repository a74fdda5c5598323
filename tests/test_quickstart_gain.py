"""The quickstart's claim, on 3 seeds: distillation beats the same student trained on the
labelled share alone, every time.

The stages are the quickstart job's own (jobs/digits.yaml, unchanged), trained by the shared
epoch loop in this process, one worker, no Ray (``benchmarks/quickstart_gain.py``'s
``train``): the loop, the objective, the labelled share and the baseline's labelled copies
are the code `raydistill train` runs; the Ray path of this job
is covered by tests/test_e2e_digits.py. One teacher serves the three seeds, as a user's
reruns reuse theirs.
"""

from __future__ import annotations

import importlib.util
import statistics
from pathlib import Path

import pytest
import torch

from raydistill.config import load_job
from raydistill.data.sources import load_splits

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "quickstart_gain", ROOT / "benchmarks" / "quickstart_gain.py"
)
assert _spec is not None and _spec.loader is not None
gain = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gain)
_train = gain.train  # one stage in process: (best model, test accuracy)


@pytest.mark.slow
@pytest.mark.budget(
    seconds=300,
    reason="a teacher and 3 x (distilled student + baseline) of the quickstart, in process",
)
def test_the_quickstart_distils_better_than_the_labelled_share_alone_on_every_seed():
    torch.set_num_threads(1)
    base = load_job(ROOT / "jobs" / "digits.yaml")
    assert base.data.labelled_fraction == 0.1  # the quickstart's claim is about this setting
    splits = load_splits(base.data)
    teacher, teacher_acc = _train(base, splits, "teacher")
    assert teacher_acc > 0.9
    gains = []
    for seed in (0, 1, 2):
        job = load_job(ROOT / "jobs" / "digits.yaml", [f"seed={seed}"])
        _, student = _train(job, splits, "student", teacher)
        _, alone = _train(job, splits, "baseline")
        gains.append(100 * (student - alone))
    assert all(g > 0 for g in gains), gains
    # "clearly": the mean gain is several times the spread between seeds
    assert statistics.mean(gains) > 3 * statistics.stdev(gains), gains

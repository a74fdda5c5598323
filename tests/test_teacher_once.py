"""``teacher_pass: once`` over splits in driver memory: teacher actors fed by plain actor calls.

Each row must carry the teacher's own outputs for that row (checked against the teacher run in
this process), with exactly the columns and types the Ray Data actor pool writes, and the
actors must be gone afterwards (their CPUs go back to the train workers).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from raydistill import progress
from raydistill.config import load_job
from raydistill.data.sources import load_splits, training_datasets
from raydistill.models import build_model
from raydistill.teacher.passes import STRATEGIES, start_teacher_actors
from raydistill.teacher.pool import TEACHER_LOGITS, attach_teacher, feature_column

pytestmark = pytest.mark.slow

POOL = {"min_actors": 1, "max_actors": 2, "num_cpus": 0.25, "batch_size": 100}


def _teacher(tmp_path, job):
    """A teacher with seeded random weights, saved where the job's actors load it."""
    torch.manual_seed(0)
    model = build_model(job.teacher, 10, load=False).eval()
    path = tmp_path / "teacher.pt"
    torch.save(model.state_dict(), path)
    return model, path


def _teacher_actors() -> list:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], raise_on_missing_output=False)
    return [a for a in actors if "TeacherPredictorActor" in (a.class_name or "")]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"distill.feature_layers": ["features.7"], "distill.feature_dtype": "float16"},
    ],
    ids=["logits", "tapped-features"],
)
def test_once_gives_each_in_memory_row_the_teachers_own_outputs(
    ray_address, write_job, tmp_path, changes, monkeypatch
):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)  # a progress line per block
    job = load_job(write_job({"scaling.teacher_pool": POOL, **changes}, name="once"))
    splits = load_splits(job.data)
    teacher, weights = _teacher(tmp_path, job)
    lines: list[str] = []
    start_teacher_actors(job)  # started early; the pass below uses them
    attached = STRATEGIES["once"].attach(
        job, training_datasets(job, splits), weights, splits, 10, lines.append
    )
    rows = len(splits["train"]) + len(splits["val"])
    assert any(f"one pass over {rows} rows" in line for line in lines), lines
    # rows counted as the actors' blocks come back, with a rate and an ETA
    counted = [line for line in lines if line.startswith("[teacher] labelled ")]
    assert len(counted) > 1 and counted[-1].startswith(f"[teacher] labelled {rows}/{rows} rows, ")
    assert counted[0].endswith("s") and " rows/s, eta " in counted[0], counted
    assert _teacher_actors() == []  # killed once the pass is done

    for name in ("train", "val"):
        ds = attached.datasets[name]
        rows = ds.take_all()
        split = splits[name]
        assert sorted(r["row_id"] for r in rows) == list(range(len(split)))
        ids = np.array([r["row_id"] for r in rows])
        got = np.stack([r[TEACHER_LOGITS] for r in rows])
        inputs = torch.from_numpy(np.ascontiguousarray(split.inputs[ids]))
        with torch.no_grad():
            want = teacher(inputs).numpy()
        assert np.allclose(got, want, atol=1e-5), np.abs(got - want).max()
        assert np.array_equal(np.stack([r["label"] for r in rows]), split.labels[ids])
        if changes:
            feature = np.stack([r[feature_column("features.7")] for r in rows])
            assert feature.dtype == np.float16 and feature.shape[0] == len(split)

        # the columns and types the Ray Data pool (per_epoch, streamed splits) writes
        pooled = attach_teacher(training_datasets(job, splits)[name], job, weights, 10)
        assert ds.schema() == pooled.schema()


def test_once_over_augmented_views_labels_every_view(ray_address, write_job, tmp_path):
    """Augmented views are made first (Ray Data tasks), then labelled by the actors."""
    augment = {"views": 2, "ops": [{"op": "random_crop", "padding": 1}]}
    job = load_job(write_job({"scaling.teacher_pool": POOL, "data.augment": augment}, "views"))
    splits = load_splits(job.data)
    teacher, weights = _teacher(tmp_path, job)
    attached = STRATEGIES["once"].attach(
        job, training_datasets(job, splits), weights, splits, 10, print
    )
    rows = attached.datasets["train"].take_all()
    assert len(rows) == 2 * len(splits["train"])
    assert {int(r["view"]) for r in rows} == {0, 1}
    inputs = torch.from_numpy(np.stack([r["input"] for r in rows]))
    with torch.no_grad():
        want = teacher(inputs).numpy()
    assert np.allclose(np.stack([r[TEACHER_LOGITS] for r in rows]), want, atol=1e-5)


def test_a_pool_pass_counts_its_blocks_as_they_come(ray_address):
    """The streamed ``once`` pass: rows counted from each block's metadata as the Ray Data
    pipeline hands it out, the blocks kept as the materialized dataset."""
    import ray.data

    from raydistill.teacher.passes import materialize_counting

    ds = ray.data.range(120, override_num_blocks=4).map_batches(
        lambda b: {"id": b["id"], "twice": 2 * b["id"]}, batch_format="numpy"
    )
    counted: list[int] = []
    held = materialize_counting(ds, counted.append)
    assert sum(counted) == 120 and len(counted) >= 2
    assert sorted((r["id"], r["twice"]) for r in held.take_all()) == [
        (i, 2 * i) for i in range(120)
    ]


def test_the_cache_write_stage_counts_rows_as_files_land(ray_address, tmp_path):
    import pyarrow.parquet as pq
    import ray.data

    from raydistill.teacher.parquet_files import write_parquet_files

    ds = ray.data.from_items([{"row_id": i, "label": i % 10} for i in range(90)])
    counted: list[int] = []
    write_parquet_files(ds.repartition(3), tmp_path / "train", counted.append)
    assert sum(counted) == 90
    files = sorted((tmp_path / "train").iterdir())
    assert len(files) == 3 and all(f.suffix == ".parquet" for f in files)
    table = pq.read_table([str(f) for f in files])
    assert sorted(table.column("row_id").to_pylist()) == list(range(90))

"""The Parquet teacher cache on a real local Ray: one pass, reuse, refusal, recovery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from raydistill import progress
from raydistill.config import JobError, load_job
from raydistill.data.sources import load_splits
from raydistill.pipeline import run_cache, run_job
from raydistill.teacher.cache import MANIFEST, verify_cache

pytestmark = pytest.mark.slow

SHORT = {
    "teacher.train": {"epochs": 3},
    "train.epochs": 3,
    "train.baseline": False,
    "scaling.workers": 1,
    "distill.teacher_pass": "cache",
}


def test_cache_written_once_reused_and_trained_from(
    ray_address, write_job, digits_teacher, monkeypatch
):
    monkeypatch.setattr(progress, "PROGRESS_EVERY_S", 0.0)  # a progress line per file written
    changes = {
        **SHORT,
        "teacher.checkpoint": digits_teacher,
        "cache.codec": "topk",
        "cache.k": 4,
        "data.augment": {"views": 2},
    }
    job = load_job(write_job(changes, name="cached"))
    splits = load_splits(job.data)
    lines: list[str] = []
    manifest = run_cache(job, log=lambda line: (lines.append(line), print(line)))

    # one teacher pass over every augmented view of train, and over val
    rows = 2 * len(splits["train"]) + len(splits["val"])
    assert manifest["teacher_forward_passes"] == rows
    # rows counted as the write stage's files land, with a rate and an ETA
    written = [line for line in lines if line.startswith("[cache] labelled and written ")]
    assert len(written) > 1 and " rows/s, eta " in written[0], lines
    assert written[-1].startswith(f"[cache] labelled and written {rows}/{rows} rows, ")
    assert manifest["rows"] == {"train": 2 * len(splits["train"]), "val": len(splits["val"])}
    assert manifest["logit_bytes_per_sample"] == 4 * (2 + 2) + 4
    table = pq.read_table(job.cache_dir / "train")
    assert table.num_rows == 2 * len(splits["train"])
    assert "input" not in table.column_names  # joined back from the source by row key
    assert {
        "label",
        "row_id",
        "teacher_topk_values",
        "teacher_topk_indices",
        "teacher_tail_logit",
    } <= set(table.column_names)
    assert sorted(table.column("label").to_pylist()) == sorted(2 * splits["train"].labels.tolist())

    # train reads the cache; the manifest is untouched (no second teacher pass)
    before = (job.cache_dir / MANIFEST).read_text()
    summary = run_job(job, log=print)
    assert (job.cache_dir / MANIFEST).read_text() == before
    history = summary.stages["student"].history
    assert all(h["train_soft"] > 0 for h in history)
    # each epoch trains on its view's own dataset: every training row exactly once (filtering
    # one stream of all views used to add a one-row step for each batch of other views)
    for h in history:
        assert sum(h["class_counts"]) == len(splits["train"])
    assert summary.score("student (distilled)").accuracy > 0.3

    # the join gives each streamed row its own outputs: the teacher's top 4 classes on it
    from raydistill.data.sources import training_datasets
    from raydistill.models import build_model, load_weights
    from raydistill.teacher.passes import STRATEGIES

    weights = Path(digits_teacher)
    joined = STRATEGIES["cache"].attach(
        job, training_datasets(job, splits), weights, splits, 10, print
    ).datasets["train"]
    sample = joined.take(60)
    teacher = load_weights(build_model(job.teacher, 10, load=False), weights).eval()
    with torch.no_grad():
        logits = teacher(torch.from_numpy(np.stack([r["input"] for r in sample]))).numpy()
    top = [set(np.argsort(-row)[:4].tolist()) for row in logits]
    assert [set(r["teacher_topk_indices"].tolist()) for r in sample] == top

    # a job asking for another codec is refused, naming what differs
    other = load_job(write_job({**changes, "cache.codec": "fp16"}, name="cached"))
    with pytest.raises(JobError, match=r"made for another job: differs in .*codec.kind"):
        run_cache(other, log=print)

    # a damaged file is reported, never read as whole
    victim = next((job.cache_dir / "val").glob("*.parquet"))
    victim.write_bytes(victim.read_bytes()[:100])
    with pytest.raises(JobError, match="has changed"):
        verify_cache(job.cache_dir, json.loads(before)["key"])
    victim.unlink()
    with pytest.raises(JobError, match="is missing"):
        verify_cache(job.cache_dir, json.loads(before)["key"])

    # a cache without its manifest (a killed `cache` run) is rebuilt, not read
    (job.cache_dir / MANIFEST).unlink()
    rebuilt = run_cache(job, log=print)
    assert rebuilt["teacher_forward_passes"] == rows
    verify_cache(job.cache_dir, rebuilt["key"])

    # asked for, the cache keeps a copy of the inputs (read without the source)
    copying = load_job(write_job({**changes, "cache.inputs": "copy"}, name="cached"))
    copied = run_cache(copying, log=print, fresh=True)
    assert copied["key"]["inputs"] == "copy"
    assert "input" in pq.read_table(copying.cache_dir / "train").column_names


def test_each_view_is_its_own_training_dataset(ray_address):
    """split_views: one dataset per augmented view, holding exactly that view's rows; the other
    datasets pass through untouched."""
    import numpy as np

    from raydistill.config import AugmentConfig
    from raydistill.data.arrays import LabelledArrays
    from raydistill.data.augment import VIEW
    from raydistill.data.sources import (
        ROW_ID,
        split_views,
        to_dataset,
        view_dataset_name,
        with_views,
    )

    arrays = LabelledArrays(
        np.random.default_rng(0).random((30, 1, 4, 4), dtype=np.float32),
        np.arange(30) % 3,
        3,
    )
    augment = AugmentConfig(views=3)
    val = to_dataset(arrays)
    out = split_views({"train": with_views(to_dataset(arrays), augment, 0), "val": val}, augment)
    assert set(out) == {"val", *(view_dataset_name(v) for v in range(3))}
    assert out["val"] is val
    for v in range(3):
        rows = out[view_dataset_name(v)].take_all()
        assert {int(r[VIEW]) for r in rows} == {v}
        assert sorted(int(r[ROW_ID]) for r in rows) == list(range(30))


def test_a_stage_without_teacher_pass_trains_on_each_view_directly(ray_address, write_job):
    """The student alone (and the teacher stage) read one dataset per view, built without the
    all-views stream, and each epoch trains on every training row exactly once."""
    from raydistill.data.sources import training_datasets, view_dataset_name
    from raydistill.pipeline import fit_student

    job = load_job(write_job({**SHORT, "data.augment": {"views": 2}}, name="alone-views"))
    splits = load_splits(job.data)
    datasets = training_datasets(job, splits, distill=False)
    assert set(datasets) == {"val", view_dataset_name(0), view_dataset_name(1)}
    assert datasets[view_dataset_name(1)].count() == len(splits["train"])
    result = fit_student(job, splits, "baseline", None, log=print)
    assert [sum(h["class_counts"]) for h in result.history] == [len(splits["train"])] * 3


def test_teacher_sees_the_augmented_input_the_student_reads(ray_address, write_job, digits_teacher):
    """The teacher output travelling with each augmented row equals the teacher run on it."""
    import numpy as np
    import torch

    from raydistill.data.augment import augment_batch
    from raydistill.data.sources import training_datasets
    from raydistill.models import build_model, load_weights
    from raydistill.pipeline import run_teacher
    from raydistill.teacher.pool import TEACHER_LOGITS, attach_teacher

    augment = {
        "views": 2,
        "ops": [{"op": "random_crop", "padding": 1}, {"op": "random_erasing", "p": 0.5}],
    }
    changes = {**SHORT, "teacher.checkpoint": digits_teacher, "data.augment": augment}
    job = load_job(write_job(changes, name="augmented"))
    weights = run_teacher(job, log=print)
    splits = load_splits(job.data)
    train = training_datasets(job, splits)["train"]
    rows = attach_teacher(train, job, weights, 10).take_all()
    assert len(rows) == 2 * len(splits["train"])
    teacher = load_weights(build_model(job.teacher, 10, load=False), weights).eval()
    sample = rows[:: len(rows) // 40]
    inputs = np.stack([r["input"] for r in sample])
    with torch.no_grad():
        again = teacher(torch.from_numpy(inputs)).numpy()
    assert np.allclose(np.stack([r[TEACHER_LOGITS] for r in sample]), again, atol=1e-5)
    for r in sample:  # and the input is exactly the seeded augmentation of that row and view
        original = splits["train"].inputs[r["row_id"]][None]
        expected = augment_batch(
            original, np.array([r["row_id"]]), int(r["view"]), job.seed, job.data.augment.ops
        )[0]
        assert np.array_equal(r["input"], expected)
    assert {int(r["view"]) for r in rows} == {0, 1}


def test_resource_settings_reach_teacher_actors_and_train_workers(
    ray_address, write_job, digits_teacher
):
    """`teacher_pool.resources` and `resources_per_worker` are what the actors actually held."""
    from ray.util.state import list_actors

    changes = {
        **SHORT,
        "teacher.checkpoint": digits_teacher,
        "train.epochs": 1,
        "distill.teacher_pass": "once",
        "scaling.teacher_pool": {"num_cpus": 0.25, "resources": {"teacher": 1}},
        "scaling.resources_per_worker": {"student": 1},
    }
    job = load_job(write_job(changes, name="placed"))
    run_job(job, log=print)
    actors = list_actors(detail=True, limit=10_000, raise_on_missing_output=False)
    pool = [a for a in actors if "TeacherPredictor" in (a.class_name or "")]
    workers = [a for a in actors if a.class_name == "RayTrainWorker"]
    assert any(a.required_resources == {"CPU": 0.25, "teacher": 1.0} for a in pool), [
        a.required_resources for a in pool
    ]

    # Train workers run in a placement group, whose resources Ray renames `<name>_group_<id>`.
    def base_names(resources: dict[str, float]) -> dict[str, float]:
        return {
            k.split("_group_")[0]: v
            for k, v in resources.items()
            if k.startswith(("CPU", "student"))
        }

    assert any(base_names(a.required_resources) == {"CPU": 1.0, "student": 1.0} for a in workers), [
        a.required_resources for a in workers
    ]

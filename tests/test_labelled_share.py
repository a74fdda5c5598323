"""data.labelled_fraction, Ray-free: which rows are labelled, the hard term on them alone, the
baseline's labelled part, and the settings that would read hidden labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from local_rows import classification_rows
from tiny_run import write_tiny_job

from raydistill.columns import LABEL, LABELLED, ROW_ID
from raydistill.config import JobError, load_job
from raydistill.data.keys import labelled_mask
from raydistill.data.sources import labelled_copies, labelled_rows_only, load_splits
from raydistill.distill.distiller import Distiller
from raydistill.models.specs import build_model
from raydistill.tasks import get_task, task_named
from raydistill.train.context import LocalContext, LocalShard
from raydistill.train.loop import run_epochs
from raydistill.train.spec import StageSpec

TIMING = ("samples_per_s", "epoch_s", "wait_s")


def test_a_rows_label_is_kept_by_its_id_alone():
    ids = np.arange(20_000)
    mask = labelled_mask(ids, 0.1, seed=0)
    assert abs(mask.mean() - 0.1) < 0.01
    # the same row, in any order or batch, on any worker
    order = np.random.default_rng(1).permutation(ids)
    assert np.array_equal(labelled_mask(order, 0.1, 0), mask[order])
    assert np.array_equal(labelled_mask(ids[:7], 0.1, 0), mask[:7])
    # another seed draws other rows; no share keeps all
    assert 0.05 < (labelled_mask(ids, 0.1, 1) & mask).sum() / mask.sum() < 0.15
    assert labelled_mask(ids, None, 0).all() and labelled_mask(ids, 1.0, 0).all()


def test_the_hard_term_covers_only_labelled_rows_and_the_soft_term_all():
    torch.manual_seed(0)
    student = torch.nn.Linear(4, 3)
    distiller = Distiller(student, temperature=2.0, alpha=0.5)
    logits = torch.randn(6, 3, requires_grad=True)
    teacher = torch.randn(6, 3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    labelled = torch.tensor([True, False, True, False, False, False])
    out = distiller.loss(logits, labels, teacher, labelled=labelled)
    ce = torch.nn.functional.cross_entropy(logits[labelled], labels[labelled])
    assert out.hard.item() == pytest.approx(ce.item(), rel=1e-6)
    full = distiller.loss(logits, labels, teacher)
    assert out.soft.item() == pytest.approx(full.soft.item(), rel=1e-6)  # every row's
    # no gradient from the hidden labels: change them and the hard term's gradient is the same
    hard_grad = torch.autograd.grad(out.hard, logits)[0]
    flipped = labels.clone()
    flipped[~labelled] = (flipped[~labelled] + 1) % 3
    again = distiller.loss(logits, flipped, teacher, labelled=labelled)
    assert torch.equal(torch.autograd.grad(again.hard, logits)[0], hard_grad)
    assert hard_grad[~labelled].abs().sum() == 0 and hard_grad[labelled].abs().sum() > 0
    # a batch with no labelled row: the hard term is 0, the objective the soft term's share
    none = distiller.loss(logits, labels, teacher, labelled=torch.zeros(6, dtype=torch.bool))
    assert none.hard.item() == 0.0 and torch.isfinite(none.total)
    none.total.backward()  # still a graph to step on


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("labelled")
    job = load_job(
        write_tiny_job(directory),
        ["train.batch_size=32", "data.shuffle_buffer=0", "data.labelled_fraction=0.2"],
    )
    splits = load_splits(job.data)
    torch.manual_seed(0)
    return job, splits, build_model(job.teacher, 10)


def _spec(job, role: str = "student") -> StageSpec:
    return StageSpec(
        role=role,
        job=job,
        model=job.teacher if role == "teacher" else job.student,
        train=job.train.model_copy(update={"epochs": 2}),
        num_classes=10,
        distill=role == "student",
    )


class _Streamed:
    """A held shard seen as a streamed one: batches without a held labelled column."""

    def __init__(self, shard: LocalShard) -> None:
        self.iter_torch_batches = shard.iter_torch_batches


def _history(job, splits, teacher, labels: np.ndarray, role: str = "student", streamed=False):
    rows = classification_rows(job, splits["train"], teacher)
    shard = LocalShard({**rows.columns, LABEL: labels})
    val = classification_rows(job, splits["val"], teacher)
    train = _Streamed(shard) if streamed else shard
    ctx = LocalContext({"train": train, "val": val}, log=lambda _: None)
    return run_epochs(get_task(job), _spec(job, role), ctx)


def test_the_mask_held_once_per_stage_is_the_one_hashed_per_batch(tiny):
    """Rows held in memory get their labelled mask once, as a column; every batch's mask is
    the one its row ids hash to, and the loop trains exactly as it does hashing per batch."""
    job, splits, teacher = tiny
    shard = classification_rows(job, splits["train"], teacher)
    task, spec = get_task(job), _spec(job)
    for epoch in range(2):
        for batch in task.train_batches(shard, spec, epoch, 0, seed=epoch + 7):
            expected = labelled_mask(batch[ROW_ID].numpy(), 0.2, job.data.split.seed)
            assert torch.equal(batch[LABELLED], torch.from_numpy(expected))
    assert LABELLED not in classification_rows(job, splits["train"]).columns
    teacher_shard = classification_rows(job, splits["train"])
    next(task.train_batches(teacher_shard, _spec(job, "teacher"), 0, 0, seed=1))
    assert LABELLED not in teacher_shard.columns  # the teacher learns every label
    labels = splits["train"].labels
    held, hashed = _history(job, splits, teacher, labels), _history(
        job, splits, teacher, labels, streamed=True
    )
    assert held == [{**h, **{k: e[k] for k in TIMING}} for h, e in zip(hashed, held, strict=True)]


def test_a_distilled_student_never_learns_from_the_hidden_labels(tiny):
    """The shared loop, in process: relabel every unlabelled training row at random and the
    distilled student trains to the same weights' history; relabel a labelled row and it does
    not. The teacher stage learns every label."""
    job, splits, teacher = tiny
    labels = splits["train"].labels
    hidden = ~labelled_mask(np.arange(len(labels)), 0.2, job.data.split.seed)
    scrambled = labels.copy()
    scrambled[hidden] = (labels[hidden] + 3) % 10
    base = _history(job, splits, teacher, labels)
    same = _history(job, splits, teacher, scrambled)
    for a, b in zip(base, same, strict=True):
        assert a["train_loss"] == b["train_loss"] and a["val_acc"] == b["val_acc"]
    seen = labels.copy()
    seen[~hidden] = (labels[~hidden] + 3) % 10
    other = _history(job, splits, teacher, seen)
    assert other[0]["train_hard"] != base[0]["train_hard"]
    teacher_base = _history(job, splits, teacher, labels, role="teacher")
    teacher_scrambled = _history(job, splits, teacher, scrambled, role="teacher")
    assert teacher_base[0]["train_loss"] != teacher_scrambled[0]["train_loss"]


def test_the_baseline_reads_the_labelled_rows_as_often_as_an_epoch_has_rows():
    ids = np.arange(1000)
    batch = {ROW_ID: ids, LABEL: ids % 10, "input": np.zeros((1000, 2), np.float32)}
    copies = labelled_copies(0.1)
    out = labelled_rows_only(batch, 0.1, 0)
    kept = ids[labelled_mask(ids, 0.1, 0)]
    assert copies == 10 and len(out[ROW_ID]) == 10 * len(kept)
    assert set(out[ROW_ID].tolist()) == set(kept.tolist())
    assert np.array_equal(np.bincount(out[ROW_ID], minlength=1000)[kept], np.full(len(kept), 10))
    assert np.array_equal(out[LABEL], out[ROW_ID] % 10)  # rows stay whole
    assert labelled_copies(0.3) == 3 and labelled_copies(1.0) == 1


def test_settings_that_read_every_label_are_refused(tmp_path):
    path = write_tiny_job(tmp_path)
    for override, key in (
        ("distill.method=dkd", "distill.method"),
        ("distill.weighting=teacher_correct", "distill.weighting"),
        ("data.balance={}", "data.balance"),
    ):
        with pytest.raises(JobError, match=key):
            load_job(path, ["data.labelled_fraction=0.1", override])
    with pytest.raises(JobError, match="labelled_fraction"):
        load_job(path, ["data.labelled_fraction=0"])
    job = load_job(path, ["data.labelled_fraction=0.1", "distill.weighting=confidence"])
    with pytest.raises(JobError, match="task detection trains on every row's labels"):
        task_named("detection").check_job(job)
    get_task(job).check_job(job)  # classification: runs


def test_the_data_line_says_how_many_rows_are_labelled(tiny):
    job, splits, _ = tiny
    line = get_task(job).describe_data(job, splits)
    count = int(labelled_mask(np.arange(len(splits["train"])), 0.2, 0).sum())
    assert f"the student sees labels on {count} train rows (data.labelled_fraction 0.2)" in line

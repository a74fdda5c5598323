"""The task seam, Ray-free: every task runs the one shared epoch loop in-process (LocalContext),
and what a task does not run is refused in one line from its capabilities."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from local_rows import classification_rows, detection_rows
from tiny_run import write_tiny_job

from raydistill.config import JobError, load_job
from raydistill.data.sources import load_splits
from raydistill.models.specs import build_model
from raydistill.tasks import COMMANDS, TASKS, capabilities, get_task, task_named
from raydistill.train.context import LocalContext
from raydistill.train.loop import NonFiniteLossError, run_epochs
from raydistill.train.spec import StageSpec

ROOT = Path(__file__).resolve().parents[1]


def _spec(job, role="student", **changes) -> StageSpec:
    train = type(job.train).model_validate({**job.train.model_dump(), **changes})
    return StageSpec(
        role=role,
        job=job,
        model=job.student if role != "teacher" else job.teacher,
        train=train,
        num_classes=10,
        distill=role == "student",
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tasks")
    job = load_job(write_tiny_job(directory), ["train.batch_size=64", "data.shuffle_buffer=64"])
    splits = load_splits(job.data)
    torch.manual_seed(0)
    teacher = build_model(job.teacher, 10)
    return job, splits, teacher


def test_every_task_is_in_the_registry_and_lists_only_known_commands():
    assert set(TASKS) == {"classification", "causal_lm", "cross_modal", "detection"}
    for name, commands in capabilities().items():
        assert commands <= set(COMMANDS), name
        assert task_named(name).name == name
    assert capabilities()["classification"] == frozenset(COMMANDS)
    detection = task_named("detection")
    assert {"cache", "tune"} == set(COMMANDS) - detection.commands
    with pytest.raises(JobError, match=r"^`raydistill tune` does not run task: detection: "):
        detection.require("tune")
    detection.require("report")  # runs: no error


def test_classification_runs_the_shared_loop_in_process(digits):
    job, splits, teacher = digits
    rows = {
        "train": classification_rows(job, splits["train"], teacher),
        "val": classification_rows(job, splits["val"], teacher),
    }
    lines: list[str] = []
    ctx = LocalContext(rows, log=lines.append, keep_state=True)
    history = run_epochs(get_task(job), _spec(job, epochs=2), ctx)
    assert [h["epoch"] for h in history] == [0, 1]
    first = history[0]
    for key in ("train_loss", "train_soft", "train_hard", "train_feature", "val_acc", "val_ce"):
        assert math.isfinite(first[key]), key
    # every training row counted once per epoch, by class
    assert sum(first["class_counts"]) == len(splits["train"])
    assert first["class_counts"] == np.bincount(splits["train"].labels, minlength=10).tolist()
    # the schedule the job asks for, as the loop ran it (linear 6 -> 2 over 4 epochs)
    assert first["temperature"] == pytest.approx(6.0) and first["alpha"] == pytest.approx(0.9)
    # (a slow machine may print a within-epoch progress line before it)
    ends = [line for line in lines if " step " not in line]
    assert ends[0].startswith("[student] epoch 1/2 loss ") and "val_acc" in ends[0]
    assert ctx.reports == history and ctx.last_state["epoch"] == 1

    # resumed from that state with more epochs: only the new epoch trains
    resumed = LocalContext(rows, log=lines.append, resume=ctx.last_state)
    more = run_epochs(get_task(job), _spec(job, epochs=3), resumed)
    assert [h["epoch"] for h in more] == [0, 1, 2] and more[2]["started_at_epoch"] == 2
    assert "[student] resumed from the checkpoint of epoch 2" in lines


def test_a_run_that_stopped_early_stays_stopped_when_resumed(digits):
    job, splits, _ = digits
    rows = {
        "train": classification_rows(job, splits["train"]),
        "val": classification_rows(job, splits["val"]),
    }
    early = {"monitor": "val_acc", "patience": 1, "min_delta": 1.0}  # no epoch improves by 1.0
    spec = _spec(job, "baseline", epochs=4, early_stopping=early)
    ctx = LocalContext(rows, log=lambda _: None, keep_state=True)
    history = run_epochs(get_task(job), spec, ctx)
    assert len(history) == 2 and history[-1]["stopped_early"] == 1.0
    again = run_epochs(get_task(job), spec, LocalContext(rows, resume=ctx.last_state))
    assert len(again) == 2  # nothing more trained


def test_a_non_finite_loss_names_the_step_and_its_rows(digits):
    job, splits, _ = digits
    rows = classification_rows(job, splits["train"])
    rows.columns["input"] = rows.columns["input"].copy()
    rows.columns["input"][:] = np.inf
    ctx = LocalContext({"train": rows, "val": rows}, log=lambda _: None)
    spec = _spec(job, "baseline", epochs=1)
    with pytest.raises(NonFiniteLossError, match=r"epoch 0 step 0 \(worker 0, batch rows \["):
        run_epochs(get_task(job), spec, ctx)


def test_cross_modal_runs_the_shared_loop_in_process(tmp_path, monkeypatch):
    from raydistill.data.captions import write_captions

    monkeypatch.chdir(tmp_path)
    write_captions(tmp_path / "data" / "captions")
    job = load_job(ROOT / "jobs" / "cross-modal.yaml", ["train.batch_size=128"])
    task = get_task(job)
    splits = task.read_splits(job)
    torch.manual_seed(0)
    teacher = build_model(job.teacher, task.num_classes(splits))
    shapes = task.check_pair(job, None, splits, lambda _: None)
    spec = StageSpec(
        role="student",
        job=job,
        model=job.student,
        train=job.train.model_copy(update={"epochs": 1}),
        num_classes=task.num_classes(splits),
        distill=True,
        student_shapes=shapes[0],
        teacher_shapes=shapes[1],
    )
    # features from the pool: the teacher's tapped embedding rides in the rows
    from raydistill.columns import feature_column
    from raydistill.distill.taps import FeatureTap

    rows = {}
    for name in ("train", "val"):
        shard = classification_rows(job, splits[name], teacher)
        layer = job.distill.feature_layers[0].teacher
        tap = FeatureTap(teacher, [layer])
        with torch.no_grad():
            teacher(torch.from_numpy(shard.columns["teacher_input"]))
        shard.columns[feature_column(layer)] = tap.features[layer].numpy()
        rows[name] = shard
    core = task.build_core(spec)
    assert type(core).__name__ == "CrossModalDistiller"
    history = run_epochs(task, spec, LocalContext(rows, log=lambda _: None))
    assert len(history) == 1 and history[0]["train_feature"] > 0
    assert math.isfinite(history[0]["val_acc"])


def test_detection_runs_the_shared_loop_in_process(tmp_path):
    from raydistill.detection.scoring import load_images
    from raydistill.detection.synthetic import write_shapes_coco

    data = write_shapes_coco(tmp_path / "data", train=2, val=1, size=32, seed=0)
    sets = [
        f"data.coco.{split}.{key}={data[split][i]}"
        for split in ("train", "val")
        for i, key in enumerate(("images", "annotations"))
    ]
    job = load_job(ROOT / "jobs" / "shapes.yaml", [*sets, "data.coco.image_size=32"])
    task = get_task(job)
    job = task.prepare(job)
    splits = task.read_splits(job, lambda _: None)
    rows = {k: detection_rows(load_images(splits[k], 32)) for k in ("train", "val")}
    spec = StageSpec(
        role="baseline",
        job=job,
        model=job.student,
        train=job.train.model_copy(update={"epochs": 1, "batch_size": 2}),
        num_classes=task.num_classes(splits),
        distill=False,
    )
    lines: list[str] = []
    detail: list[str] = []
    ctx = LocalContext(
        rows, log=lines.append, extras=task.loop_extras(job, splits), detail=detail.extend
    )
    history = run_epochs(task, spec, ctx)
    assert len(history) == 1
    m = history[0]
    assert math.isfinite(m["train_loss"]) and m["train_detector"] > 0 and m["train_soft"] == 0
    assert 0 <= m["val_map50"] <= 1 and "class_counts" not in m
    # one line per epoch, with the loss terms, mAP, AP50, the rate and the ETA
    assert len(lines) == 1 and lines[0].startswith("[baseline] epoch 1/1 loss ")
    for part in ("(detector ", " classifier ", "val mAP ", " AP50 ", "images/s", "eta "):
        assert part in lines[0], lines[0]
    # pycocotools' summary (when the student detected anything) went to the log, headed by a
    # line the quiet console does not take for raydistill's own
    from raydistill.console import is_own_line

    assert len(detail) in (0, 13) and not any(is_own_line(line) for line in detail)
    if detail:
        assert detail[0].startswith("baseline epoch 1/1: COCO evaluation")
        assert "Average Precision" in detail[1]


def test_keep_best_and_early_stopping_watch_one_metric_that_does_not_move_with_schedules(digits):
    """With the weights frozen (lr ~ 0; only BatchNorm's running statistics move) and alpha
    rising 0.1 -> 0.9, the objective at each epoch's alpha moves every epoch while the model
    barely does; the monitor (val_acc by default, or val_ce) does not, so early stopping waits
    out its patience and keep_best keeps epoch 0 (val_loss, the old monitor, would not)."""
    job, splits, teacher = digits
    rows = {k: classification_rows(job, splits[k], teacher) for k in ("train", "val")}
    job = load_job(
        write_tiny_job(Path(job.run_dir).parent.parent),
        [
            "distill.alpha={kind: linear, start: 0.1, end: 0.9}",
            "train.lr=1e-12",
            "train.batch_size=64",
            "data.shuffle_buffer=64",
        ],
    )
    with pytest.raises(JobError, match=r"train\.early_stopping\.monitor: val_loss moves"):
        load_job(
            write_tiny_job(Path(job.run_dir).parent.parent),
            ["train.early_stopping={monitor: val_loss, patience: 1}"],
        )
    for monitor in ("auto", "val_ce"):
        early = {"patience": 3, "min_delta": 0.02}
        spec = _spec(job, epochs=4, early_stopping=early, monitor=monitor)
        history = run_epochs(get_task(job), spec, LocalContext(rows, log=lambda _: None))
        losses = [h["val_loss"] for h in history]
        assert max(losses) - min(losses) > 0.05  # the objective moves with alpha
        assert len(history) == 4 and not any(h["stopped_early"] for h in history)
        assert history[-1]["best_epoch"] == 0, monitor  # nothing improved on the monitor
    digits_job = load_job(ROOT / "jobs" / "digits.yaml", ["train.monitor=val_ce"])
    with pytest.raises(JobError, match=r"train\.monitor: task detection validates with val_map"):
        task_named("detection").check_job(digits_job)


def test_each_rank_resumes_its_own_random_streams():
    """Checkpoints keep every rank's CPU (and CUDA) random state; a rank resumes its own, and a
    rank the checkpoint did not have keeps the seeding it got."""
    from raydistill.train.state import restore_rng, rng_snapshot

    states = []
    for rank in range(2):
        torch.manual_seed(100 + rank)
        states.append(rng_snapshot())
    draws = []
    for rank in range(2):
        torch.manual_seed(100 + rank)
        draws.append(torch.rand(3))
    for rank in range(2):
        torch.manual_seed(7)
        assert restore_rng({"rng_states": states}, rank)
        assert torch.equal(torch.rand(3), draws[rank])
    assert not torch.equal(draws[0], draws[1])
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    assert not restore_rng({"rng_states": states}, 2)  # a third rank: its own seeding stands
    assert torch.equal(torch.rand(3), expected)


def test_a_stage_continued_with_more_epochs_follows_the_new_lr_schedule(digits):
    """40 -> 80 epochs, shrunk: a cosine over 2 epochs resumed as 4 epochs continues the 4-epoch
    cosine (lr at epoch 2 of 4 is half the base), not the old one's zero."""
    job, splits, _ = digits
    rows = {k: classification_rows(job, splits[k]) for k in ("train", "val")}
    first = LocalContext(rows, log=lambda _: None, keep_state=True)
    run_epochs(get_task(job), _spec(job, "baseline", epochs=2, lr_schedule="cosine"), first)
    more = run_epochs(
        get_task(job),
        _spec(job, "baseline", epochs=4, lr_schedule="cosine"),
        LocalContext(rows, log=lambda _: None, resume=first.last_state),
    )
    base = job.train.lr
    assert more[2]["lr"] == pytest.approx(base * (1 + math.cos(math.pi * 2 / 4)) / 2)
    assert more[3]["lr"] == pytest.approx(base * (1 + math.cos(math.pi * 3 / 4)) / 2)


def test_the_docs_table_of_commands_per_task_is_the_capabilities():
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = text.split("<!-- capabilities -->\n")[1].split("\n<!-- /capabilities -->")[0]
    rows = [line.strip("|").split("|") for line in table.splitlines()[2:]]
    tasks = [c.strip() for c in table.splitlines()[0].strip("|").split("|")[1:]]
    assert tasks == list(TASKS)
    for row in rows:
        command = row[0].strip().strip("`")
        for task, cell in zip(tasks, row[1:], strict=True):
            runs = command in capabilities()[task]
            assert (cell.strip() == "yes") == runs, (command, task)
            if not runs:
                assert task_named(task).refusals[command] in cell
    assert [r[0].strip().strip("`") for r in rows] == list(COMMANDS)


def test_every_task_tables_its_scores_with_the_headline_in_the_notes():
    from raydistill.detection.scoring import DetectionScore
    from raydistill.evaluate import ModelScore

    stats = {k: 0.1 for k in ("map", "map50", "map75", "map_small", "map_medium", "map_large")}
    rows = {
        "detection": [
            DetectionScore("teacher", {**stats, "map": 0.30}, 1000, 8.0),
            DetectionScore("student (distilled)", {**stats, "map": 0.25}, 100, 2.0),
            DetectionScore("baseline (student alone)", {**stats, "map": 0.20}, 100, 2.0),
        ],
        "classification": [
            ModelScore("teacher", 0.99, 1000, 0.8, 4000, 900.0),
            ModelScore("student (distilled)", 0.97, 100, 0.2, 400, 3000.0),
            ModelScore("baseline (student alone)", 0.92, 100, 0.2, 400, 3000.0),
        ],
    }
    epochs = {"teacher": 3, "student": 2, "baseline": 2}
    for name, scores in rows.items():
        for detailed in (False, True):
            table = task_named(name).table(scores, epochs, detailed=detailed)
            assert [r[0] for r in table.rows] == [s.name for s in scores]
            assert all(len(r) == len(table.header) for r in table.rows)
            assert table.rows[1][-1] == "2" and table.rows[0][-1] == "3"
            assert "distillation bought +5.0" in " ".join(table.notes), (name, table.notes)

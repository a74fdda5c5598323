"""Language-model rows: plain text packed into fixed-length sequences, and prompt/response rows
whose loss covers only the response.

One row is int64 [3, L]: token ids, attention mask (1 on real tokens) and target mask (1 where
the token is a training target, i.e. predicted from the tokens before it). A model's logits at
position t predict token t + 1, so the loss at t is counted when ``target[t + 1]`` is 1
(:func:`shifted`). Packed text concatenates documents, each closed by the end-of-sequence token,
and cuts the stream every L tokens (documents may straddle rows, as in GPT-style pretraining;
the last partial row is padded). Prompt/response rows are one pair each, cut at L with a count.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raydistill.config import JobError

IDS, ATTENTION, TARGET = 0, 1, 2


@dataclass(frozen=True)
class LMRows:
    """Rows int64 [N, 3, L] (ids, attention, target) and how many inputs were cut to fit."""

    rows: np.ndarray
    cut: int = 0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def tokens(self) -> int:
        """Target tokens (those a loss counts)."""
        return int(self.rows[:, TARGET].sum())


def pack_documents(docs: Sequence[Sequence[int]], seq_len: int, eos_id: int, pad_id: int) -> LMRows:
    """Documents' token ids, each followed by ``eos_id``, concatenated and cut into rows of
    ``seq_len`` tokens (the last row padded with ``pad_id``, attention and target 0). The first
    token of each row is no target (nothing in the row precedes it)."""
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2 (one context token, one target), got {seq_len}")
    stream = [t for doc in docs for t in (*doc, eos_id)]
    if not stream:
        return LMRows(np.zeros((0, 3, seq_len), dtype=np.int64))
    n = -(-len(stream) // seq_len)
    rows = np.zeros((n, 3, seq_len), dtype=np.int64)
    rows[:, IDS] = pad_id
    flat_ids = rows[:, IDS].reshape(-1)
    flat_ids[: len(stream)] = stream
    rows[:, IDS] = flat_ids.reshape(n, seq_len)
    real = np.arange(n * seq_len).reshape(n, seq_len) < len(stream)
    rows[:, ATTENTION] = real
    rows[:, TARGET] = real
    rows[:, TARGET, 0] = 0
    return LMRows(rows)


def prompt_response_rows(
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int, eos_id: int, pad_id: int
) -> LMRows:
    """One row per (prompt ids, response ids): prompt, response, ``eos_id``, padded to
    ``seq_len``; targets are the response tokens and the closing eos only. Longer pairs are cut
    at ``seq_len`` (counted in ``cut``); a pair whose response is cut away entirely keeps no
    target."""
    rows = np.zeros((len(pairs), 3, seq_len), dtype=np.int64)
    rows[:, IDS] = pad_id
    cut = 0
    for i, (prompt, response) in enumerate(pairs):
        ids = [*prompt, *response, eos_id]
        if len(ids) > seq_len:
            cut += 1
            ids = ids[:seq_len]
        rows[i, IDS, : len(ids)] = ids
        rows[i, ATTENTION, : len(ids)] = 1
        start = max(len(prompt), 1)  # the first token is never a target
        rows[i, TARGET, start : len(ids)] = 1
    return LMRows(rows, cut)


def row_prompt(row: np.ndarray, prompt_response: bool, tokens: int = 16) -> np.ndarray:
    """One row's prompt int64 [P] (possibly empty) from the row int64 [3, L]: a
    prompt/response row's attended tokens before its first target (all of them when it has
    none), a text row's first ``tokens`` tokens. The report's generations and the teacher
    pool's generate pass both answer these."""
    ids, attention, target = row
    if prompt_response:
        end = int(np.argmax(target == 1)) if target.any() else int(attention.sum())
    else:
        end = min(tokens, int(attention.sum()))
    return ids[:end].astype(np.int64)


def shifted(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For rows int64 [B, 3, L]: the model's input ids and attention [B, L], and per position
    t < L - 1 the next token [B, L - 1] and whether it counts [B, L - 1] (bool)."""
    ids, attention, target = rows[:, IDS], rows[:, ATTENTION], rows[:, TARGET]
    return ids, attention, ids[:, 1:], target[:, 1:].bool()


def read_corpus(path: Path, field: str = "text") -> list[str]:
    """Documents of a text corpus: every ``*.txt`` under a folder (sorted paths), or the
    ``field`` of each row of a ``.jsonl`` or ``.parquet`` file. Empty documents are dropped;
    a corpus with none is refused naming the path."""
    path = Path(path)
    if path.is_dir():
        texts = [
            f.read_bytes().decode("utf-8", errors="replace") for f in sorted(path.rglob("*.txt"))
        ]
    elif path.suffix == ".jsonl":
        texts = [str(row[field]) for row in _jsonl_rows(path, (field,))]
    elif path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        if field not in table.column_names:
            raise JobError(f"{path}: no column '{field}' (has {', '.join(table.column_names)})")
        texts = [str(t) for t in table.column(field).to_pylist() if t is not None]
    elif not path.exists():
        raise JobError(f"{path}: no such file or directory")
    else:
        raise JobError(f"{path}: a corpus is a folder of .txt files, a .jsonl or a .parquet")
    texts = [t for t in texts if t.strip()]
    if not texts:
        raise JobError(f"{path}: the corpus holds no text (no non-empty document)")
    return texts


def read_prompt_response(
    path: Path, prompt_field: str = "prompt", response_field: str = "response"
) -> list[tuple[str, str]]:
    """(prompt, response) pairs of a ``.jsonl`` file; a row lacking a field is refused naming
    the file, the row (1-based line) and the field."""
    rows = _jsonl_rows(Path(path), (prompt_field, response_field))
    pairs = [(str(r[prompt_field]), str(r[response_field])) for r in rows]
    if not pairs:
        raise JobError(f"{path}: no prompt/response rows")
    return pairs


def _jsonl_rows(path: Path, fields: tuple[str, ...]) -> list[dict]:
    if not path.is_file():
        raise JobError(f"{path}: no such file")
    rows = []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JobError(f"{path}:{line_no}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise JobError(f"{path}:{line_no}: a row is a JSON object, got {type(row).__name__}")
        for name in fields:
            if name not in row or row[name] is None:
                raise JobError(f"{path}:{line_no}: the row has no '{name}' field")
        rows.append(row)
    return rows

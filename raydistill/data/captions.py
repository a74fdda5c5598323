"""Paired image/text rows for cross-modal jobs: scikit-learn's digits with generated captions.

``raydistill make-captions DIR`` writes ``DIR/captions.parquet`` (``input`` float32 [1, 8, 8]
images, ``text`` captions, integer ``label``) and ``DIR/text-student/``: a small BERT config
with a WordPiece vocabulary of the captions' words, so ``hf:DIR/text-student`` with
``pretrained: false`` is a text student that needs nothing downloaded.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raydistill.data.digits import load_digits_arrays

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEMPLATES = [
    "a handwritten {n}",
    "the digit {n} written by hand",
    "someone wrote a {n} here",
    "a scanned {n} with thick strokes",
    "a small {n} in grey ink",
]
# Captions that do not name the digit: the text alone cannot tell these rows apart.
VAGUE = ["a handwritten digit", "some ink on a small grid", "a scanned number"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def captions(labels: np.ndarray, seed: int = 0, vague: float = 0.1) -> list[str]:
    """One caption per label; a ``vague`` share of them do not name the digit."""
    rng = random.Random(seed)
    return [
        rng.choice(VAGUE) if rng.random() < vague else rng.choice(TEMPLATES).format(n=NUMBERS[y])
        for y in labels.tolist()
    ]


def vocabulary() -> list[str]:
    words = {w for t in TEMPLATES + VAGUE for w in t.replace("{n}", "").split()}
    return SPECIAL + sorted(words | set(NUMBERS))


def write_captions(directory: Path, seed: int = 0) -> Path:
    """Write the paired rows and the text student's directory; returns ``directory``."""
    from transformers import BertConfig, BertTokenizer

    from raydistill.data.sources import to_arrow

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    digits = load_digits_arrays()
    table = to_arrow(digits).drop(["row_id"])
    table = table.append_column("text", pa.array(captions(digits.labels, seed), pa.string()))
    pq.write_table(table, directory / "captions.parquet")
    student = directory / "text-student"
    student.mkdir(exist_ok=True)
    (student / "vocab.txt").write_text("\n".join(vocabulary()) + "\n")
    BertTokenizer(str(student / "vocab.txt")).save_pretrained(student)
    BertConfig(
        vocab_size=len(vocabulary()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=32,
    ).save_pretrained(student)
    return directory

"""Tiny text data and tiny BERT/DistilBERT directories, built locally (nothing downloaded).

The texts are short synthetic "news" lines: each class has its own topic words, mixed with
words shared by every class, so a model must learn which words carry the class.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {
    "sport": ["match", "goal", "team", "season", "coach", "league", "score", "player"],
    "tech": ["software", "chip", "phone", "data", "network", "robot", "code", "server"],
    "money": ["market", "bank", "shares", "profit", "price", "trade", "budget", "rates"],
}
SHARED = ["the", "a", "today", "report", "new", "said", "week", "city", "people", "year"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` (text, class name) rows, classes in turn."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for i in range(n):
        label = names[i % len(names)]
        words = rng.sample(TOPICS[label], 3) + rng.sample(SHARED, 4)
        # a word of another topic now and then, so the task is not a lookup
        if rng.random() < 0.3:
            words.append(rng.choice(TOPICS[names[(i + 1) % len(names)]]))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, n: int = 90, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(texts(n, seed))
    return path


def write_vocab(directory: Path, extra: list[str] | None = None) -> Path:
    """A WordPiece tokenizer directory (vocab.txt) covering every word of :func:`texts`."""
    from transformers import BertTokenizer

    directory.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ws in TOPICS.values() for w in ws} | set(SHARED) | set(extra or []))
    (directory / "vocab.txt").write_text("\n".join(SPECIAL + words) + "\n")
    BertTokenizer(str(directory / "vocab.txt")).save_pretrained(directory)
    return directory


def write_bert(directory: Path, hidden: int = 32, layers: int = 2, heads: int = 2) -> Path:
    """A randomly initialised tiny BERT classifier saved with its tokenizer."""
    from transformers import BertConfig, BertForSequenceClassification

    write_vocab(directory)
    vocab = len((directory / "vocab.txt").read_text().split())
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
        num_labels=3,
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    return directory


def write_distilbert(
    directory: Path, dim: int = 16, layers: int = 1, heads: int = 2, extra: list[str] | None = None
) -> Path:
    """A tiny DistilBERT classifier's config and tokenizer (no weights: built from the config).
    ``extra`` words make its vocabulary differ from :func:`write_bert`'s."""
    from transformers import DistilBertConfig

    write_vocab(directory, extra)
    vocab = len((directory / "vocab.txt").read_text().split())
    DistilBertConfig(
        vocab_size=vocab,
        dim=dim,
        n_layers=layers,
        n_heads=heads,
        hidden_dim=2 * dim,
        max_position_embeddings=64,
        num_labels=3,
    ).save_pretrained(directory)
    return directory

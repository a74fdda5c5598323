"""A tokenizer trained here, on the job's own corpus, and a small model directory around it.

``python -m raydistill.data.lm_tokenizer CORPUS OUT`` trains a byte-level BPE tokenizer (the
``tokenizers`` library; nothing is downloaded) on a corpus :func:`~raydistill.data.lm_text.
read_corpus` reads, and writes OUT with the tokenizer files and a Llama ``config.json`` sized to
it, so that ``hf:OUT`` with ``pretrained: false`` and ``config`` overrides builds a randomly
initialised causal LM of any width and depth on that vocabulary.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from raydistill.data.lm_text import read_corpus

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(texts: Sequence[str], vocab_size: int, out: Path) -> Any:
    """A byte-level BPE tokenizer of at most ``vocab_size`` tokens trained on ``texts``, saved
    in ``out`` as a ``transformers`` fast tokenizer (with bos, eos, pad and unk tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    return tokenizer


def llama_config(vocab_size: int, tokenizer: Any, **fields: Any) -> dict[str, Any]:
    """A small Llama ``config.json`` (hidden 64, 2 layers) for ``vocab_size`` tokens; ``fields``
    override any entry."""
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 256,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "max_position_embeddings": 512,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return {**config, **fields}


def write_model_dir(texts: Sequence[str], out: Path, vocab_size: int = 1024, **fields: Any) -> Path:
    """``out`` with a tokenizer trained on ``texts`` and a Llama config sized to it."""
    out = Path(out)
    tokenizer = train_tokenizer(texts, vocab_size, out)
    config = llama_config(len(tokenizer), tokenizer, **fields)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus", type=Path, help="a folder of .txt files, a .jsonl or .parquet")
    parser.add_argument("out", type=Path, help="the model directory to write")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--field", default="text", help="jsonl/parquet: the text column")
    args = parser.parse_args(argv)
    texts = read_corpus(args.corpus, args.field)
    out = write_model_dir(texts, args.out, args.vocab_size)
    print(f"lm_tokenizer: {out} ({len(texts)} documents, vocab {args.vocab_size} at most)")


if __name__ == "__main__":
    main()
